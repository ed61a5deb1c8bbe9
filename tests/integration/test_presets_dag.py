"""Every preset builds its DAG (`snakemake -n --configfile <preset>`), through Snakemake's API in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.paper_shapes import PRESETS, preset_config
from useg.backbones.sources import is_weight_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding (empty) dataset roots and backbone weights files where the presets expect
    them: a dry run reads no image and no weights (a missing weights file fails the DAG)."""
    root = tmp_path_factory.mktemp("presets")
    for preset in PRESETS:
        cfg = preset_config(preset)
        (root / cfg["dataset"]["root"]).mkdir(parents=True, exist_ok=True)
        weights = cfg.get("backbone", {}).get("weights", "random")
        if is_weight_file(weights):
            (root / weights).parent.mkdir(parents=True, exist_ok=True)
            (root / weights).touch()
    return root


def dry_run(workdir: Path, configfile: Path) -> list[str]:
    """`snakemake -n --configfile <configfile>` in `workdir`: the rules of the planned jobs, one per job."""
    return [rule for rule, _ in planned_jobs(workdir, configfile)]


def planned_jobs(workdir: Path, configfile: Path) -> list[tuple[str, list[str]]]:
    """`snakemake -n --configfile <configfile>` in `workdir`: (rule, outputs) of every planned job."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings import enums
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={enums.Quietness.ALL})) as api:
        workflow = api.workflow(
            snakefile=REPO / "Snakefile",
            workdir=workdir,
            config_settings=ConfigSettings(configfiles=[configfile]),
            resource_settings=ResourceSettings(cores=1),
        )
        dag = workflow.dag(DAGSettings())
        dag.execute_workflow(executor="dryrun")
        return [(job.rule.name, [str(f) for f in job.output]) for job in dag.workflow_api._workflow.dag.jobs]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_preset_builds_its_dag(workdir: Path, preset: Path):
    rules = dry_run(workdir, preset)
    methods = preset_config(preset)["methods"]
    assert "manifest" in rules and "evaluate" in rules
    assert any(rule.startswith(methods[0]) for rule in rules), f"no {methods[0]} job planned: {sorted(set(rules))}"


EXTERNAL = [p for p in PRESETS if preset_config(p)["backbone_eval"]["external"]]


@pytest.mark.parametrize("preset", EXTERNAL, ids=lambda p: p.stem)
def test_a_backbone_evaluation_preset_evaluates_the_checkpoint_without_pretraining(workdir: Path, preset: Path):
    rules = dry_run(workdir, preset)
    assert "linear_probe" in rules and "kmeans_fit" in rules and "pretrain" not in rules


def test_maskdistill_voc_trains_mask_rcnn_on_voc07_12_trainval_and_deeplab_on_train_aug(workdir: Path):
    jobs = planned_jobs(workdir, REPO / "configs/presets/maskdistill/voc.yaml")
    outputs = {rule: [o for r, outs in jobs if r == rule for o in outs] for rule, _ in jobs}
    mask_splits = {Path(o).parent.name for o in outputs["maskdistill_masks"]}
    assert mask_splits == {"trainval0712", "val"}  # the train_aug images need no object masks
    assert {Path(o).parent.name for o in outputs["maskdistill_candidates"]} == {"train_aug", "val"}
    assert {Path(o).parent.name for o in outputs["maskdistill_linear"]} == {"deeplab", "deeplab-crf"}  # Table 2a
    assert {Path(o).parent.name for o in outputs["maskdistill_linear_predict"]} == {"maskdistill-linear", "maskdistill-linear-crf"}
