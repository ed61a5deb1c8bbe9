"""AlignSeg: decoder + prototypes trained on crops through the frozen backbone -> per-image predictions."""


rule alignseg_train:
    input:
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
        weights=backbone_weights,
    output:
        model=f"{OUT}/alignseg/decoder.pt",
        log=f"{OUT}/alignseg/train-log.json",
    params:
        cfg=lambda w: as_json(alignseg_train_params()),
        resume=f"{OUT}/alignseg/resume/last.pth",
        weights=weights_option,
        useg=useg_launcher(config["alignseg"]["gpus"]),
    log:
        f"{OUT}/logs/alignseg/train.log",
    benchmark:
        f"{OUT}/benchmarks/alignseg_train.tsv",
    threads: 1  # small-op training runs fastest on one CPU thread (README "Everyday use"); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: gpus_request(config["alignseg"]["gpus"]),
        nodes=1,  # torchrun's processes share the one node of the job
    conda:
        GPU_ENV
    shell:
        "{params.useg} alignseg-train --params {params.cfg:q} --manifest {input.manifest} --classes {input.classes}"
        " {params.weights} --out {output.model} --out-log {output.log} --resume {params.resume} --threads {threads} --log {log}"


rule alignseg_predict:
    input:
        model=f"{OUT}/alignseg/decoder.pt",
        features=feature_shards(DATASET["eval_split"]),
    output:
        directory(f"{OUT}/alignseg/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"device": config["alignseg"]["device"], "seed": config["seed"]}),
    log:
        f"{OUT}/logs/alignseg/predict.log",
    benchmark:
        f"{OUT}/benchmarks/alignseg_predict.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=by_input_size(30, 10),
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg alignseg-predict --params {params.cfg:q} --model {input.model} --features {input.features}"
        " --out {output} --threads {threads} --log {log}"
