"""A training run and its run directory.

    experiment.py   Experiment: the components built from the config, one state_dict for all of them
    loop.py         train(): the training loop, evaluation, the checkpoint dict it builds
    checkpoint.py   checkpoint.pt: save, load (older formats converted), fresh / resume / ended
    records.py      config.yaml, metrics.jsonl, summary.json, model.pt: atomic writes and readers
    reporting.py    Reporter: records, W&B and the console from one call per event
    progress.py     the console: a bar on a terminal, periodic lines in logs
    wandb_sink.py   Weights & Biases, online or offline
    lock.py         one process per run directory (flock)
    preemption.py   SIGTERM / SIGUSR1: checkpoint and exit 75
    milestones.py   when to evaluate and checkpoint
    micro_batch.py  batch_size.max_micro=auto: the largest micro-batch that fits
    memory.py       what a step takes: tensor storages, the process's resident memory, CUDA's allocator

See docs/records.md for the run directory, resume, exit codes and preemption.
"""
