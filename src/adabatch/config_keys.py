"""Config keys that do not change what a run trains (a key also covers everything under it): a run may
be resumed with other values of them, and runs that differ only in them (and in the seed) are the
seeds of one method in tables and figures."""

KEYS_NOT_CHANGING_TRAINING = (
    "resume", "hydra", "logger", "data_dir", "dataset.download", "train.progress_every_s",
    # Another statistics engine changes only the rounding of the statistics, another memory layout only
    # that of the convolutions; a run keeps the micro-batch size that max_micro=auto chose, whatever memory
    # it is given later.
    "batch_size.engine", "train.memory_format", "batch_size.max_micro_memory_gb",
)

# Keys added after runs were recorded, at the value that gives what a config without them gave.
ADDED_KEY_DEFAULTS = {"train.parallel": "ddp"}
LOCAL_ENGINE = "local"  # batch_size.engine=local (adabatch.parallel.local_engine.LOCAL)


def training_identity(flat: dict, ignored) -> dict:
    """The flattened config's keys that say what a run trains, without those `ignored(key)` names. The
    per-example engines differ in rounding only, but engine=local estimates other statistics, so the
    source of the statistics stays (as does batch_size.parts, which only engine=local reads)."""
    identity = {key: value for key, value in flat.items()
                if not ignored(key) and ADDED_KEY_DEFAULTS.get(key, identity_marker) != value}
    if flat.get("batch_size.engine") == LOCAL_ENGINE:
        identity["batch_size.engine"] = LOCAL_ENGINE
    else:
        identity.pop("batch_size.parts", None)
    return identity


identity_marker = object()
