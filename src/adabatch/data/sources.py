"""Loading the datasets of the paper into in-memory uint8 tensors.

Each shipped dataset is a source: a function returning an ArrayDataset (`digits`, `mnist`,
`fashion_mnist`, `cifar10`, `cifar100`), so that a config can build it with `_target_`. The
on-disk formats (IDX files for MNIST / Fashion-MNIST, the pickled python batches for CIFAR) are
parsed here; torchvision is used only to download missing files, after which the same parsers read
them. Generic sources live next to this module (`npz`, `image_folder`, `torchvision_source`).
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..checks import switch
from ..components import build
from ..errors import DatasetUnavailable
from ..run.records import write_atomic

# Debian package `dataset-fashion-mnist`; module-level so tests can redirect it.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    task: ClassVar[str] = "classification"  # what its examples are for: a name in adabatch.tasks.TASKS
    pixels: ClassVar[bool] = True  # inputs that `normalize` scales; False: token ids, passed as they are
    tokens_per_example: ClassVar[int | None] = None  # token datasets: predicted tokens per example (records count tokens)
    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W); float32 when already scaled (npz source, max_value 1.0)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    max_value: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    validation_x: torch.Tensor | None = None  # examples held out of training (data.holdout), else None
    validation_y: torch.Tensor | None = None

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    @property
    def num_validation(self) -> int:
        return 0 if self.validation_y is None else len(self.validation_y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train_x.shape[1:]
        return channels, height, width

    @classmethod
    def from_arrays(cls, name: str, train_x, train_y, test_x, test_y, num_classes: int | None = None,
                    max_value: float = 255.0) -> ArrayDataset:
        """A dataset of images (N, C, H, W) (uint8 up to `max_value`, or floating point already scaled, with
        max_value=1.0) and integer labels, numpy or torch; num_classes defaults to the largest label + 1.
        The per-channel mean and std, by which the run normalizes its inputs, are the training images'."""
        train_x, test_x = torch.as_tensor(train_x), torch.as_tensor(test_x)
        train_y, test_y = torch.as_tensor(train_y).long(), torch.as_tensor(test_y).long()
        if num_classes is None:
            num_classes = int(max(train_y.max(), test_y.max())) + 1
        mean, std = channel_stats(train_x, max_value)
        return cls(name, train_x, train_y, test_x, test_y, num_classes, float(max_value), mean, std)

    def to(self, device: torch.device | str) -> ArrayDataset:
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
            validation_x=None if self.validation_x is None else self.validation_x.to(device),
            validation_y=None if self.validation_y is None else self.validation_y.to(device),
        )


def load_dataset(name: str, data_dir: str | Path, download: bool = True) -> ArrayDataset:
    """The source of configs/dataset/<name>.yaml, given `data_dir` and `download` where it takes them."""
    return build("dataset", {"name": name}, offered={"data_dir": data_dir, "download": download})


# Above this many elements, channel_stats works through the images in chunks of about this size.
_STATS_CHUNK_ELEMENTS = 1 << 24


def channel_stats(
    images: np.ndarray | torch.Tensor, max_value: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of images / max_value, in float64.

    `images` is (N, C, H, W) of at least one image. Up to _STATS_CHUNK_ELEMENTS elements this is
    numpy's mean and std of the scaled array; larger arrays take two passes over chunks, so the
    float64 copy never exceeds a chunk. A constant channel's std is 1.
    """
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"channel_stats needs (N, C, H, W) images with N >= 1, got shape {x.shape}")
    step = max(1, _STATS_CHUNK_ELEMENTS // max(1, x[0].size))
    if len(x) <= step:
        scaled = x.astype(np.float64) / max_value
        mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    else:
        chunks = [slice(start, start + step) for start in range(0, len(x), step)]
        count = len(x) * x.shape[2] * x.shape[3]
        mean = sum((x[chunk].astype(np.float64) / max_value).sum(axis=(0, 2, 3)) for chunk in chunks) / count
        centre = mean[None, :, None, None]
        squares = sum(
            np.square(x[chunk].astype(np.float64) / max_value - centre).sum(axis=(0, 2, 3)) for chunk in chunks
        )
        std = np.sqrt(squares / count)
    std = np.where(std > 0, std, 1.0)  # a constant channel is centred, not divided by zero
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _download_with_torchvision(dataset_class: str, root: Path) -> None:
    """Let torchvision fetch (and checksum) the raw files into `root`."""
    import torchvision.datasets

    getattr(torchvision.datasets, dataset_class)(root=str(root), train=True, download=True)


def _download_or_explain(name: str, torchvision_class: str, data_dir: Path, download: bool, hint: str) -> None:
    """Download via torchvision, or raise DatasetUnavailable with a one-line explanation."""
    message = (
        f"dataset {name!r} not found in {data_dir} ({hint}); it downloads automatically with network access, "
        f"or copy the torchvision {torchvision_class} files there and pass data_dir=/that/path"
    )
    if not download:
        raise DatasetUnavailable(message + " (download=False)")
    try:
        _download_with_torchvision(torchvision_class, data_dir)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        reason = " ".join(str(error).split())
        raise DatasetUnavailable(f"{message} (download failed: {type(error).__name__}: {reason})") from error


# --- sklearn digits -------------------------------------------------------------------------


def digits(data_dir: str | Path | None = None) -> ArrayDataset:
    """scikit-learn's 8x8 digits (values 0..16), a stratified 80/20 split; no download.

    The split is kept in <data_dir>/digits-scikit-learn-<version>-<split>.npz once made (where data_dir exists),
    so that later runs skip importing scikit-learn (seconds, in every process that trains on the digits); the
    name holds what the split depends on, so a changed split is made anew instead of read from an old file."""
    name = f"digits-scikit-learn-{metadata.version('scikit-learn')}-test{DIGITS_TEST_SIZE}-seed{DIGITS_SPLIT_SEED}"
    cache = Path(data_dir) / f"{name}.npz" if data_dir else None
    split = read_digits_split(cache) if cache else None
    if split is None:
        split = digits_split()
        if cache:
            write_digits_split(cache, split)
    train_x, train_y, test_x, test_y = (torch.from_numpy(split[key]) for key in DIGITS_SPLIT)
    max_value = 16.0
    mean, std = channel_stats(train_x, max_value)
    return ArrayDataset(name="digits", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                        num_classes=10, max_value=max_value, mean=mean, std=std)


DIGITS_SPLIT = ("train_x", "train_y", "test_x", "test_y")
DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED = 0.2, 0  # a stratified split's test fraction and its random_state


def digits_split() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = data.images.astype(np.uint8)[:, None]  # values 0..16
    labels = data.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return dict(zip(DIGITS_SPLIT, (train_x, train_y, test_x, test_y)))


def read_digits_split(cache: Path) -> dict[str, np.ndarray] | None:
    """The cached split, or None where there is none or it is not whole (it is made again)."""
    try:
        with np.load(cache) as arrays:
            return {key: arrays[key] for key in DIGITS_SPLIT}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_digits_split(cache: Path, split: dict[str, np.ndarray]) -> None:
    """Atomically (readers see the whole file or none); a data_dir that is missing or cannot be written goes
    without (it is not made: a path given for a source that downloads nothing is no request for a folder)."""
    try:
        write_atomic(cache, lambda f: np.savez(f, **split))
    except OSError:
        pass


# --- IDX files (MNIST, Fashion-MNIST) ---------------------------------------------------------


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an uncompressed or gzipped IDX file of unsigned bytes with `ndim` dimensions."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    expected_magic = (_IDX_UBYTE << 8) | ndim
    header_size = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != expected_magic:
        found = "truncated header" if magic is None else f"magic 0x{magic:08x}"
        raise ValueError(f"{path}: not a {ndim}-d uint8 IDX file ({found}, expected magic 0x{expected_magic:08x})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) != header_size + int(np.prod(dims)):
        raise ValueError(
            f"{path}: corrupt IDX file (header says {dims} = {int(np.prod(dims))} bytes, "
            f"found {len(raw) - header_size})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path) -> bool:
    stems = [stem for pair in _IDX_FILES.values() for stem in pair]
    return all(_find_idx_file(directory, stem) is not None for stem in stems)


def _read_idx_split(directory: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_stem, label_stem = _IDX_FILES[split]
    images = read_idx(_find_idx_file(directory, image_stem), ndim=3)
    labels = read_idx(_find_idx_file(directory, label_stem), ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"{directory}: {split} split has {len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _load_idx_dataset(
    name: str,
    data_dir: Path,
    download: bool,
    torchvision_class: str,
    search_dirs: list[Path],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> ArrayDataset:
    switch("dataset.download", download)
    directory = next((d for d in search_dirs if _has_idx_files(d)), None)
    if directory is None:
        looked = " and ".join(str(d) for d in search_dirs)
        _download_or_explain(
            name, torchvision_class, data_dir, download, hint=f"looked for the 4 IDX files in {looked}"
        )
        directory = data_dir / torchvision_class / "raw"
    train_x, train_y = _read_idx_split(directory, "train")
    test_x, test_y = _read_idx_split(directory, "test")
    return ArrayDataset(name, train_x, train_y, test_x, test_y, 10, 255.0, mean, std)


def mnist(data_dir: str | Path, download: bool = True) -> ArrayDataset:
    """MNIST from data_dir/MNIST/raw (IDX files, gzipped or not), downloaded there when missing."""
    data_dir = Path(data_dir)
    return _load_idx_dataset(
        "mnist",
        data_dir,
        download,
        torchvision_class="MNIST",
        search_dirs=[data_dir / "MNIST" / "raw"],
        mean=(0.1307,),
        std=(0.3081,),
    )


def fashion_mnist(data_dir: str | Path, download: bool = True) -> ArrayDataset:
    """Fashion-MNIST from Debian's dataset-fashion-mnist, else data_dir/FashionMNIST/raw, else downloaded."""
    data_dir = Path(data_dir)
    return _load_idx_dataset(
        "fashion_mnist",
        data_dir,
        download,
        torchvision_class="FashionMNIST",
        search_dirs=[DEBIAN_FASHION_MNIST_DIR, data_dir / "FashionMNIST" / "raw"],
        mean=(0.2860,),
        std=(0.3530,),
    )


# --- CIFAR python batches ---------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    torchvision_class: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_CIFAR = {
    "cifar10": _CifarLayout(
        torchvision_class="CIFAR10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _CifarLayout(
        torchvision_class="CIFAR100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def read_cifar_batch(path: str | Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR batch: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    The files are Python 2 pickles; like torchvision we unpickle with latin1 and
    accept both str and bytes keys (the latter appear when re-pickled from Python 3).
    """
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry = {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"{path}: not a CIFAR batch (keys {sorted(entry)}, expected 'data' and {label_key!r})")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: corrupt CIFAR batch (data {data.shape}, {len(labels)} labels)")
    # Each row is the 1024 red, then green, then blue values of a row-major 32x32 image.
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_files(directory: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [read_cifar_batch(directory / file, label_key) for file in files]
    x = np.concatenate([images for images, _ in batches])
    y = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(x), torch.from_numpy(y)


def _load_cifar(name: str, data_dir: Path, download: bool) -> ArrayDataset:
    switch("dataset.download", download)
    layout = _CIFAR[name]
    directory = data_dir / layout.folder
    if not all((directory / file).is_file() for file in layout.train_files + layout.test_files):
        _download_or_explain(name, layout.torchvision_class, data_dir, download, hint=f"looked for {layout.folder}/")
    train_x, train_y = _read_cifar_files(directory, layout.train_files, layout.label_key)
    test_x, test_y = _read_cifar_files(directory, layout.test_files, layout.label_key)
    return ArrayDataset(
        name, train_x, train_y, test_x, test_y, layout.num_classes, 255.0, layout.mean, layout.std
    )


def cifar10(data_dir: str | Path, download: bool = True) -> ArrayDataset:
    """CIFAR-10 from data_dir/cifar-10-batches-py, downloaded there when missing."""
    return _load_cifar("cifar10", Path(data_dir), download)


def cifar100(data_dir: str | Path, download: bool = True) -> ArrayDataset:
    """CIFAR-100 (fine labels) from data_dir/cifar-100-python, downloaded there when missing."""
    return _load_cifar("cifar100", Path(data_dir), download)

