"""CrOC backbone pretraining: the checkpoint every `backbone.weights: pretrain` feature job loads."""


rule pretrain:
    input:
        manifest=f"{OUT}/manifest.csv",
    output:
        checkpoint=CROC_CHECKPOINT,
        log=f"{OUT}/croc/train-log.json",
    params:
        cfg=lambda w: as_json(pretrain_params()),
        resume=f"{OUT}/croc/resume/last.pth",
        useg=useg_launcher(config["croc"]["gpus"]),
    log:
        f"{OUT}/logs/pretrain.log",
    benchmark:
        f"{OUT}/benchmarks/pretrain.tsv",
    threads: max(THREADS, 2)  # one loader worker beside the model; every later job waits for it
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=lambda w: gpus_request(config["croc"]["gpus"]),
        nodes=1,  # torchrun's processes share the one node of the job
    conda:
        GPU_ENV
    shell:
        "{params.useg} pretrain --params {params.cfg:q} --manifest {input.manifest} --out {output.checkpoint}"
        " --out-log {output.log} --resume {params.resume} --threads {threads} --log {log}"
