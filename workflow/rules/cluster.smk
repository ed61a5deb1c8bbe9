"""The `kmeans` baseline: fit centroids on the train split, label the evaluation split."""


rule kmeans_fit:
    input:
        classes=f"{OUT}/classes.json",
        features=feature_shards(DATASET["train_split"]),
    output:
        directory(f"{OUT}/kmeans/centroids.zarr"),
    params:
        cfg=lambda w: as_json({"kmeans": config["kmeans"], "seed": config["seed"]}),
    log:
        f"{OUT}/logs/kmeans_fit.log",
    benchmark:
        f"{OUT}/benchmarks/kmeans_fit.tsv",
    threads: THREADS
    resources:
        mem_mb=kmeans_fit_mem,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg kmeans-fit --params {params.cfg:q} --classes {input.classes} --features {input.features}"
        " --out {output} --threads {threads} --log {log}"


rule kmeans_predict:
    input:
        centroids=f"{OUT}/kmeans/centroids.zarr",
        features=feature_shards(DATASET["eval_split"]),
    output:
        directory(f"{OUT}/kmeans/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"seed": config["seed"]}),
    log:
        f"{OUT}/logs/kmeans_predict.log",
    benchmark:
        f"{OUT}/benchmarks/kmeans_predict.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg kmeans-predict --params {params.cfg:q} --centroids {input.centroids}"
        " --features {input.features} --out {output} --threads {threads} --log {log}"
