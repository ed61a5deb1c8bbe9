"""Feature extraction: one job per manifest shard, each writing a FeatureStore.

`features/<backbone.name>/` holds the configured backbone; `<backbone.name>-random` and
`<backbone.name>-pretrain` the same architecture with other weights (backbone evaluation).
"""


rule features:
    input:
        manifest=f"{OUT}/manifest.csv",
        weights=backbone_weights,
    output:
        directory(f"{OUT}/features/{{features}}/{{split}}/shard-{{shard}}.zarr"),
    params:
        cfg=lambda w: as_json(
            {"backbone": features_backbone(w), "features": config["features"], "seed": config["seed"]}
        ),
        shards=config["features"]["shards"],
        weights=weights_option,
    log:
        f"{OUT}/logs/features/{{features}}/{{split}}-{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/features/{{features}}-{{split}}-{{shard}}.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=per_shard_runtime(10),
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg features --params {params.cfg:q} --manifest {input.manifest} --split {wildcards.split}"
        " --shard {wildcards.shard} --shards {params.shards} {params.weights} --out {output}"
        " --threads {threads} --log {log}"
