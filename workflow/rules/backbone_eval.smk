"""Backbone evaluation (CrOC Sec. 4.2) of the pretrained backbone and of the same architecture with
random weights: per-dataset k-means + Hungarian (unsupervised) and a linear probe (supervised)."""


rule backbone_kmeans_fit:
    input:
        classes=f"{OUT}/classes.json",
        features=lambda w: feature_shards(DATASET["train_split"], features_name(w.variant)),
    output:
        directory(f"{OUT}/backbone-eval/{{variant}}/kmeans/centroids.zarr"),
    params:
        cfg=lambda w: as_json({"kmeans": config["kmeans"], "seed": config["seed"]}),
    log:
        f"{OUT}/logs/backbone-eval/{{variant}}/kmeans_fit.log",
    benchmark:
        f"{OUT}/benchmarks/backbone_kmeans_fit/{{variant}}.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "python -m useg kmeans-fit --params {params.cfg:q} --classes {input.classes} --features {input.features}"
        " --out {output} --threads {threads} --log {log}"


rule backbone_kmeans_predict:
    input:
        centroids=f"{OUT}/backbone-eval/{{variant}}/kmeans/centroids.zarr",
        features=lambda w: feature_shards(DATASET["eval_split"], features_name(w.variant)),
    output:
        directory(f"{OUT}/backbone-eval/{{variant}}/kmeans/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"seed": config["seed"]}),
    log:
        f"{OUT}/logs/backbone-eval/{{variant}}/kmeans_predict.log",
    benchmark:
        f"{OUT}/benchmarks/backbone_kmeans_predict/{{variant}}.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "python -m useg kmeans-predict --params {params.cfg:q} --centroids {input.centroids}"
        " --features {input.features} --out {output} --threads {threads} --log {log}"


rule linear_probe:
    input:
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
        train=lambda w: feature_shards(DATASET["train_split"], features_name(w.variant)),
        eval=lambda w: feature_shards(DATASET["eval_split"], features_name(w.variant)),
    output:
        directory(f"{OUT}/backbone-eval/{{variant}}/linear-probe/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"probe": config["backbone_eval"]["probe"], "seed": config["seed"]}),
    log:
        f"{OUT}/logs/backbone-eval/{{variant}}/linear_probe.log",
    benchmark:
        f"{OUT}/benchmarks/linear_probe/{{variant}}.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "python -m useg linear-probe --params {params.cfg:q} --manifest {input.manifest} --classes {input.classes}"
        " --train-features {input.train} --eval-features {input.eval} --out {output} --threads {threads} --log {log}"
