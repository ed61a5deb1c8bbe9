"""useg: unsupervised semantic segmentation as one cached Snakemake DAG (see README.md)."""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from useg.config import resolve_config  # noqa: E402  (needs only PyYAML)
from useg.config.validation import validation_summary  # noqa: E402

# Config layering (docs/configuration.md): each --configfile is composed from the files its
# `_base_` names over the schema's defaults, then --config on top. config.yaml, the embedded
# demo, is read only when no --configfile is given, so its toy values never reach another config.
_resolved = resolve_config(workflow.overwrite_configfiles, workflow.config_settings.config)
config.clear()
config.update(_resolved.config)


# On a schema error, the offending key and its reason only, not the schema and config under them
# (raised outside the `except`, so that Snakemake does not print the original error too).
_invalid = None
try:
    validate(config, "workflow/schemas/config.schema.yaml")
except WorkflowError as error:
    _invalid = validation_summary(error)
if _invalid:
    raise WorkflowError(_invalid)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/backbone_eval.smk"
include: "workflow/rules/transfgu.smk"
include: "workflow/rules/alignseg.smk"
include: "workflow/rules/pass.smk"
include: "workflow/rules/maskdistill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        metrics_targets(),
        report_targets(),
        extra_targets(),


if REPORT["enabled"]:

    report: os.path.abspath(REPORT_FRONT)


onstart:
    check_slurm_profile()


onsuccess:
    print_summary()
    print_report_command()
