"""MaskDistill: object masks -> clusters -> Mask R-CNN -> candidate bank -> confident labels -> DeepLab-v3
(-> CRF-refined train labels -> DeepLab-v3 again: the CRF round, maskdistill.crf.round)
(-> a linear classifier on a frozen DeepLab-v3 with ground truth: Table 2a, maskdistill.linear)."""

MD = f"{OUT}/maskdistill"
# the train-split LabelBank each DeepLab-v3 is trained on: the confident bank, or the CRF round's labels
DEEPLAB_BANKS = {"deeplab": "labels", "deeplab-crf": "crf-labels"}
# the linear-classifier columns (Table 2a): the DeepLab-v3 whose features the classifier reads, and CRF or not
LINEAR_COLUMNS = {
    "maskdistill-linear": ("deeplab", False),
    "maskdistill-linear-crf": ("deeplab-crf" if config["maskdistill"]["crf"]["round"] else "deeplab", True),
}


rule maskdistill_masks:
    input:
        manifest=f"{OUT}/manifest.csv",
        weights=backbone_weights,
    output:
        directory(f"{MD}/masks/{{split}}/shard-{{shard}}.zarr"),
    params:
        cfg=lambda w: as_json(
            {"backbone": config["backbone"], **maskdistill_slice("topk", "cls_heads", "cls_mass", "connected", "cluster_input", "background", "batch_size", "mask_short_side", "device")}
        ),
        shards=config["features"]["shards"],
        weights=weights_option,
    log:
        f"{OUT}/logs/maskdistill/masks-{{split}}-{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_masks/{{split}}-{{shard}}.tsv",
    priority: CHAIN_PRIORITY
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=per_shard_runtime(10),
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg maskdistill-masks --params {params.cfg:q} --manifest {input.manifest} --split {wildcards.split}"
        " --shard {wildcards.shard} --shards {params.shards} {params.weights} --out {output}"
        " --threads {threads} --log {log}"


rule maskdistill_clusters:
    input:
        classes=f"{OUT}/classes.json",
        fit=maskdistill_shards("masks", maskdistill_detector_split()),
        label=maskdistill_shards("masks", DATASET["eval_split"]),
    output:
        directory(f"{MD}/clusters.zarr"),
    params:
        cfg=lambda w: as_json(maskdistill_slice("k", "normalize", "whiten", "niter", "nredo")),
    log:
        f"{OUT}/logs/maskdistill/clusters.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_clusters.tsv",
    priority: CHAIN_PRIORITY
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-clusters --params {params.cfg:q} --classes {input.classes} --fit {input.fit}"
        " --label {input.label} --out {output} --threads {threads} --log {log}"


rule maskdistill_initial:
    input:
        masks=maskdistill_shards("masks", DATASET["eval_split"]),
        clusters=f"{MD}/clusters.zarr",
    output:
        directory(f"{OUT}/maskdistill-initial/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"seed": config["seed"]}),
    log:
        f"{OUT}/logs/maskdistill/initial.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_initial.tsv",
    threads: 1
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-initial --params {params.cfg:q} --masks {input.masks} --clusters {input.clusters}"
        " --out {output} --log {log}"


rule maskdistill_maskrcnn:
    input:
        manifest=f"{OUT}/manifest.csv",
        masks=maskdistill_shards("masks", maskdistill_detector_split()),
        clusters=f"{MD}/clusters.zarr",
        weights=maskdistill_model_weights("maskrcnn"),
    output:
        f"{MD}/maskrcnn/model.pt",
    params:
        cfg=lambda w: as_json(maskdistill_model_params("maskrcnn")),
        weights=weights_option,
    log:
        f"{OUT}/logs/maskdistill/maskrcnn.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_maskrcnn.tsv",
    priority: CHAIN_PRIORITY
    threads: 1  # small-op training runs fastest on one CPU thread (README "Everyday use"); --set-threads to change
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
        runtime=lambda w, attempt: 720 * attempt,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg maskdistill-maskrcnn --params {params.cfg:q} --manifest {input.manifest} --masks {input.masks}"
        " --clusters {input.clusters} {params.weights} --out {output} --threads {threads} --log {log}"


rule maskdistill_candidates:
    input:
        manifest=f"{OUT}/manifest.csv",
        model=f"{MD}/maskrcnn/model.pt",
    output:
        directory(f"{MD}/candidates/{{split}}/shard-{{shard}}.zarr"),
    params:
        cfg=lambda w: as_json(
            {"backbone": {"input_size": config["backbone"]["input_size"]}, **maskdistill_slice("batch_size", "device")}
        ),
        shards=config["features"]["shards"],
    log:
        f"{OUT}/logs/maskdistill/candidates-{{split}}-{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_candidates/{{split}}-{{shard}}.tsv",
    priority: CHAIN_PRIORITY
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=per_shard_runtime(20),
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg maskdistill-candidates --params {params.cfg:q} --manifest {input.manifest}"
        " --split {wildcards.split} --shard {wildcards.shard} --shards {params.shards} --model {input.model}"
        " --out {output} --threads {threads} --log {log}"


rule maskdistill_labels:
    input:
        candidates=lambda w: maskdistill_shards("candidates", w.split),
    output:
        directory(f"{MD}/labels/{{split}}.zarr"),
    params:
        cfg=lambda w: as_json(maskdistill_slice("tau")),
    log:
        f"{OUT}/logs/maskdistill/labels-{{split}}.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_labels/{{split}}.tsv",
    priority: CHAIN_PRIORITY
    threads: 1
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-labels --params {params.cfg:q} --candidates {input.candidates} --out {output} --log {log}"


rule maskdistill_bank_predict:
    input:
        bank=f"{MD}/labels/{DATASET['eval_split']}.zarr",
    output:
        directory(f"{OUT}/maskdistill-maskrcnn/predictions.zarr"),
    params:
        cfg=lambda w: as_json({"seed": config["seed"]}),
    log:
        f"{OUT}/logs/maskdistill/bank-predict.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_bank_predict.tsv",
    threads: 1
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-bank-predict --params {params.cfg:q} --bank {input.bank} --out {output} --log {log}"


rule maskdistill_deeplab:
    input:
        manifest=f"{OUT}/manifest.csv",
        bank=lambda w: f"{MD}/{DEEPLAB_BANKS[w.model]}/{DATASET['train_split']}.zarr",
        weights=maskdistill_model_weights("deeplab"),
    output:
        f"{MD}/{{model}}/model.pt",
    wildcard_constraints:
        model="|".join(DEEPLAB_BANKS),
    params:
        cfg=lambda w: as_json(maskdistill_model_params("deeplab")),
        weights=weights_option,
        resume=f"{MD}/{{model}}/resume/last.pth",
        useg=useg_launcher(config["maskdistill"]["deeplab"]["gpus"]),
    log:
        f"{OUT}/logs/maskdistill/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_deeplab/{{model}}.tsv",
    priority: CHAIN_PRIORITY
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 8000 * attempt,
        runtime=lambda w, attempt: 720 * attempt,
        gpu=lambda w: gpus_request(config["maskdistill"]["deeplab"]["gpus"]),
        nodes=1,  # torchrun's processes share the one node of the job
    conda:
        GPU_ENV
    shell:
        "{params.useg} maskdistill-deeplab --params {params.cfg:q} --manifest {input.manifest} --bank {input.bank}"
        " {params.weights} --out {output} --resume {params.resume} --threads {threads} --log {log}"


rule maskdistill_predict:
    input:
        manifest=f"{OUT}/manifest.csv",
        model=f"{MD}/deeplab/model.pt",
    output:
        directory(f"{MD}/predictions.zarr"),
    params:
        cfg=lambda w: as_json(maskdistill_slice("device")),
        split=DATASET["eval_split"],
    log:
        f"{OUT}/logs/maskdistill/predict.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_predict.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 60 * attempt,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg maskdistill-predict --params {params.cfg:q} --manifest {input.manifest} --split {params.split}"
        " --model {input.model} --out {output} --threads {threads} --log {log}"


rule maskdistill_crf_labels:
    input:
        manifest=f"{OUT}/manifest.csv",
        model=f"{MD}/deeplab/model.pt",
    output:
        directory(f"{MD}/crf-labels/{DATASET['train_split']}.zarr"),
    params:
        cfg=lambda w: as_json(maskdistill_slice("device", "crf")),
        split=DATASET["train_split"],
    log:
        f"{OUT}/logs/maskdistill/crf-labels.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_crf_labels.tsv",
    priority: CHAIN_PRIORITY
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 120 * attempt,
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-predict --crf --bank --params {params.cfg:q} --manifest {input.manifest}"
        " --split {params.split} --model {input.model} --out {output} --threads {threads} --log {log}"


rule maskdistill_crf:
    input:
        manifest=f"{OUT}/manifest.csv",
        model=f"{MD}/deeplab-crf/model.pt" if config["maskdistill"]["crf"]["round"] else f"{MD}/deeplab/model.pt",
    output:
        directory(f"{OUT}/maskdistill-crf/predictions.zarr"),
    params:
        cfg=lambda w: as_json(maskdistill_slice("device", "crf")),
        split=DATASET["eval_split"],
    log:
        f"{OUT}/logs/maskdistill/crf.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_crf.tsv",
    priority: CHAIN_PRIORITY
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 60 * attempt,
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-predict --crf --params {params.cfg:q} --manifest {input.manifest}"
        " --split {params.split} --model {input.model} --out {output} --threads {threads} --log {log}"


rule maskdistill_linear:
    input:
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
        model=f"{MD}/{{model}}/model.pt",
    output:
        f"{MD}/linear/{{model}}/model.pt",
    wildcard_constraints:
        model="|".join(DEEPLAB_BANKS),
    params:
        cfg=lambda w: as_json(maskdistill_slice("linear", "device")),
        split=DATASET["train_split"],
    log:
        f"{OUT}/logs/maskdistill/linear-{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_linear/{{model}}.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 360 * attempt,
        gpu=gpu_request,
    conda:
        GPU_ENV
    shell:
        "python -m useg maskdistill-linear --params {params.cfg:q} --manifest {input.manifest} --classes {input.classes}"
        " --split {params.split} --model {input.model} --out {output} --threads {threads} --log {log}"


rule maskdistill_linear_predict:
    input:
        manifest=f"{OUT}/manifest.csv",
        model=lambda w: f"{MD}/linear/{LINEAR_COLUMNS[w.column][0]}/model.pt",
    output:
        directory(f"{OUT}/{{column}}/predictions.zarr"),
    wildcard_constraints:
        column="|".join(LINEAR_COLUMNS),
    params:
        cfg=lambda w: as_json(maskdistill_slice("device", *(["crf"] if LINEAR_COLUMNS[w.column][1] else []))),
        crf=lambda w: "--crf" if LINEAR_COLUMNS[w.column][1] else "",
        split=DATASET["eval_split"],
    log:
        f"{OUT}/logs/maskdistill/{{column}}-predict.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_linear_predict/{{column}}.tsv",
    threads: THREADS
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 60 * attempt,
    conda:
        GPU_ENV
    shell:
        "python -m useg maskdistill-predict {params.crf} --params {params.cfg:q} --manifest {input.manifest}"
        " --split {params.split} --model {input.model} --out {output} --threads {threads} --log {log}"


rule maskdistill_ap:
    input:
        manifest=f"{OUT}/manifest.csv",
        classes=f"{OUT}/classes.json",
        masks=maskdistill_shards("masks", DATASET["eval_split"]),
        clusters=f"{MD}/clusters.zarr",
        candidates=maskdistill_shards("candidates", DATASET["eval_split"]),
        initial=f"{OUT}/maskdistill-initial/metrics.json",
        maskrcnn=f"{OUT}/maskdistill-maskrcnn/metrics.json",
    output:
        f"{MD}/ap.json",
    params:
        cfg=lambda w: as_json({"split": DATASET["eval_split"], "seed": config["seed"]}),
    log:
        f"{OUT}/logs/maskdistill/ap.log",
    benchmark:
        f"{OUT}/benchmarks/maskdistill_ap.tsv",
    threads: 1
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=by_input_size(30, 10),
    conda:
        CPU_ENV
    shell:
        "python -m useg maskdistill-ap --params {params.cfg:q} --manifest {input.manifest} --classes {input.classes}"
        " --masks {input.masks} --clusters {input.clusters} --candidates {input.candidates}"
        " --metrics-initial {input.initial} --metrics-maskrcnn {input.maskrcnn} --out {output} --log {log}"
