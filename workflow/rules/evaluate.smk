"""Evaluation: every method's predictions scored against the ground truth of the eval split."""


rule evaluate:
    input:
        predictions=f"{OUT}/{{method}}/predictions.zarr",
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
    output:
        f"{OUT}/{{method}}/metrics.json",
    params:
        cfg=lambda w: as_json(evaluate_params(w.method)),
    log:
        f"{OUT}/logs/evaluate-{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{method}}.tsv",
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=by_input_size(30, 5),
    conda:
        CPU_ENV
    shell:
        "python -m useg evaluate --params {params.cfg:q} --predictions {input.predictions}"
        " --manifest {input.manifest} --classes {input.classes} --out {output}"
        " --threads {threads} --log {log}"


rule imagenet_s_export:
    input:
        predictions=f"{OUT}/{{method}}/predictions.zarr",
        manifest=f"{OUT}/manifest.csv",
        metrics=f"{OUT}/{{method}}/metrics.json",
    output:
        directory(f"{OUT}/{{method}}/imagenet-s-pngs"),
    params:
        split_dir=export_split_dir_option(),
    log:
        f"{OUT}/logs/imagenet-s-export-{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/imagenet_s_export/{{method}}.tsv",
    threads: 1
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg export-imagenet-s --predictions {input.predictions} --manifest {input.manifest}"
        " --matching {input.metrics} {params.split_dir} --out {output} --log {log}"
