"""Config keys that do not change what a run trains (a key also covers everything under it): a run may
be resumed with other values of them, and runs that differ only in them (and in the seed) are the
seeds of one method in tables and figures."""

KEYS_NOT_CHANGING_TRAINING = (
    "resume", "hydra", "logger", "data_dir", "dataset.download", "train.progress_every_s",
    # Another statistics engine changes only the rounding of the statistics; a run keeps the micro-batch
    # size that max_micro=auto chose, whatever memory it is given later.
    "batch_size.engine", "batch_size.max_micro_memory_gb",
)
