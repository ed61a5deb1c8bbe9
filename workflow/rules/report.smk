"""The report: per evaluated column a per-class IoU chart and an overlay grid, loss curves of what
was trained, the comparison table of all methods and the report's front page. `snakemake --report`
(run by the onsuccess hook) collects every output marked with report()."""

# Seconds of work each: on a cluster they run on the submitting node instead of one sbatch each.
localrules:
    report_method,
    report_curve,
    report_table,



rule report_method:
    input:
        metrics=f"{OUT}/{{method}}/metrics.json",
        predictions=f"{OUT}/{{method}}/predictions.zarr",
        manifest=f"{OUT}/manifest.csv",
    output:
        iou=report(
            f"{OUT}/{{method}}/report/iou.png",
            caption="../report/iou.rst",
            category="Methods",
            subcategory="{method}",
            labels={"method": "{method}", "figure": "per-class IoU"},
        ),
        overlays=report(
            f"{OUT}/{{method}}/report/overlays.png",
            caption="../report/overlays.rst",
            category="Methods",
            subcategory="{method}",
            labels={"method": "{method}", "figure": "overlays"},
        ),
    params:
        cfg=lambda w: as_json({"images": REPORT["images"]}),
    log:
        f"{OUT}/logs/report/{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/report_method/{{method}}.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CPU_ENV
    shell:
        "python -m useg report-method --params {params.cfg:q} --metrics {input.metrics} --predictions {input.predictions}"
        " --manifest {input.manifest} --out-iou {output.iou} --out-overlays {output.overlays} --log {log}"


rule report_curve:
    input:
        lambda w: REPORT_CURVES[w.curve],
    output:
        report(
            f"{REPORT_DIR}/curves/{{curve}}.png",
            caption="../report/curve.rst",
            category="Training",
            labels={"training": "{curve}"},
        ),
    params:
        cfg=lambda w: as_json({"name": w.curve}),
    log:
        f"{OUT}/logs/report/curve-{{curve}}.log",
    benchmark:
        f"{OUT}/benchmarks/report_curve/{{curve}}.tsv",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        CPU_ENV
    shell:
        "python -m useg report-curve --params {params.cfg:q} --train-log {input} --out {output} --log {log}"


rule report_table:
    input:
        metrics=metrics_targets(),
        figures=report_figures(),
        paper=paper_files(),
    output:
        csv=report(
            f"{REPORT_DIR}/comparison.csv",
            caption="../report/comparison.rst",
            category="Comparison",
            labels={"table": "all methods"},
        ),
        md=f"{REPORT_DIR}/comparison.md",
        front=REPORT_FRONT,
    params:
        cfg=as_json({"dataset": DS, **({"paper": config["paper"]} if "paper" in config else {})}),
        root=lambda w, output: os.path.dirname(os.path.dirname(output.front)),
    log:
        f"{OUT}/logs/report/table.log",
    benchmark:
        f"{OUT}/benchmarks/report_table.tsv",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        CPU_ENV
    shell:
        "python -m useg report-table --params {params.cfg:q} --metrics {input.metrics} --figures {input.figures}"
        " --root {params.root} --out-md {output.md} --out-csv {output.csv} --out-rst {output.front} --log {log}"
