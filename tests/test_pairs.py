"""Every dataset x model pair builds, trains a few tested steps through the real loop, and its
Opacus per-example gradients match a loop over examples. Downloadable datasets come from small
files written in their genuine on-disk formats."""
import pytest
import torch
from adabatch.data.standin import write_standin_dataset
from helpers import compose

from adabatch.data import sources
from adabatch.run.records import read_metrics
from adabatch.stats import OpacusEngine
from adabatch.run.experiment import build_experiment
from adabatch.run.loop import train

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100")
TINY_MODELS = {
    "logistic": (),
    "cnn": (),
    "resnet18": ("model.width=4", "model.groups=2"),
    "resnet50": ("model.width=4", "model.groups=2"),
    "vit": ("model.dim=16", "model.depth=1", "model.heads=2"),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in DATASETS[1:]:
        write_standin_dataset(name, root, train=30, test=10)
    return root


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_pair_trains_and_has_exact_per_example_gradients(dataset, model, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "absent")
    cfg = compose(
        f"dataset={dataset}", f"model={model}", *TINY_MODELS[model], f"data_dir={data_dir}", "device=cpu",
        "batch_size=norm", "batch_size.initial=4", "batch_size.max=12", "batch_size.max_micro=5",
        "train.samples=24", "train.eval_every=24", "train.progress_every_s=0",
        *([] if dataset == "digits" else ["dataset.download=false"]),  # digits ships with scikit-learn
    )
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["samples"] >= 24
    tested = [r for r in read_metrics(tmp_path, "train") if r.get("tested")]
    assert tested and all(r["norm_var"] >= 0 and r["grad_sq_norm"] > 0 for r in tested)

    exp = build_experiment(cfg)
    x, y = exp.data.examples(exp.data.draw(3))
    _, per_example = OpacusEngine(exp.model).per_example_gradients(x, y)
    params = [p for p in exp.model.parameters() if p.requires_grad]
    for i in range(3):
        exp.model.zero_grad()
        torch.nn.functional.cross_entropy(exp.model(x[i : i + 1]), y[i : i + 1]).backward()
        for p, g in zip(params, per_example):  # float32: compare as vectors, relative to their size
            assert (g[i] - p.grad).norm() <= 1e-4 * p.grad.norm() + 1e-7, (dataset, model, p.shape)
