"""`make run` (experiment=quickstart): the paper's method on digits reaches 95% and grows the batch."""
from helpers import compose

from adabatch.run.records import read_metrics
from adabatch.run.loop import train


def test_quickstart_reaches_95_percent_with_a_growing_batch(tmp_path):
    summary = train(compose("experiment=quickstart", "device=cpu", "train.progress_every_s=0"), tmp_path)
    assert summary["final_test_acc"] >= 0.95
    records = list(read_metrics(tmp_path, "train"))
    sizes = [r["batch_size"] for r in records]
    assert sizes[0] == 4 and sizes == sorted(sizes) and sizes[-1] > 16 * sizes[0]
    assert len(set(sizes)) >= 5  # it grows in several steps, not in one jump
    tested = [r for r in records if r.get("tested")]
    assert tested and all({"grad_sq_norm", "norm_var", "proposal", "test_lhs", "test_rhs"} <= r.keys() for r in tested)
    assert summary["wall_time_s"] < 120
