"""A researcher's own model, dataset and batch-size policy, from files outside src/: a package on
PYTHONPATH and configs in a --config-dir, each naming its class or function in `_target_`. The real
CLI trains with them, with no change to the project's code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import yaml
from helpers import ROOT, compose

from adabatch.run import loop
from adabatch.run.records import read_metrics

PACKAGE = '''
import torch
from torch import nn

from adabatch.batch_size import AdaptiveTest, BatchSizePolicy, Decision
from adabatch.data import ArrayDataset


class TinyNet(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=16):
        super().__init__()
        channels, height, width = input_shape
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, hidden), nn.Tanh(),
                                    nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.layers(x)


class MyNormTest(AdaptiveTest):
    """The norm test, written again outside the project: T = V / (eta^2 |gbar|^2)."""

    def __init__(self, initial, max, eta, **options):
        super().__init__(initial, max, **options)
        self.eta = eta

    def propose(self, s):
        return s.norm_var / (self.eta**2 * s.grad_sq_norm), {}


class Doubling(BatchSizePolicy):
    def __init__(self, initial, max, every):
        super().__init__(initial, max)
        self.every = every

    def decide(self, *, step, samples, batch_size, statistics=None):
        return Decision(min(self.max, 2 * batch_size) if step % self.every == 0 else batch_size)


def blobs(classes=3, per_class=30, size=5, seed=0):
    """Images of noise around one level per class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    levels = (labels * 200 // max(1, classes - 1)).view(-1, 1, 1, 1)
    images = (levels + torch.randint(-25, 26, (len(labels), 1, size, size), generator=g)).clamp(0, 255)
    order = torch.randperm(len(labels), generator=g)
    x, y = images[order].to(torch.uint8), labels[order]
    cut = len(y) * 4 // 5
    return ArrayDataset.from_arrays("blobs", x[:cut], y[:cut], x[cut:], y[cut:])
'''

CONFIGS = {
    "model/tinynet.yaml": {"_target_": "mystudy.TinyNet", "hidden": 16},
    "batch_size/my_norm.yaml": {"_target_": "mystudy.MyNormTest", "initial": 4, "max": 64, "eta": 0.5},
    "batch_size/doubling.yaml": {"_target_": "mystudy.Doubling", "initial": 4, "max": 32, "every": 3},
    "dataset/blobs.yaml": {"_target_": "mystudy.blobs", "per_class": 30},
}
COMMON = ["device=cpu", "train.samples=600", "train.eval_every=300", "train.progress_every_s=0", "optimizer.lr=0.05"]


def write_study(root):
    (root / "code" / "mystudy").mkdir(parents=True)
    (root / "code" / "mystudy" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    for path, config in CONFIGS.items():
        (root / "configs" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "configs" / path).write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    images = (labels[:, None, None] * 60 + rng.integers(0, 30, (200, 6, 6))).astype(np.uint8)
    np.savez(root / "mine.npz", x_train=images[:160], y_train=labels[:160], x_test=images[160:], y_test=labels[160:])


def train(root, run: str, *overrides: str) -> tuple[dict, list[dict]]:
    """`python src/train.py` as the researcher runs it: from their study's folder, their code on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["PYTHONPATH"] = str(root / "code")
    run_dir = root / run
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), "--config-dir", str(root / "configs"), *COMMON, *overrides,
         f"hydra.run.dir={run_dir}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return yaml.safe_load((run_dir / "config.yaml").read_text()), [r for r in records if r["kind"] == "train"]


def train_in_process(root, run: str, *overrides: str) -> list[dict]:
    """The same run in this process (the study's code on sys.path): its training records."""
    cfg = compose(f"hydra.searchpath=[file://{root / 'configs'}]", *COMMON, *overrides)
    loop.train(cfg, root / run)
    return list(read_metrics(root / run, "train"))


def test_own_model_npz_data_and_own_test_train_like_the_shipped_test(tmp_path, monkeypatch):
    write_study(tmp_path)
    data = ["dataset=npz", f"dataset.path={tmp_path / 'mine.npz'}", "model=tinynet"]
    config, own = train(tmp_path, "own", *data, "batch_size=my_norm")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    shipped = train_in_process(tmp_path, "shipped", *data, "batch_size=norm", "batch_size.initial=4",
                               "batch_size.max=64", "batch_size.eta=0.5")
    # The configs named no `name` and no loop keys: the run gave them their config file's name and defaults.
    assert config["model"]["name"] == "tinynet" and config["batch_size"]["name"] == "my_norm"
    assert config["batch_size"]["engine"] == "ghost" and config["batch_size"]["max_micro"] == 1024
    assert config["dataset"]["name"] == "npz"
    # The same test, written outside the project, takes the same steps with the same statistics.
    assert len(own) == len(shipped) > 3 and own[-1]["batch_size"] > own[0]["batch_size"] == 4
    for mine, theirs in zip(own, shipped):
        assert mine["batch_size"] == theirs["batch_size"] and mine["train_loss"] == theirs["train_loss"]
        assert mine.get("norm_var") == theirs.get("norm_var") and mine.get("grad_sq_norm") == theirs.get("grad_sq_norm")


def test_own_dataset_source_and_own_fixed_policy(tmp_path):
    write_study(tmp_path)
    config, records = train(tmp_path, "blobs", "dataset=blobs", "model=tinynet", "batch_size=doubling")
    assert config["dataset"]["name"] == "blobs" and config["dataset"]["augmentation"] == "none"
    sizes = [r["batch_size"] for r in records]
    assert sizes[:9] == [4, 4, 4, 8, 8, 8, 16, 16, 16] and set(sizes[9:]) == {32}
    summary = json.loads((tmp_path / "blobs" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_test_acc"] > 0.9
