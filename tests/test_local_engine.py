"""batch_size.engine=local: the tested steps of the loop and of AdaptiveBatch take the statistics the
estimator gives from the batch's parts, recomputed here by brute force (one autograd call per part,
float64 sums); what cannot give two parts is refused before training."""
from __future__ import annotations

import copy

import pytest
import torch
from helpers import compose

from adabatch import AdaptiveBatch
from adabatch.analysis.runs import method_key
from adabatch.distributed import World
from adabatch.losses import summed_cross_entropy
from adabatch.models import build_model
from adabatch.parallel.local_engine import local_accumulation, part_count
from adabatch.run.experiment import build_experiment
from adabatch.run.loop import train
from adabatch.run.records import read_metrics
from adabatch.validation import ConfigError, check_config


def brute_force(model: torch.nn.Module, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """V̂, V̂_ip, V̂_orth and ‖ḡ‖² from each part's mean gradient, by the definitions (paper-notes §5)."""
    params = [p for p in model.parameters() if p.requires_grad]
    sizes, grads = [], []
    for x, y in parts:
        g = torch.autograd.grad(summed_cross_entropy(model(x), y) / len(y), params)
        sizes.append(len(y))
        grads.append(torch.cat([t.flatten() for t in g]).double())
    b, dof = sum(sizes), len(parts) - 1
    mean = sum(s * g for s, g in zip(sizes, grads)) / b
    ip = [torch.dot(g, mean) for g in grads]
    residuals = [g - i / mean.dot(mean) * mean for g, i in zip(grads, ip)]
    return {
        "grad_sq_norm": mean.dot(mean).item(),
        "norm_var": (sum(s * (g - mean).pow(2).sum() for s, g in zip(sizes, grads)) / dof).item(),
        "ip_var": (sum(s * (i - mean.dot(mean)) ** 2 for s, i in zip(sizes, ip)) / dof).item(),
        "orth_var": (sum(s * r.dot(r) for s, r in zip(sizes, residuals)) / dof).item(),
    }


def test_part_layout_gives_at_least_the_parts_asked_for():
    assert local_accumulation(100, 1, 1024, 4) == 4 and part_count(100, 1, 4) == 4
    assert local_accumulation(100, 2, 1024, 2) == 1 and part_count(100, 2, 1) == 2
    assert local_accumulation(100, 2, 10, 2) == 5 and part_count(100, 2, 5) == 10  # max_micro gives more
    assert local_accumulation(100, 2, 1024, 5) == 3 and part_count(100, 2, 3) == 6
    assert part_count(3, 1, 8) == 3  # a part holds at least one example


@pytest.mark.slow
def test_the_loop_with_engine_local_takes_the_statistics_of_the_parts(tmp_path):
    overrides = ("experiment=quickstart", "device=cpu", "batch_size.engine=local", "batch_size.parts=4",
                 "batch_size.initial=10", "train.samples=40", "train.eval_every=40", "train.eval_train_examples=64",
                 "train.save_model=false")
    cfg = compose(*overrides)
    train(cfg, tmp_path)
    records = list(read_metrics(tmp_path, "train"))
    first = records[0]
    assert first["tested"] and first["statistics_source"] == "parts" and first["parts"] == 4
    assert all(r["parts"] == 4 for r in records if r.get("tested"))

    exp = build_experiment(compose(*overrides))  # the same seed: the run's initial model and first batch
    batch = exp.data.draw(first["batch_size"])
    parts = [exp.data.examples(part) for part in batch.split_into(4)]  # sizes 3, 3, 2, 2
    expected = brute_force(exp.model, parts)
    for field in ("grad_sq_norm", "norm_var"):
        assert first[field] == pytest.approx(expected[field], rel=1e-5), field


@pytest.mark.parametrize("test", ["norm", "inner_product"])
def test_adaptive_batch_with_engine_local_takes_the_statistics_of_the_parts(test):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 6, 6), 5, hidden=[9]).double()
    policy = {"name": test, "initial": 12, "max": 4096, **({"eta": 0.5} if test == "norm" else {"theta": 0.9})}
    adaptive = AdaptiveBatch(model, policy, "local", max_micro=5, parts=2)  # max_micro splits 12 into 3 parts
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        b = adaptive.batch_size
        x, y = torch.randn(b, 1, 6, 6, generator=generator, dtype=torch.float64), torch.randint(0, 5, (b,), generator=generator)
        parts = [(x[p.indices], y[p.indices]) for p in adaptive.engine.micro_batches(_whole(b), 5)]
        expected = brute_force(copy.deepcopy(model), parts)
        optimizer.zero_grad()
        loss, record, _ = adaptive.step(x, y)
        assert record["statistics_source"] == "parts" and record["parts"] == len(parts) >= 3
        fields = ("grad_sq_norm", "norm_var") + (("ip_var", "orth_var") if test != "norm" else ())
        for field in fields:
            assert record[field] == pytest.approx(expected[field], rel=1e-9, abs=1e-12), field
        optimizer.step()


def _whole(b: int):
    from adabatch.data import Batch

    return Batch(torch.arange(b), None)


def test_per_example_records_name_their_source():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 6, 6), 5, hidden=[9])
    adaptive = AdaptiveBatch(model, {"name": "norm", "initial": 6, "max": 64, "eta": 0.5}, "functorch")
    _, record, _ = adaptive.step(torch.randn(6, 1, 6, 6), torch.randint(0, 5, (6,)))
    assert record["statistics_source"] == "per_example" and "parts" not in record


@pytest.mark.parametrize("overrides, world, message", [
    (("batch_size.engine=local", "batch_size.initial=1"), World(), "batch_size.initial=1 must be an integer >= 2"),
    (("batch_size.engine=local", "batch_size.parts=1"), World(), "batch_size.parts=1 must be an integer >= 2"),
    (("train.parallel=fsdp",), World(), "train.parallel=fsdp shards the model over the ranks"),
    (("train.parallel=fsdp", "batch_size.engine=ghost"), World(0, 2, 0), "batch_size.engine=ghost forms per-example"),
    (("train.parallel=fsdp", "batch_size.engine=local", "batch_size=inner_product"), World(0, 2, 0),
     "batch_size=inner_product from local gradients under train.parallel=fsdp"),
    (("train.parallel=fsdp", "batch_size.engine=local", "batch_size.max_micro=auto"), World(0, 2, 0),
     "batch_size.max_micro=auto is not offered with train.parallel=fsdp"),
    (("train.parallel=fsdp", "batch_size.engine=local", "train.memory_format=channels_last"), World(0, 2, 0),
     "train.memory_format=channels_last is not offered with train.parallel=fsdp"),
    (("train.parallel=zero",), World(), "train.parallel='zero' is unknown; choose one of ddp, fsdp"),
])
def test_configurations_without_two_parts_or_a_sharded_engine_are_refused_in_one_line(overrides, world, message):
    cfg = compose("experiment=quickstart", "device=cpu", *overrides)
    with pytest.raises(ConfigError) as refused:
        check_config(cfg, world)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_engine_local_is_another_method_than_the_per_example_engines():
    config = lambda **batch_size: {"seed": 0, "train": {"parallel": "ddp"},  # noqa: E731
                                   "batch_size": {"name": "norm", "parts": 2, **batch_size}}
    assert method_key(config(engine="ghost")) == method_key(config(engine="opacus", parts=8))
    assert method_key(config(engine="ghost")) != method_key(config(engine="local"))
    assert method_key(config(engine="local")) != method_key(config(engine="local", parts=4))
    older = {"seed": 0, "train": {}, "batch_size": {"name": "norm", "engine": "ghost"}}  # recorded before these keys
    assert method_key(older) == method_key(config(engine="ghost"))
