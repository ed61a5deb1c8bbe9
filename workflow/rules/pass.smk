"""PASS (LUSS paper): pixel-attention SwAV pretraining -> image k-means -> head fine-tuning -> tau on a held-out split -> CAM predictions."""


rule pass_pretrain:
    input:
        manifest=f"{OUT}/manifest.csv",
        features=pass_prior_features(),
    output:
        checkpoint=f"{OUT}/pass/pretrain.pth",
        log=f"{OUT}/pass/pretrain-log.json",
    params:
        cfg=lambda w: as_json(pass_training_params("pretrain", "net", "input_size", "resize", "device", "amp", "saliency_prior")),
        resume=f"{OUT}/pass/resume/pretrain.pth",
        useg=useg_launcher(config["pass"]["pretrain"]["gpus"]),
    log:
        f"{OUT}/logs/pass_pretrain.log",
    benchmark:
        f"{OUT}/benchmarks/pass_pretrain.tsv",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=lambda w: gpus_request(config["pass"]["pretrain"]["gpus"]),
        nodes=1,  # torchrun's processes share the one node of the job
    conda:
        GPU_ENV
    shell:
        "{params.useg} pass-pretrain --params {params.cfg:q} --manifest {input.manifest} --features {input.features}"
        " --out {output.checkpoint} --out-log {output.log} --resume {params.resume} --threads {threads} --log {log}"


rule pass_cluster:
    input:
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
        checkpoint=f"{OUT}/pass/pretrain.pth",
    output:
        f"{OUT}/pass/pseudo-labels.json",
    params:
        cfg=lambda w: as_json(pass_slice("k", "cluster", "input_size", "resize", split=DATASET["train_split"])),
    log:
        f"{OUT}/logs/pass_cluster.log",
    benchmark:
        f"{OUT}/benchmarks/pass_cluster.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg pass-cluster --params {params.cfg:q} --manifest {input.manifest} --classes {input.classes}"
        " --checkpoint {input.checkpoint} --out {output} --threads {threads} --log {log}"


rule pass_finetune:
    input:
        manifest=f"{OUT}/manifest.csv",
        checkpoint=f"{OUT}/pass/pretrain.pth",
        pseudo=f"{OUT}/pass/pseudo-labels.json",
    output:
        f"{OUT}/pass/model.pth",
    params:
        cfg=lambda w: as_json(pass_training_params("finetune", "input_size", "resize", "device", "amp")),
        resume=f"{OUT}/pass/resume/finetune.pth",
        useg=useg_launcher(config["pass"]["finetune"]["gpus"]),
    log:
        f"{OUT}/logs/pass_finetune.log",
    benchmark:
        f"{OUT}/benchmarks/pass_finetune.tsv",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=lambda w: gpus_request(config["pass"]["finetune"]["gpus"]),
        nodes=1,  # torchrun's processes share the one node of the job
    conda:
        GPU_ENV
    shell:
        "{params.useg} pass-finetune --params {params.cfg:q} --manifest {input.manifest} --checkpoint {input.checkpoint}"
        " --pseudo-labels {input.pseudo} --out {output} --resume {params.resume} --threads {threads} --log {log}"


rule pass_threshold:
    input:
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
        model=f"{OUT}/pass/model.pth",
    output:
        f"{OUT}/pass/tau.json",
    params:
        cfg=lambda w: as_json(pass_slice("taus", "tau_split", "batch_size", "input_size", "resize", eval_split=DATASET["eval_split"])),
    log:
        f"{OUT}/logs/pass_threshold.log",
    benchmark:
        f"{OUT}/benchmarks/pass_threshold.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "python -m useg pass-threshold --params {params.cfg:q} --manifest {input.manifest} --classes {input.classes}"
        " --model {input.model} --out {output} --threads {threads} --log {log}"


rule pass_predict:
    input:
        manifest=f"{OUT}/manifest.csv",
        model=f"{OUT}/pass/model.pth",
        tau=f"{OUT}/pass/tau.json",
    output:
        directory(f"{OUT}/pass/predictions.zarr"),
    params:
        cfg=lambda w: as_json(pass_slice("batch_size", "input_size", "resize", split=DATASET["eval_split"])),
    log:
        f"{OUT}/logs/pass_predict.log",
    benchmark:
        f"{OUT}/benchmarks/pass_predict.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=60,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg pass-predict --params {params.cfg:q} --manifest {input.manifest} --model {input.model}"
        " --tau {input.tau} --out {output} --threads {threads} --log {log}"
