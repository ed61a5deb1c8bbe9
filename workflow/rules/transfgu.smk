"""TransFGU: crop bank -> concepts -> Grad-CAM label bank -> Segmenter round-0 (`trained`) and either the
release's bootstrapping schedule in one job (`schedule: release`) or rounds 1 .. R (`schedule: rounds`) -> predictions."""

TRAIN = DATASET["train_split"]
EVAL = DATASET["eval_split"]
TRANSFGU_TRAIN_KEYS = (
    "decoder", "epochs", "batch_size", "optimiser", "lr", "weight_decay", "grad_clamp", "skip_nonpositive_loss",
    "losses", "diversity_form", "alpha", "w_div", "w_unc", "augment", "augment_rule", "device", "amp",
)  # fmt: skip
TRANSFGU_BOOTSTRAP_KEYS = (*TRANSFGU_TRAIN_KEYS, "bootstrap_start", "bootstrap_every", "alpha_step", "teacher_view")
TRANSFGU_BANK_KEYS = (
    "gradcam", "gradcam_mass", "gradcam_loss_batch", "zero_other_group", "foreground_only", "t_bg", "bank_batch_size",
    "device",
)  # fmt: skip


rule transfgu_crops:
    input:
        manifest=f"{OUT}/manifest.csv",
        features=f"{OUT}/features/{BACKBONE}/{{split}}/shard-{{shard}}.zarr",
        weights=backbone_weights,
    output:
        directory(f"{OUT}/transfgu/crops/{{split}}/shard-{{shard}}.zarr"),
    params:
        cfg=lambda w: as_json(
            {"backbone": config["backbone"], **transfgu_slice("betas", "crop_size", "crop_batch_size", "device")}
        ),
        shards=config["features"]["shards"],
        weights=weights_option,
    log:
        f"{OUT}/logs/transfgu/crops-{{split}}-{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_crops/{{split}}-{{shard}}.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg transfgu-crops --params {params.cfg:q} --manifest {input.manifest} --split {wildcards.split}"
        " --shard {wildcards.shard} --shards {params.shards} --features {input.features} {params.weights}"
        " --out {output} --threads {threads} --log {log}"


rule transfgu_concepts:
    input:
        classes=f"{OUT}/classes.json",
        crops=transfgu_shards("crops", TRAIN),
    output:
        directory(f"{OUT}/transfgu/concepts.zarr"),
    params:
        cfg=lambda w: as_json(transfgu_slice("k", "k_fg", "foreground_prior", "foreground_only", "niter", "nredo")),
    log:
        f"{OUT}/logs/transfgu/concepts.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_concepts.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "python -m useg transfgu-concepts --params {params.cfg:q} --classes {input.classes} --crops {input.crops}"
        " --out {output} --threads {threads} --log {log}"


rule transfgu_bank:
    input:
        manifest=f"{OUT}/manifest.csv",
        concepts=f"{OUT}/transfgu/concepts.zarr",
        weights=backbone_weights,
    output:
        directory(f"{OUT}/transfgu/bank/{{split}}/shard-{{shard}}.zarr"),
    params:
        cfg=lambda w: as_json(
            {
                "backbone": config["backbone"],
                **transfgu_slice(*TRANSFGU_BANK_KEYS),
            }
        ),
        shards=config["features"]["shards"],
        weights=weights_option,
    log:
        f"{OUT}/logs/transfgu/bank-{{split}}-{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_bank/{{split}}-{{shard}}.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg transfgu-bank --params {params.cfg:q} --manifest {input.manifest} --split {wildcards.split}"
        " --shard {wildcards.shard} --shards {params.shards} --concepts {input.concepts} {params.weights}"
        " --out {output} --threads {threads} --log {log}"


rule transfgu_train:
    input:
        manifest=f"{OUT}/manifest.csv",
        bank=transfgu_shards("bank", TRAIN),
        teacher=transfgu_teacher,
        weights=backbone_weights,
    output:
        model=f"{OUT}/transfgu/round-{{round}}/model.pt",
        log=f"{OUT}/transfgu/round-{{round}}/train-log.json",
    params:
        cfg=lambda w: as_json({"backbone": config["backbone"], **transfgu_slice(*TRANSFGU_TRAIN_KEYS)}),
        teacher=lambda w, input: f"--teacher {input.teacher}" if input.teacher else "",
        weights=weights_option,
        useg=useg_launcher(config["transfgu"]["gpus"]),
    log:
        f"{OUT}/logs/transfgu/train-round-{{round}}.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_train/{{round}}.tsv",
    threads: 1  # small-op training runs fastest on one CPU thread (README "Everyday use"); --set-threads to change
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: gpus_request(config["transfgu"]["gpus"]),
        nodes=1,  # torchrun's processes share the one node of the job
    conda:
        GPU_ENV
    shell:
        "{params.useg} transfgu-train --params {params.cfg:q} --manifest {input.manifest} --bank {input.bank}"
        " --round {wildcards.round} {params.teacher} {params.weights} --out {output.model} --out-log {output.log}"
        " --threads {threads} --log {log}"


rule transfgu_bootstrap:
    input:
        manifest=f"{OUT}/manifest.csv",
        bank=transfgu_shards("bank", TRAIN),
        weights=backbone_weights,
    output:
        model=f"{OUT}/transfgu/bootstrap/model.pt",
        log=f"{OUT}/transfgu/bootstrap/train-log.json",
    params:
        cfg=lambda w: as_json({"backbone": config["backbone"], **transfgu_slice(*TRANSFGU_BOOTSTRAP_KEYS)}),
        resume=f"{OUT}/transfgu/resume/bootstrap.pth",
        weights=weights_option,
        useg=useg_launcher(config["transfgu"]["gpus"]),
    log:
        f"{OUT}/logs/transfgu/bootstrap.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_bootstrap.tsv",
    threads: 1  # as transfgu_train; more threads become loader workers
    resources:
        mem_mb=4000,
        runtime=1440,
        gpu=lambda w: gpus_request(config["transfgu"]["gpus"]),
        nodes=1,  # as transfgu_train
    conda:
        GPU_ENV
    shell:
        "{params.useg} transfgu-bootstrap --params {params.cfg:q} --manifest {input.manifest} --bank {input.bank}"
        " {params.weights} --out {output.model} --out-log {output.log} --resume {params.resume}"
        " --threads {threads} --log {log}"


rule transfgu_initial:
    input:
        bank=transfgu_shards("bank", EVAL),
    output:
        directory(f"{OUT}/transfgu-initial/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"seed": config["seed"]}),
    log:
        f"{OUT}/logs/transfgu/initial.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_initial.tsv",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CPU_ENV
    shell:
        "python -m useg transfgu-initial --params {params.cfg:q} --bank {input.bank} --out {output} --log {log}"


rule transfgu_predict:
    input:
        model=transfgu_model,
        features=feature_shards(EVAL),
    output:
        directory(f"{OUT}/{{method}}/predictions.zarr"),
    wildcard_constraints:
        method="transfgu|transfgu-trained",
    params:
        cfg=lambda w: as_json(transfgu_slice("device")),
    log:
        f"{OUT}/logs/transfgu/predict-{{method}}.log",
    benchmark:
        f"{OUT}/benchmarks/transfgu_predict/{{method}}.tsv",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg transfgu-predict --params {params.cfg:q} --model {input.model} --features {input.features}"
        " --method {wildcards.method} --out {output} --threads {threads} --log {log}"
