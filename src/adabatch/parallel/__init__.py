"""Data and model parallelism beyond DDP: the test from local (part) gradients, captured by hooks
during backward (part_capture, local_step), and FSDP2 building blocks (fsdp: sharding, DCP checkpoints)."""
