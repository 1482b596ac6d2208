"""dataset=text: byte tokens, non-overlapping windows, the last tenth as the validation split, windows drawn by
the index stream like any examples, and bad inputs refused in one line with exit code 2 (src/train.py's
Hydra entry point run in this process: tests/train_cli.py)."""
from __future__ import annotations

import pytest
import torch
from helpers import compose
from omegaconf import OmegaConf
from train_cli import refused

from adabatch.data import ArrayDataset, TextDataset, TrainingData, check_text_model, evaluation_batches, text
from adabatch.data.from_config import dataset_from_config
from adabatch.errors import ConfigError
from adabatch.models import build_model
from adabatch.models.gpt import gpt
from adabatch.tasks import TASKS, task_of


def write(path, content: bytes):
    path.write_bytes(content)
    return path


def test_windows_are_consecutive_bytes_without_overlap_and_the_last_tenth_validates(tmp_path):
    content = bytes(range(100)) * 4  # 400 ASCII bytes: 360 for training, the last 40 for validation
    dataset = text(path=write(tmp_path / "t.txt", content), block_size=4)
    assert isinstance(dataset, TextDataset) and dataset.train_tokens == 360 and dataset.validation_tokens == 40
    assert dataset.train_x.dtype == dataset.train_y.dtype == torch.int64
    assert dataset.train_x.shape == (72, 4) and dataset.test_x.shape == (8, 4)  # 360 // 5 and 40 // 5 windows
    for k in range(72):  # window k is bytes [5k, 5k + 5): x its first four, y its last four
        window = list(content[5 * k : 5 * k + 5])
        assert dataset.train_x[k].tolist() == window[:-1] and dataset.train_y[k].tolist() == window[1:]
    validation = content[360:]
    assert dataset.test_x[0].tolist() == list(validation[:4]) and dataset.test_y[-1].tolist() == list(validation[36:40])
    assert dataset.input_shape == (4,) and dataset.tokens_per_example == 4 and dataset.vocab_size == 256


def test_a_shorter_tail_is_left_out(tmp_path):
    dataset = text(path=write(tmp_path / "t.txt", b"a" * 123), block_size=3)  # 111 train (27 windows, 3 left), 12 val
    assert (dataset.num_train, len(dataset.test_y)) == (27, 3)
    assert dataset.description()["train_windows"] == 27 and dataset.description()["validation_tokens"] == 12


def test_tokens_are_utf8_bytes(tmp_path):
    content = "Ἐν ἀρχῇ ἦν ὁ λόγος, in the beginning: é ü 日本 ".encode() * 20
    dataset = text(path=write(tmp_path / "greek.txt", content), block_size=7)
    flat = torch.cat([dataset.train_x, dataset.train_y[:, -1:]], dim=1).reshape(-1).tolist()
    assert bytes(flat) == content[: len(flat)]
    assert max(flat) > 127 and dataset.description()["tokenizer"] == "utf-8 bytes"


def test_description_names_the_file_and_the_cut(tmp_path):
    path = write(tmp_path / "t.txt", b"abcdefghij" * 30)
    described = text(path=path, block_size=9).description()
    assert described["source"] == str(path) and described["block_size"] == 9 and described["vocab_size"] == 256
    assert described["train_tokens"] + described["validation_tokens"] == 300 and len(described["sha256"]) == 64
    assert described["train_windows"] == 27 and described["validation_windows"] == 3


def test_the_stream_draws_windows_without_replacement_and_inputs_stay_token_ids(tmp_path):
    dataset = text(path=write(tmp_path / "t.txt", bytes(range(128)) * 6), block_size=5)  # 692 tokens: 115 windows of 6
    data = TrainingData(dataset, None, seed=3, device="cpu")
    seen = []
    while len(seen) < dataset.num_train:
        batch = data.draw(min(16, dataset.num_train - len(seen)))
        x, y = data.examples(batch)
        assert x.dtype == torch.int64 and torch.equal(x, dataset.train_x[batch.indices])
        assert torch.equal(y, dataset.train_y[batch.indices])
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(dataset.num_train))  # one epoch: every window once
    x, y = next(evaluation_batches(dataset, "test", 4, "cpu"))
    assert torch.equal(x, dataset.test_x[:4]) and torch.equal(y, dataset.test_y[:4])


def test_the_dataset_declares_next_token_and_the_gpt_reads_it(tmp_path):
    dataset = text(path=write(tmp_path / "t.txt", b"in the beginning " * 40), block_size=8)
    assert task_of(dataset) is TASKS["next_token"]
    model = build_model("gpt", dataset.input_shape, dataset.num_classes, n_layer=1, n_head=1, n_embd=4, block_size=8)
    x, y = TrainingData(dataset, None, seed=0, device="cpu").examples(TrainingData(dataset, None, 0, "cpu").draw(3))
    loss = task_of(dataset).loss(model(x), y)
    assert loss.shape == () and 3 * 4.5 < loss.item() < 3 * 6.5  # about ln 256 = 5.55 nats per token, per sequence
    check_text_model(dataset, model)


def test_config_default_path_is_the_data_directory_kjv(tmp_path):
    cfg = compose("dataset=text", "model=gpt", f"data_dir={tmp_path}")
    write(tmp_path / "kjv.txt", b"In the beginning God created the heaven and the earth.\n" * 20)
    dataset = dataset_from_config(OmegaConf.to_container(cfg.dataset, resolve=True), cfg.data_dir)
    assert dataset.name == "kjv" and dataset.block_size == 64 and dataset.source == str(tmp_path / "kjv.txt")


@pytest.mark.parametrize(("case", "message"), [
    ("text and cnn", "dataset=t holds token windows, which model=cnn does not read (it has no block_size and vocab_size)"),
    ("images and gpt", "the model (GPT) reads token ids, and dataset=random holds images; use dataset=text"),
    ("longer windows", "dataset.block_size=8 is above model.block_size=6"),
    ("small vocabulary", "has 256 tokens (utf-8 bytes) but the model was built for model.vocab_size=100"),
])
def test_check_text_model_refuses_what_the_model_cannot_read(tmp_path, case, message):
    dataset = text(path=write(tmp_path / "t.txt", b"abc" * 100), block_size=8)
    tiny = {"n_layer": 1, "n_head": 1, "n_embd": 4}
    images = ArrayDataset("random", torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64),
                          torch.zeros(1, 1, 8, 8, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64), 2, 255.0,
                          (0.0,), (1.0,))
    pairs = {
        "text and cnn": (dataset, lambda: build_model("cnn", (1, 8, 8), 10)),
        "images and gpt": (images, lambda: gpt((8,), 256, block_size=8, **tiny)),
        "longer windows": (dataset, lambda: gpt((6,), 256, block_size=6, **tiny)),  # built for other data than checked
        "small vocabulary": (dataset, lambda: gpt((8,), 100, block_size=8, **tiny)),
    }
    data, model = pairs[case]
    with pytest.raises(ConfigError) as refused:
        check_text_model(data, model(), "cnn" if case == "text and cnn" else None)
    assert message in str(refused.value) and "\n" not in str(refused.value)


LATIN1 = "Æsop's fables, naïve".encode("latin-1") * 50
BAD_TEXT = {  # case: (file content or None for no file, extra overrides, what the line must say)
    "missing file": (None, [], "does not exist; point it at a UTF-8 text file"),
    "default file missing": (None, ["dataset.path=null"], "kjv.txt does not exist; run `make data`"),
    "not utf-8": (LATIN1, [], "is not UTF-8 text (byte 0xc6 at offset 0); convert it first"),
    "shorter than the windows": (b"x" * 649, [], "holds 649 tokens, too few for windows of dataset.block_size=64"),
    "empty": (b"", [], "holds 0 tokens"),
    "block_size 0": (b"x" * 1000, ["dataset.block_size=0"], "dataset.block_size=0 must be an integer >= 1"),
    "windows longer than the model's": (b"x" * 2000, ["dataset.block_size=128"],
                                        "model.block_size=64 is below dataset.block_size=128"),
    "vocabulary the model lacks": (b"x" * 1000, ["model.vocab_size=100"], "model.vocab_size=100 is below the dataset's 256"),
    "model for images": (b"x" * 1000, ["model=cnn"], "model=cnn"),
}


@pytest.mark.parametrize("case", BAD_TEXT)
def test_bad_text_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    content, extra, message = BAD_TEXT[case]
    data_dir, path = tmp_path / "data", tmp_path / "data" / "corpus.txt"
    data_dir.mkdir()
    if content is not None:
        path.write_bytes(content)
    model = extra if "model=cnn" in extra else ["model=gpt", "model.n_layer=1", "model.n_embd=8", "model.n_head=1", *extra]
    overrides = ["dataset=text", f"dataset.path={path}", f"data_dir={data_dir}", "device=cpu", *model,
                 f"hydra.run.dir={tmp_path / 'run'}"]
    code, stderr = refused(overrides, capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert [p.name for p in data_dir.iterdir()] == ([] if content is None else ["corpus.txt"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset=digits", "model=gpt"], "model=gpt reads token windows, not inputs of shape (1, 8, 8); use dataset=text"),
    (["experiment=kjv_gpt", "dataset.block_size=65"], "model.block_size=64 is below dataset.block_size=65"),
    (["experiment=kjv_gpt", "model.vocab_size=255"], "model.vocab_size=255 is below the dataset's 256 tokens"),
])
def test_a_model_that_cannot_read_the_data_is_one_line_exit_2_and_nothing_written(overrides, message, tmp_path, capsys):
    """Through src/train.py, the overlay included: images for the GPT, windows longer than its positions, a
    vocabulary smaller than the data's bytes."""
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"in the beginning " * 200)
    text_file = [f"dataset.path={path}"] if "experiment=kjv_gpt" in overrides else []
    code, stderr = refused([*overrides, *text_file, "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


def test_a_token_run_records_tokens_perplexity_and_its_data_and_its_tables_compare_validation_loss(tmp_path):
    """A short GPT run: the next-token task's metrics (nats per token, perplexity, best = lowest), tokens in
    every record, the data's description in the summary; its frontier's levels are validation losses."""
    import json
    import math

    from adabatch.analysis import group_runs, load_runs
    from adabatch.analysis.frontier import frontier_rows, headline_levels
    from adabatch.analysis.headline import VALIDATION_LOSS
    from adabatch.analysis.tables import write_frontier_tables, write_tables
    from adabatch.run.loop import train

    path = tmp_path / "corpus.txt"
    path.write_bytes(b"and god said, let there be light: and there was light. " * 40)
    cfg = compose("dataset=text", f"dataset.path={path}", "dataset.block_size=8", "model=gpt", "model.n_layer=1",
                  "model.n_embd=8", "model.n_head=1", "model.block_size=8", "batch_size=norm", "batch_size.initial=4",
                  "train.samples=96", "train.eval_every=32", "device=cpu", "experiment_name=tiny_text")
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert all(r["tokens"] == 8 * r["samples"] for r in records) and summary["tokens"] == 8 * summary["samples"]
    assert all("test_acc" not in r and r["test_perplexity"] == pytest.approx(math.exp(r["test_loss"])) for r in evals)
    assert summary["final_test_perplexity"] == evals[-1]["test_perplexity"]
    assert summary["best_test_perplexity"] == min(r["test_perplexity"] for r in evals) < evals[0]["test_perplexity"]
    assert summary["data"]["tokenizer"] == "utf-8 bytes" and summary["data"]["source"] == str(path)
    assert "final_test_acc" not in summary
    (experiment,) = group_runs(load_runs([run_dir]))
    assert experiment.headline is VALIDATION_LOSS
    levels = headline_levels(experiment)
    assert levels == tuple(math.ceil(round(100 * (summary["final_test_loss"] + m), 6)) / 100 for m in (0.2, 0.1, 0.05))
    (row,) = frontier_rows(experiment)
    first = next(r["step"] for r in evals if r["test_loss"] <= levels[0])
    assert row.reach[0].mean_step == first and row.final.mean == summary["final_test_loss"]
    written = write_tables(experiment, tmp_path / "out") + write_frontier_tables(experiment, tmp_path / "out")
    assert "final validation perplexity" in written[1].read_text() and "steps to loss" in written[3].read_text()
