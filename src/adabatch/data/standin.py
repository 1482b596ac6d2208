"""Stand-in datasets: random pixels written in the genuine on-disk formats (IDX, CIFAR python
pickles), so that tests and `make smoke-paper` run the real loading code at the true example shapes
and class counts without a download. Nothing trained on them means anything."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DIRS = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_STEMS.items():
        write_idx(directory / stem, arrays[key], compress)


def write_cifar_batch(path: Path, data: np.ndarray, labels: dict[str, list[int]], bytes_keys: bool) -> None:
    entry = {"batch_label": "a batch", "data": data, "filenames": [f"{i}.png" for i in range(len(data))], **labels}
    if bytes_keys:
        entry = {key.encode(): value for key, value in entry.items()}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_standin_dataset(name: str, root: Path, train: int = 40, test: int = 20, seed: int = 0) -> Path:
    """A full `name` dataset of random images in torchvision's layout under `root`; returns root."""
    rng = np.random.default_rng(seed)
    if name in IDX_DIRS:
        arrays = {
            "train_x": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
            "train_y": rng.integers(0, 10, train, dtype=np.uint8),
            "test_x": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
            "test_y": rng.integers(0, 10, test, dtype=np.uint8),
        }
        write_idx_dir(root / IDX_DIRS[name], arrays, compress=True)
        return root
    if name == "cifar10":
        directory = root / "cifar-10-batches-py"
        directory.mkdir(parents=True, exist_ok=True)
        per_file = -(-train // 5)
        for i in range(1, 6):
            data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            write_cifar_batch(directory / f"data_batch_{i}", data, {"labels": rng.integers(0, 10, per_file).tolist()}, False)
        data = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
        write_cifar_batch(directory / "test_batch", data, {"labels": rng.integers(0, 10, test).tolist()}, False)
        with open(directory / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [str(i) for i in range(10)]}, f, protocol=2)
        return root
    if name == "cifar100":
        directory = root / "cifar-100-python"
        directory.mkdir(parents=True, exist_ok=True)
        for split, count in (("train", train), ("test", test)):
            data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
            labels = {"fine_labels": rng.integers(0, 100, count).tolist(), "coarse_labels": [0] * count}
            write_cifar_batch(directory / split, data, labels, bytes_keys=True)
        return root
    raise ValueError(f"no stand-in writer for dataset {name!r}")
