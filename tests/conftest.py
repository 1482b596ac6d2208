"""Under pytest-xdist (`make test` runs two workers), each worker and every process it starts use one
thread: two workers on two cores, each with a thread per core, slowed each other down up to twelvefold
(a ResNet-50 smoke test took 345 s instead of 28: threads waiting on each other, descheduled by the other
process's)."""
import os

if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: launches training subprocesses or whole runs (tens of seconds or more); "
        "`-m 'not slow'` for a quick pass"
    )
