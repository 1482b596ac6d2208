"""dataset.validation: examples held out of training, evaluated at every evaluation."""
import hashlib

import pytest
import torch
from helpers import compose

from adabatch.analysis.runs import load_run
from adabatch.analysis.tables import samples_before_the_cap
from adabatch.data import TrainingData, load_dataset, normalize
from adabatch.data.holdout import VALIDATION_SEED, hold_out, held_out_indices
from adabatch.data.sources import ArrayDataset
from adabatch.errors import ConfigError
from adabatch.models import model_from_config
from adabatch.run.records import read_metrics, read_summary
from adabatch.run.experiment import build_experiment
from adabatch.run.loop import train
from adabatch.validation import plain

TINY = ("device=cpu", "train.eval_every=400", "train.progress_every_s=0")


def numbered_dataset(n: int = 300) -> ArrayDataset:
    """Training image i holds i in its two pixels (base 256), so a batch's examples say which they are."""
    ids = torch.arange(n)
    train_x = torch.stack([ids // 256, ids % 256], dim=1).to(torch.uint8).view(n, 1, 1, 2)
    test_x = torch.randint(0, 256, (20, 1, 1, 2), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return ArrayDataset("numbered", train_x, ids % 3, test_x, torch.arange(20) % 3, 3, 255.0, (0.0,), (1.0,))


def example_ids(images: torch.Tensor) -> set[int]:
    pixels = images.view(len(images), 2).long()
    return set((pixels[:, 0] * 256 + pixels[:, 1]).tolist())


def test_the_stream_never_draws_a_held_out_example_and_draws_every_other():
    dataset = numbered_dataset()
    held = set(held_out_indices(dataset.num_train, 40).tolist())
    split = hold_out(dataset, 40)
    assert split.num_train == 260 and split.num_validation == 40
    assert example_ids(split.validation_x) == held
    data = TrainingData(split, None, seed=5, device="cpu")
    drawn: list[int] = []
    for size in (7, 100, 260, 33, 260, 1, 99):  # batches that cross epochs, and whole-epoch batches
        batch = data.draw(size)
        ids = example_ids(split.train_x[batch.indices])
        assert len(ids) == size and not ids & held
        drawn += ids
    assert set(drawn) == set(range(300)) - held


def test_the_choice_is_fixed_whatever_the_seed_and_the_test_split_is_untouched():
    digits = load_dataset("digits", "unused")
    split = hold_out(digits, 300)
    assert torch.equal(split.test_x, digits.test_x) and torch.equal(split.test_y, digits.test_y)
    held = held_out_indices(digits.num_train, 300)
    assert torch.equal(split.validation_x, digits.train_x[held]) and torch.equal(split.validation_y, digits.train_y[held])
    kept = torch.tensor(sorted(set(range(digits.num_train)) - set(held.tolist())))
    assert torch.equal(split.train_x, digits.train_x[kept]) and torch.equal(split.train_y, digits.train_y[kept])
    assert (split.mean, split.std) == (digits.mean, digits.std)
    for seed in (0, 1, 2):  # the run's seed does not choose the validation set
        exp = build_experiment(compose("device=cpu", f"seed={seed}", "dataset.validation=300", "batch_size=constant"))
        assert torch.equal(exp.dataset.validation_y, split.validation_y)
        assert exp.data.num_examples == digits.num_train - 300
    assert hold_out(digits, 0) is digits


@pytest.mark.parametrize("bad", [-1, 1437, 2.5, "all"])
def test_a_bad_validation_size_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=rf"dataset.validation={bad} must be a whole number .* from 0 to 1436"):
        hold_out(load_dataset("digits", "unused"), bad)


def test_every_evaluation_records_the_validation_split_as_a_direct_evaluation_finds_it(tmp_path):
    cfg = compose(*TINY, "train.samples=1200", "dataset.validation=300", "batch_size=linear_ramp",
                  "batch_size.initial=8", "batch_size.increment=8", "batch_size.max=64")
    summary = train(cfg, tmp_path)
    evals = list(read_metrics(tmp_path, "eval"))
    assert len(evals) >= 4 and all({"validation_loss", "validation_acc"} <= e.keys() for e in evals)
    assert len({e["validation_acc"] for e in evals}) > 1  # it follows training
    on_disk = read_summary(tmp_path)
    assert on_disk["final_validation_acc"] == evals[-1]["validation_acc"] == summary["final_validation_acc"]
    assert on_disk["final_validation_loss"] == evals[-1]["validation_loss"]
    assert on_disk["best_validation_acc"] == max(e["validation_acc"] for e in evals)
    held = held_out_indices(1437, 300)
    assert on_disk["validation"] == {
        "examples": 300, "of_training_examples": 1437, "seed": VALIDATION_SEED,
        "indices_sha256": hashlib.sha256(held.numpy().astype("<i8").tobytes()).hexdigest(),
    }

    digits = load_dataset("digits", "unused")  # the final weights on the held-out examples, in float64
    model = model_from_config(plain(cfg.model), digits.input_shape, digits.num_classes)
    model.load_state_dict(torch.load(tmp_path / "model.pt"))
    model = model.double().eval()
    with torch.no_grad():
        logits = model(normalize(digits.train_x[held], digits).double())
    labels = digits.train_y[held]
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).double().mean().item()
    assert evals[-1]["validation_acc"] == pytest.approx(accuracy, abs=1e-12)
    assert evals[-1]["validation_loss"] == pytest.approx(loss, rel=1e-5)


def test_a_run_without_validation_records_none():
    cfg = compose(*TINY, "train.samples=100", "batch_size=constant")
    assert cfg.dataset.validation == 0 and build_experiment(cfg).dataset.num_validation == 0


@pytest.mark.parametrize("ramp, options", [
    ("linear_ramp", ("batch_size.initial=8", "batch_size.increment=12", "batch_size.max=100")),
    ("stagewise", ("batch_size.initial=8", "batch_size.max=64")),
    ("norm", ("batch_size.initial=4", "batch_size.max=64", "batch_size.eta=0.3")),
])
def test_step_one_and_every_change_of_batch_size_are_on_record_whatever_log_every(tmp_path, ramp, options):
    overrides = (*TINY, "train.samples=3000", f"batch_size={ramp}", *options)
    full = train(compose(*overrides, "train.log_every=1"), tmp_path / "every")
    sparse = train(compose(*overrides, "train.log_every=1000"), tmp_path / "sparse")
    assert full["steps"] == sparse["steps"]
    every = list(read_metrics(tmp_path / "every", "train"))
    kept = list(read_metrics(tmp_path / "sparse", "train"))
    changes = [r for i, r in enumerate(every)
               if i == 0 or r["batch_size"] != every[i - 1]["batch_size"] or r["next_batch_size"] != r["batch_size"]]
    assert len({r["batch_size"] for r in every}) >= 3
    kept_steps = {r["step"] for r in kept}
    assert kept[0]["step"] == 1 and {r["step"] for r in changes} <= kept_steps
    assert len(kept) < len(every)  # the steps between changes are still left out
    assert samples_before_the_cap(load_run(tmp_path / "sparse")) == samples_before_the_cap(load_run(tmp_path / "every"))
    cap = next(i for i, r in enumerate(every) if r["batch_size"] == 64 or r["batch_size"] == 100)
    assert samples_before_the_cap(load_run(tmp_path / "sparse")) == sum(r["batch_size"] for r in every[:cap])
