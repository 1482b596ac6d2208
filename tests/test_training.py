import json
import logging
import math

import pytest
import torch
import yaml
from helpers import Float64, compose

from adabatch.data import TrainingData, build_augmentation, load_dataset, sources
from adabatch.data.stream import IndexStream
from adabatch.models import build_model
from adabatch.optim import build_optimizer
from adabatch.run.records import read_metrics, read_summary
from adabatch.step import accumulate_gradient
from adabatch.run.milestones import early_evaluation_points
from adabatch.run.experiment import build_experiment
from adabatch.run.loop import train

TINY = ("device=cpu", "train.eval_every=400", "train.progress_every_s=0")


@pytest.mark.parametrize("optimizer", ["adagrad", "adagrad_norm", "adam", "sgdm"])
def test_a_step_over_micro_batches_equals_the_unsplit_step(optimizer):
    dataset = load_dataset("digits", "unused")
    data = TrainingData(dataset, build_augmentation("crop_flip"), seed=3, device=torch.device("cpu"))
    batch = data.draw(45)
    results = []
    for max_micro in (45, 23, 15, 7):
        torch.manual_seed(0)
        model = Float64(build_model("cnn", dataset.input_shape, dataset.num_classes))
        opt = build_optimizer({"name": optimizer, "lr": 0.05}, model.parameters())
        for _ in range(2):  # two steps, so the optimizers' states matter too
            opt.zero_grad()
            loss = accumulate_gradient(model, data, batch, max_micro)
            opt.step()
        results.append((loss.item(), torch.cat([p.detach().flatten() for p in model.parameters()])))
    loss_ref, params_ref = results[0]
    for loss, params in results[1:]:
        assert loss == pytest.approx(loss_ref, rel=1e-13)
        torch.testing.assert_close(params, params_ref, rtol=1e-12, atol=1e-13)


def test_training_writes_the_record_contract(tmp_path):
    cfg = compose(*TINY, "train.samples=1500", "batch_size=linear_ramp", "batch_size.initial=16",
                  "batch_size.increment=16", "batch_size.max=100", "batch_size.max_micro=40")
    summary = train(cfg, tmp_path)

    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["batch_size"]["increment"] == 16 and config["data_dir"] == "data"
    records = list(read_metrics(tmp_path, "train"))
    evals = list(read_metrics(tmp_path, "eval"))
    assert [r["batch_size"] for r in records[:8]] == [16, 32, 48, 64, 80, 96, 100, 100]
    for r in records:
        assert {"step", "samples", "batch_size", "lr", "train_loss", "time_s", "next_batch_size"} <= r.keys()
        assert math.isfinite(r["train_loss"])
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["samples"] == sum(r["batch_size"] for r in records) >= 1500
    assert evals[0]["samples"] == 0 and evals[-1]["samples"] == records[-1]["samples"]
    assert all(b["samples"] - a["samples"] >= 400 for a, b in zip(evals[:-2], evals[1:-1]))
    for e in evals:
        assert {"step", "samples", "test_loss", "test_acc", "train_eval_loss", "train_eval_acc"} <= e.keys()
        assert 0 <= e["test_acc"] <= 1 and 0 <= e["train_eval_acc"] <= 1

    on_disk = read_summary(tmp_path)
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["status"] == "completed"
    assert on_disk["steps"] == len(records) and on_disk["samples"] == records[-1]["samples"]
    assert on_disk["final_batch_size"] == 100
    assert on_disk["mean_batch_size"] == pytest.approx(on_disk["samples"] / on_disk["steps"])
    assert on_disk["best_test_acc"] == max(e["test_acc"] for e in evals)
    assert on_disk["final_test_acc"] == evals[-1]["test_acc"]
    assert on_disk["best_train_loss"] == min(e["train_eval_loss"] for e in evals)
    assert on_disk["final_train_loss"] == evals[-1]["train_eval_loss"]
    assert on_disk["norm_policy"] == "none"  # the CNN has no normalization layer, whatever model.norm says
    for key in ("wall_time_s", "train_time_s", "best_train_loss"):
        assert on_disk[key] > 0


def test_same_seed_same_run_and_log_every(tmp_path):
    overrides = (*TINY, "train.samples=600", "optimizer=adam", "schedule=cosine", "dataset.augmentation=crop_flip",
                 "batch_size=constant")
    first = train(compose(*overrides), tmp_path / "a")
    second = train(compose(*overrides, "train.log_every=4"), tmp_path / "b")
    assert first["final_test_acc"] == second["final_test_acc"]
    a = list(read_metrics(tmp_path / "a", "train"))
    b = list(read_metrics(tmp_path / "b", "train"))
    steps = [r["step"] for r in b]
    assert steps == [1] + [s for s in range(1, len(a) + 1) if s % 4 == 0] + ([len(a)] if len(a) % 4 else [])
    by_step = {r["step"]: r for r in a}
    for r in b:
        assert r["train_loss"] == by_step[r["step"]]["train_loss"] and r["lr"] == by_step[r["step"]]["lr"]
    assert a[-1]["lr"] < a[0]["lr"]  # cosine decays


def test_different_seeds_differ(tmp_path):
    a = train(compose(*TINY, "train.samples=300", "seed=1"), tmp_path / "a")
    b = train(compose(*TINY, "train.samples=300", "seed=2"), tmp_path / "b")
    assert a["final_train_loss"] != b["final_train_loss"]


def test_tests_refuse_batch_norm_with_a_clear_error():
    cfg = compose("device=cpu", "model=resnet18", "model.width=4", "model.norm=batch", "batch_size=norm")
    with pytest.raises(ValueError, match="batch_size=norm needs per-example gradients, which BatchNorm does not have"):
        build_experiment(cfg)
    # fixed schedules need no per-example gradients, so BatchNorm is fine there
    assert build_experiment(compose("device=cpu", "model=resnet18", "model.width=4", "model.norm=batch",
                                    "batch_size=constant")).engine is None


def test_every_tested_step_is_on_record_whatever_log_every(tmp_path):
    cfg = compose(*TINY, "train.samples=400", "batch_size=norm", "batch_size.initial=4", "batch_size.max=16",
                  "batch_size.eta=0.5", "train.log_every=1000")
    summary = train(cfg, tmp_path)
    records = list(read_metrics(tmp_path, "train"))
    tested = [r for r in records if r.get("tested")]
    assert tested, "no tested step is on record"
    assert [r["step"] for r in tested] == list(range(1, len(tested) + 1))  # tested until the cap, all on record
    assert all(r["batch_size"] < 16 for r in tested) and tested[-1]["next_batch_size"] == 16
    assert records[-1]["step"] == summary["steps"] and not records[-1].get("tested")


def test_a_batch_size_above_the_training_set_is_capped_logged_and_recorded(tmp_path, caplog):
    cfg = compose(*TINY, "train.samples=3000", "batch_size=constant", "batch_size.initial=2000")
    with caplog.at_level(logging.INFO, logger="adabatch"):
        summary = train(cfg, tmp_path)
    assert summary["batch_size_capped_from"] == {"initial": 2000, "max": 2000}
    assert read_summary(tmp_path)["batch_size_capped_from"] == {"initial": 2000, "max": 2000}
    assert {r["batch_size"] for r in read_metrics(tmp_path, "train")} == {1437}  # digits' training examples
    assert "batch_size.initial=2000, batch_size.max=2000 capped at the 1437 training examples" in caplog.text


def test_early_evaluations_double_from_eval_first_then_follow_eval_every(tmp_path):
    cfg = compose(*TINY, "train.samples=1000", "train.eval_first=10", "train.eval_every=200", "batch_size=constant",
                  "batch_size.initial=4")
    train(cfg, tmp_path)
    assert [r["samples"] for r in read_metrics(tmp_path, "eval")] == [0, 12, 20, 40, 80, 160, 200, 400, 600, 800, 1000]
    assert early_evaluation_points(None, 200) == () and early_evaluation_points(10, 200) == (10, 20, 40, 80, 160)


@pytest.mark.skipif(not sources.DEBIAN_FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed (make data)")
def test_the_fashion_logistic_adadagrad_run_draws_batches_of_distinct_examples(tmp_path, monkeypatch):
    """The committed run's first 500k samples (seed 0): its batch grows to b_max = N = 60000 within a few
    steps, so batches start mid-epoch and straddle epochs. Checked where batches are made, in the stream."""
    sizes = []
    take = IndexStream.take

    def checked_take(stream, count):
        batch = take(stream, count)
        assert batch.unique().numel() == count == len(batch), f"a batch of {count} repeats an example"
        sizes.append(count)
        return batch

    monkeypatch.setattr(IndexStream, "take", checked_take)
    cfg = compose("experiment=fashion_logistic", "method=norm_test", "optimizer=adagrad", "seed=0", "device=cpu",
                  "train.samples=500000", "train.progress_every_s=0")
    train(cfg, tmp_path)
    assert sizes[0] == 2 and max(sizes) == 60000 and sum(sizes) % 60000 != 0
    assert all(sizes[r["step"] - 1] == r["batch_size"] for r in read_metrics(tmp_path, "train"))


@pytest.mark.parametrize(("model", "normalization"), [
    (("model=vit", "model.dim=8", "model.depth=1", "model.heads=2"), "layer"),
    (("model=resnet18", "model.width=4", "model.groups=2"), "group"),
])
def test_the_summary_records_what_the_model_normalizes_with(model, normalization, tmp_path):
    """Issue 19: a ViT run said norm_policy: group (model.norm's default); the ViT normalizes with LayerNorm."""
    overrides = (*TINY, *model, "batch_size=constant", "batch_size.initial=16", "train.samples=32")
    assert train(compose(*overrides), tmp_path)["norm_policy"] == normalization
    assert read_summary(tmp_path)["norm_policy"] == normalization
