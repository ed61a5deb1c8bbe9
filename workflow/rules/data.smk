"""Dataset stages: render the synthetic scenes, validate images into manifest.csv."""


rule synthesize:
    output:
        directory(f"{OUT}/data"),
    params:
        cfg=lambda w: as_json({"synthetic": DATASET["synthetic"], "seed": config["seed"]}),
    log:
        f"{OUT}/logs/synthesize.log",
    benchmark:
        f"{OUT}/benchmarks/synthesize.tsv",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        CPU_ENV
    shell:
        "python -m useg synthesize --params {params.cfg:q} --out {output} --log {log}"


rule manifest:
    input:
        dataset_root(),
    output:
        csv=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
    params:
        cfg=lambda w: as_json(manifest_config()),
        min_size=config["backbone"]["patch_size"] or 16,
        fingerprint=dataset_fingerprint_param,
    log:
        f"{OUT}/logs/manifest.log",
    benchmark:
        f"{OUT}/benchmarks/manifest.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "python -m useg manifest --params {params.cfg:q} --root {input:q} --min-size {params.min_size}"
        " --out-csv {output.csv} --out-classes {output.classes} --log {log}"
