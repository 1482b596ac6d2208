"""The public per-step API, `adabatch.AdaptiveBatch`: the example runs; on the same batches its
statistics are the CLI's; it is exact under micro-batching for every engine; untested steps and
divergence."""
import math
import runpy
import sys

import pytest
import torch
from helpers import ROOT, compose, per_example_gradients, tiny_problem

from adabatch import AdaptiveBatch, Diverged
from adabatch.run.records import read_metrics
from adabatch.stats import ENGINES, build_engine
from adabatch.run.experiment import build_experiment
from adabatch.run.loop import train
from adabatch.validation import plain

EXAMPLE = ROOT / "examples" / "own_training_loop.py"


def test_the_example_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--epochs", "1", "--policy", "gns"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    output = capsys.readouterr().out
    assert "epoch 0: batch size" in output and "tested; batch size 4 ->" in output


@pytest.mark.parametrize("policy, engine", [("norm", "ghost"), ("augmented_inner_product", "functorch")])
def test_the_api_on_the_clis_batches_gives_the_clis_records(policy, engine, tmp_path):
    """The CLI trains; then the same model, data stream and optimizer (built from the same config) are
    driven by hand through `AdaptiveBatch.step` on the batches' tensors: every step's loss, statistics
    and next size equal the CLI's records."""
    cfg = compose("device=cpu", f"batch_size={policy}", "batch_size.initial=6", "batch_size.max=40",
                  "batch_size.max_micro=16", f"batch_size.engine={engine}", "train.samples=300",
                  "train.eval_every=300", "train.eval_train_examples=100", "train.progress_every_s=600")
    train(cfg, tmp_path)
    records = list(read_metrics(tmp_path, "train"))
    exp = build_experiment(cfg)
    adaptive = AdaptiveBatch(exp.model, plain(cfg.batch_size), engine=exp.engine, max_micro=16)  # an engine built by name, as the CLI's
    exp.model.train()
    for record in records:
        assert adaptive.batch_size == record["batch_size"]
        x, y = exp.data.examples(exp.data.draw(adaptive.batch_size))
        exp.optimizer.zero_grad(set_to_none=True)
        loss, statistics, next_size = adaptive.step(x, y)
        exp.optimizer.step()
        assert loss == record["train_loss"] and next_size == record["next_batch_size"]
        assert (statistics is not None) == bool(record.get("tested"))
        assert statistics is None or statistics == {k: v for k, v in record.items() if k in statistics}
    assert any(r.get("tested") for r in records) and records[-1]["next_batch_size"] > records[0]["batch_size"]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_exact_under_micro_batching(engine_name):
    """Float64: the statistics and the gradient left in .grad are the same for every split, and the
    gradient is the brute-force mean of the per-example gradients."""
    model, data, batch = tiny_problem("cnn")
    x, y = data.examples(batch)
    expected = per_example_gradients(model, data, batch).mean(0)
    policy = {"name": "augmented_inner_product", "initial": 2, "max": 10**6, "theta": 0.5, "nu": 0.5}
    engine, results = build_engine(engine_name, model), {}  # one engine per model: it may hook the model's modules
    for max_micro in (None, 5, 3):
        adaptive = AdaptiveBatch(model, policy, engine=engine, max_micro=max_micro)
        model.zero_grad(set_to_none=True)
        results[max_micro] = adaptive.step(x, y)
        gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
        torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-14)
    whole = results[None]
    for max_micro in (5, 3):
        assert results[max_micro].loss == pytest.approx(whole.loss, rel=1e-12)
        for key, value in whole.statistics.items():
            expected_value = value if isinstance(value, str) else pytest.approx(value, rel=1e-9)  # statistics_source
            assert results[max_micro].statistics[key] == expected_value, key
        assert results[max_micro].next_batch_size == whole.next_batch_size


def test_untested_steps_and_divergence():
    model, data, batch = tiny_problem("mlp")
    x, y = data.examples(batch)
    constant = AdaptiveBatch(model, {"name": "constant", "initial": 14})
    assert constant.engine is None
    loss, statistics, next_size = constant.step(x, y)
    assert statistics is None and next_size == 14 and math.isfinite(loss)
    ramp = AdaptiveBatch(model, {"name": "norm", "initial": 4, "max": 64, "eta": 0.5, "interval": 2}, engine="functorch")
    assert ramp.step(x, y).statistics is not None and ramp.step(x, y).statistics is None  # tested every 2nd step
    assert (ramp.steps, ramp.samples) == (2, 28)
    restarted = AdaptiveBatch(model, {"name": "norm", "initial": 4, "max": 64, "eta": 0.5, "interval": 2}, engine="functorch")
    restarted.load_state_dict(ramp.state_dict())
    assert (restarted.steps, restarted.samples, restarted.batch_size) == (2, 28, ramp.batch_size)
    with pytest.raises(Diverged, match="the training loss is nan"):
        ramp.step(torch.full_like(x, math.nan), y)
    with pytest.raises(ValueError, match="stagewise .* pass budget"):
        AdaptiveBatch(model, {"name": "stagewise", "initial": 4, "max": 16})
