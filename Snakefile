"""useg: unsupervised semantic segmentation as one cached Snakemake DAG (see README.md)."""

from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: str(Path(workflow.basedir) / "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


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


onsuccess:
    print_summary()
    build_report()
