"""The report: per evaluated column a per-class IoU chart, the same images under every column side by side,
loss curves of what was trained, the comparison tables, the per-class IoU across methods and the front page.
Snakemake's own `snakemake --report results/<dataset>/report.html` (or `--report ... --report-after-run`
on the run itself) collects every output marked with report() into one HTML file (docs/report.md)."""

# Seconds of work each: on a cluster they run on the submitting node instead of one sbatch each.
localrules:
    report_method,
    report_curve,
    report_table,



rule report_method:
    input:
        metrics=f"{OUT}/{{method}}/metrics.json",
    output:
        iou=report(
            f"{OUT}/{{method}}/report/iou.png",
            caption="../report/iou.rst",
            category="Methods",
            subcategory="{method}",
            labels={"method": "{method}", "figure": "per-class IoU"},
        ),
    log:
        f"{OUT}/logs/report/{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/report_method/{{method}}.tsv",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        CPU_ENV
    shell:
        "python -m useg report-method --metrics {input.metrics} --out-iou {output.iou} --log {log}"


rule report_overlays:
    input:
        predictions=[f"{OUT}/{column}/predictions.zarr" for column in evaluated_columns()],
        metrics=metrics_targets(),
        manifest=f"{OUT}/manifest.csv",
    output:
        report(
            REPORT_OVERLAYS,
            caption="../report/overlays.rst",
            category="Overlays",
            labels={"figure": "every column, the same images"},
        ),
    params:
        cfg=as_json({"images": REPORT["images"]}),
        names=" ".join(shlex.quote(column) for column in evaluated_columns()),
    log:
        f"{OUT}/logs/report/overlays.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CPU_ENV
    shell:
        "python -m useg report-overlays --params {params.cfg:q} --predictions {input.predictions} --names {params.names}"
        " --manifest {input.manifest} --out {output} --log {log}"


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
        paper=paper_files(),
        benchmarks=[path for paths in REPORT_BENCHMARKS.values() for path in paths],
    output:
        csv=report(
            f"{REPORT_DIR}/comparison.csv",
            caption="../report/comparison.rst",
            category="Comparison",
            labels={"table": "all methods (CSV)"},
        ),
        html=report(
            f"{REPORT_DIR}/per-class-iou.html",
            caption="../report/per-class-iou.rst",
            category="Comparison",
            labels={"table": "per-class IoU across methods"},
        ),
        md=f"{REPORT_DIR}/comparison.md",
        front=REPORT_FRONT,
    params:
        cfg=as_json(report_table_params()),
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
        "python -m useg report-table --params {params.cfg:q} --metrics {input.metrics} --root {params.root}"
        " --out-md {output.md} --out-csv {output.csv} --out-html {output.html} --out-rst {output.front} --log {log}"
