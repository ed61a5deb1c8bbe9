"""Feature extraction: one job per manifest shard, each writing a FeatureStore."""


rule features:
    input:
        manifest=f"{OUT}/manifest.csv",
        weights=backbone_weights,
    output:
        directory(f"{OUT}/features/{BACKBONE}/{{split}}/shard-{{shard}}.zarr"),
    params:
        cfg=lambda w: as_json(
            {"backbone": config["backbone"], "features": config["features"], "seed": config["seed"]}
        ),
        shards=config["features"]["shards"],
        weights=lambda w, input: f"--weights {input.weights}" if input.weights else "",
    log:
        f"{OUT}/logs/features/{BACKBONE}/{{split}}-{{shard}}.log",
    threads: 2
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=per_shard_runtime(10),
        gpu=1,
    conda:
        GPU_ENV
    shell:
        "python -m useg features --params {params.cfg:q} --manifest {input.manifest} --split {wildcards.split}"
        " --shard {wildcards.shard} --shards {params.shards} {params.weights} --out {output}"
        " --threads {threads} --log {log}"
