"""Any torchvision.datasets class as a dataset (SVHN, KMNIST, EMNIST, QMNIST, USPS, FakeData, ...).

The module is not called `torchvision` so that it does not hide the package of that name; its one
source is exported as `adabatch.data.torchvision`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adabatch.checks import switch
from adabatch.components import Parameters
from adabatch.data.sources import ArrayDataset, DatasetUnavailable, channel_stats
from adabatch.errors import one_line

# Shown as examples when dataset.class_name is unknown (those of them this torchvision has).
EXAMPLE_CLASSES = ("CIFAR10", "EMNIST", "FakeData", "FashionMNIST", "KMNIST", "MNIST", "QMNIST", "STL10", "SVHN", "USPS")


def torchvision(
    class_name: str, data_dir: str | Path, download: bool = True, options: Mapping[str, Any] | None = None
) -> ArrayDataset:
    """torchvision.datasets.<class_name>'s train and test splits as a uint8 dataset.

    Each split is built with the keyword arguments the class (or, through **kwargs, its bases)
    accepts: root=data_dir, train=True/False (else split="train"/"test"), download, plus `options`
    (e.g. {"split": "balanced"} for EMNIST). A class with neither train nor split (FakeData) gives
    the same examples to both splits. Arrays are read from the objects' .data and .targets (or
    .labels) when those hold uint8 images and integer labels, else by iterating over the items (PIL
    images or tensors). num_classes is len(.classes), else .num_classes, else the largest label
    plus one. Every failure raises DatasetUnavailable with a one-line message.
    """
    switch("dataset.download", download)
    dataset_class = _dataset_class(class_name)
    options = _plain_options(options)
    accepted = Parameters(dataset_class).named  # following **kwargs into the bases: EMNIST passes train on to MNIST
    base: dict[str, Any] = {}
    if "root" in accepted:
        base["root"] = str(data_dir)
    if "download" in accepted:
        base["download"] = bool(download)
    if "train" in accepted:
        splits = {"train": {"train": True}, "test": {"train": False}}
    elif "split" in accepted:
        splits = {"train": {"split": "train"}, "test": {"split": "test"}}
    else:
        splits = {"train": {}, "test": {}}
    _check_options(options, set(base) | set(splits["train"]))

    arrays, objects = {}, {}
    for split, selection in splits.items():
        if split == "test" and not selection:  # no split argument: the train object serves both
            objects[split], arrays[split] = objects["train"], tuple(array.copy() for array in arrays["train"])
            continue
        arguments = {**base, **selection, **options}
        objects[split] = _construct(dataset_class, class_name, arguments, data_dir, download, options)
        arrays[split] = _split_arrays(objects[split], f"torchvision.datasets.{class_name} {split} split")
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    if train_x.shape[1:] != test_x.shape[1:]:
        if {train_x.shape[1], test_x.shape[1]} == {1, 3} and train_x.shape[2:] == test_x.shape[2:]:
            train_x, test_x = _to_rgb(train_x), _to_rgb(test_x)
        else:
            raise DatasetUnavailable(
                f"torchvision.datasets.{class_name} has train images of shape (C, H, W) = {train_x.shape[1:]} but "
                f"test images of {test_x.shape[1:]}; choose dataset.options that give both splits one image shape"
            )
    num_classes = _num_classes(objects["train"], train_y, test_y, class_name)
    mean, std = channel_stats(train_x, 255.0)
    return ArrayDataset(
        name=class_name.lower(),
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=num_classes,
        max_value=255.0,
        mean=mean,
        std=std,
    )


# --- the class and its arguments ---------------------------------------------------------------


def _vision_dataset_classes() -> dict[str, type]:
    datasets = importlib.import_module("torchvision.datasets")
    from torchvision.datasets.vision import VisionDataset

    return {
        name: value
        for name in dir(datasets)
        if isinstance(value := getattr(datasets, name), type)
        and issubclass(value, VisionDataset)
        and value is not VisionDataset
    }


def _dataset_class(class_name: object) -> type:
    classes = _vision_dataset_classes()
    if isinstance(class_name, str) and class_name in classes:
        return classes[class_name]
    examples = ", ".join(name for name in EXAMPLE_CLASSES if name in classes)
    guess = ""
    if isinstance(class_name, str):
        by_lower = {name.lower(): name for name in classes}
        close = by_lower.get(class_name.lower()) or next(
            iter(difflib.get_close_matches(class_name.lower(), list(by_lower), n=1)), None
        )
        if close is not None:
            guess = f"did you mean {by_lower.get(close, close)!r}? "
    raise DatasetUnavailable(
        f"dataset.class_name={class_name!r} is not a dataset class of torchvision.datasets; {guess}"
        f"choose one of its {len(classes)} VisionDataset classes, such as {examples}"
    )


def _plain_options(options: object) -> dict[str, Any]:
    if options is None:
        return {}
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(options):
            options = OmegaConf.to_container(options, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
        raise DatasetUnavailable(
            f"dataset.options={options!r} is not a mapping of keyword arguments; write it as e.g. {{split: balanced}}"
        )
    return dict(options)


_SET_BY_SOURCE = {
    "root": "root=data_dir; set data_dir instead",
    "download": "set dataset.download instead",
    "train": "train=True for the train split, False for the test split",
    "split": "split='train' for the train split, 'test' for the test split",
}


def _check_options(options: dict[str, Any], set_by_source: set[str]) -> None:
    conflicts = sorted(set_by_source & set(options))
    if conflicts:
        key = conflicts[0]
        raise DatasetUnavailable(
            f"dataset.options sets {key}={options[key]!r}, which this source sets itself "
            f"({_SET_BY_SOURCE[key]}); remove it from dataset.options"
        )


def _construct(
    dataset_class: type, class_name: str, arguments: dict[str, Any], data_dir: str | Path, download: bool,
    options: dict[str, Any],
) -> Any:
    try:
        return dataset_class(**arguments)
    except Exception as error:  # whatever the class raises: missing files, failed downloads, bad options
        call = f"torchvision.datasets.{class_name}({', '.join(f'{key}={value!r}' for key, value in arguments.items())})"
        if isinstance(error, (TypeError, ValueError)) and not isinstance(error, OSError):
            fix = f"check dataset.options={options!r} against the arguments of torchvision.datasets.{class_name}"
        elif download:
            fix = (
                f"with dataset.download=true it downloads into data_dir={data_dir}: run it with network access, "
                f"or copy torchvision's {class_name} files there"
            )
        else:
            fix = (
                f"with dataset.download=false its files must already be under data_dir={data_dir}: set "
                f"dataset.download=true with network access, or copy torchvision's {class_name} files there"
            )
        raise DatasetUnavailable(f"{call} failed ({type(error).__name__}: {one_line(error)}); {fix}") from error


# --- reading the arrays ----------------------------------------------------------------------------


def _split_arrays(dataset: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, C, H, W) images and int64 (N,) labels of one split."""
    fast = _attribute_arrays(dataset)
    if fast is not None:
        return fast
    return _item_arrays(dataset, where)


def _as_numpy(value: object) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value)
        except ValueError:
            return None
    return None


def _attribute_arrays(dataset: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """.data and .targets (or .labels) when they hold uint8 images and one integer label each; else None."""
    if getattr(dataset, "transform", None) is not None or getattr(dataset, "target_transform", None) is not None:
        return None  # the items differ from the raw arrays
    data = _as_numpy(getattr(dataset, "data", None))
    labels = getattr(dataset, "targets", None)
    labels = _as_numpy(labels if labels is not None else getattr(dataset, "labels", None))
    if data is None or labels is None or data.dtype != np.uint8 or data.ndim not in (3, 4):
        return None
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer) or len(data) == 0:
        return None
    if data.ndim == 3:
        data = data[:, None]
    elif data.shape[-1] in (1, 3):
        data = data.transpose(0, 3, 1, 2)  # NHWC
    return np.ascontiguousarray(data), labels.astype(np.int64)


def _item_arrays(dataset: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        count = len(dataset)
    except TypeError as error:
        raise DatasetUnavailable(f"{where} has no length; this source needs a map-style dataset") from error
    if count == 0:
        raise DatasetUnavailable(f"{where} holds no examples; choose dataset.options that select some")
    images, labels = [], []
    for index in range(count):
        try:
            item = dataset[index]
        except Exception as error:  # the class's own reading of its files
            raise DatasetUnavailable(
                f"{where} item {index} cannot be read ({type(error).__name__}: {one_line(error)}); "
                "check the dataset's files"
            ) from error
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetUnavailable(
                f"{where} item {index} is a {type(item).__name__}, not an (image, label) pair; "
                "this source needs an image classification dataset"
            )
        image, label = item
        images.append(_image_array(image, f"{where} item {index}"))
        labels.append(_label(label, f"{where} item {index}"))
        if images[-1].shape[1:] != images[0].shape[1:]:
            raise DatasetUnavailable(
                f"{where} item {index} is an image of (H, W) = {images[-1].shape[1:]} but item 0 of "
                f"{images[0].shape[1:]}; all images must share one size"
            )
    if len({image.shape[0] for image in images}) > 1:
        if {image.shape[0] for image in images} != {1, 3}:
            raise DatasetUnavailable(f"{where} mixes images of {sorted({image.shape[0] for image in images})} channels")
        images = [np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image for image in images]
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _image_array(image: object, where: str) -> np.ndarray:
    """One image as uint8 (C, H, W): PIL (mode L: 1 channel, else RGB), or a CHW tensor / HWC array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode.startswith(("I", "F")):
            raise DatasetUnavailable(f"{where} is a PIL image of mode {image.mode}; this source reads 8-bit images")
        array = np.asarray(image if image.mode == "L" else image.convert("RGB"))
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        channels_last = False
    elif isinstance(image, np.ndarray):
        array, channels_last = image, True
    else:
        raise DatasetUnavailable(
            f"{where} has an image of type {type(image).__name__}; this source reads PIL images, tensors and arrays"
        )
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and channels_last:
        array = array.transpose(2, 0, 1)
    elif array.ndim != 3:
        raise DatasetUnavailable(f"{where} has an image of shape {array.shape}; expected (H, W) or three dimensions")
    if np.issubdtype(array.dtype, np.floating):  # ToTensor's [0, 1] floats
        array = np.clip(np.round(array * 255.0), 0, 255)
    elif array.dtype != np.uint8:
        raise DatasetUnavailable(f"{where} has an image of dtype {array.dtype}; expected uint8 or floats in [0, 1]")
    return np.ascontiguousarray(array.astype(np.uint8))


def _label(label: object, where: str) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label.item())
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise DatasetUnavailable(
        f"{where} has a label of type {type(label).__name__} ({one_line(repr(label))[:80]}), not a class index; "
        "this source needs an image classification dataset"
    )


def _to_rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images


def _num_classes(dataset: Any, train_y: np.ndarray, test_y: np.ndarray, class_name: str) -> int:
    classes = getattr(dataset, "classes", None)
    declared = getattr(dataset, "num_classes", None)
    if isinstance(classes, (list, tuple, dict)) and len(classes) > 0:
        num_classes = len(classes)
    elif isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        num_classes = declared
    else:
        num_classes = int(max(train_y.max(), test_y.max())) + 1
    for split, labels in (("train", train_y), ("test", test_y)):
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise DatasetUnavailable(
                f"torchvision.datasets.{class_name} {split} split has labels from {low} to {high}, outside "
                f"[0, {num_classes}) of its {num_classes} classes; choose dataset.options that give class indices"
            )
    return num_classes
