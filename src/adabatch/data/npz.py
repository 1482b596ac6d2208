"""A dataset saved with numpy.savez: x_train, y_train, x_test, y_test in one .npz file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from adabatch.data.sources import ArrayDataset, DatasetUnavailable, channel_stats
from adabatch.errors import one_line

KEYS = ("x_train", "y_train", "x_test", "y_test")
_SAVE = "save x_train, y_train, x_test, y_test with numpy.savez"


def npz(path: str | Path, num_classes: int | None = None) -> ArrayDataset:
    """The arrays of a .npz file as a dataset named after the file's stem.

    Images are uint8 (max_value 255) or floating point, already scaled (stored as float32,
    max_value 1.0), of shape (N, H, W) (one channel) or (N, C, H, W). Labels are integers in
    [0, num_classes); num_classes defaults to the largest label of both splits plus one.
    Everything a file can get wrong raises DatasetUnavailable with a one-line message.
    """
    path = Path(path)
    where = f"dataset.path={path}"
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise DatasetUnavailable(f"{where} {problem}; point it at a .npz file ({_SAVE})")
    arrays = _read_arrays(path, where)
    train_x = _images(arrays, "x_train", where)
    test_x = _images(arrays, "x_test", where)
    if train_x.dtype != test_x.dtype:
        raise DatasetUnavailable(
            f"{where} has x_train of dtype {arrays['x_train'].dtype} but x_test of dtype {arrays['x_test'].dtype}; "
            "store both as uint8 (0..255) or both as floating point (already scaled)"
        )
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetUnavailable(
            f"{where} has x_train images of shape (C, H, W) = {tuple(train_x.shape[1:])} but x_test images of "
            f"{tuple(test_x.shape[1:])}; both splits need images of one shape"
        )
    train_y = _labels(arrays, "y_train", len(train_x), where)
    test_y = _labels(arrays, "y_test", len(test_x), where)
    num_classes = _num_classes(num_classes, train_y, test_y, where)
    max_value = 255.0 if train_x.dtype == np.uint8 else 1.0
    mean, std = channel_stats(train_x, max_value)
    return ArrayDataset(
        name=path.stem,
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=num_classes,
        max_value=max_value,
        mean=mean,
        std=std,
    )


def _read_arrays(path: Path, where: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise DatasetUnavailable(f"{where} holds a single array (.npy), not a .npz archive of named arrays; {_SAVE}")
    if not magic.startswith(b"PK"):
        raise DatasetUnavailable(f"{where} is not a .npz file (it does not start like a zip archive); {_SAVE}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetUnavailable(f"{where} is not a .npz file ({type(error).__name__}: {one_line(error)}); {_SAVE}") from error
    with loaded:
        names = list(loaded.files)
        missing = [key for key in KEYS if key not in names]
        if missing:
            which = "array" if len(missing) == 1 else "arrays"
            held = ", ".join(names) if names else "no arrays"
            raise DatasetUnavailable(
                f"{where} has no {which} {', '.join(repr(key) for key in missing)} (it holds {held}); {_SAVE}"
            )
        arrays = {}
        for key in KEYS:
            try:
                arrays[key] = loaded[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise DatasetUnavailable(
                    f"{where} array {key!r} cannot be read ({type(error).__name__}: {one_line(error)}); "
                    f"store plain numeric arrays ({_SAVE})"
                ) from error
    return arrays


def _images(arrays: dict[str, np.ndarray], key: str, where: str) -> np.ndarray:
    x = arrays[key]
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DatasetUnavailable(f"{where} array {key!r} holds NaN or infinite values; store finite pixel values")
    else:
        raise DatasetUnavailable(
            f"{where} array {key!r} has dtype {x.dtype}; store images as uint8 (0..255, e.g. x.astype(numpy.uint8)) "
            "or as floating point already scaled to [0, 1]"
        )
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DatasetUnavailable(f"{where} array {key!r} has shape {x.shape}; store images as (N, H, W) or (N, C, H, W)")
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise DatasetUnavailable(
            f"{where} array {key!r} has shape {x.shape}, which looks channels-last (N, H, W, C); "
            "store images as (N, C, H, W), e.g. x.transpose(0, 3, 1, 2)"
        )
    if len(x) == 0 or 0 in x.shape:
        raise DatasetUnavailable(f"{where} array {key!r} has shape {x.shape}; each split needs at least one image")
    return np.ascontiguousarray(x)


def _labels(arrays: dict[str, np.ndarray], key: str, count: int, where: str) -> np.ndarray:
    y = arrays[key]
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetUnavailable(
            f"{where} array {key!r} has dtype {y.dtype}; store labels as integer class indices "
            "(e.g. y.astype(numpy.int64))"
        )
    if y.ndim != 1 or len(y) != count:
        x_key = "x" + key[1:]
        raise DatasetUnavailable(
            f"{where} array {key!r} has shape {y.shape} but {x_key!r} holds {count} images; "
            f"store one label per image, shape ({count},)"
        )
    if y.min() < 0:
        raise DatasetUnavailable(f"{where} array {key!r} holds label {int(y.min())}; labels must be class indices >= 0")
    return y.astype(np.int64)


def _num_classes(num_classes: int | None, train_y: np.ndarray, test_y: np.ndarray, where: str) -> int:
    largest = max(int(train_y.max()), int(test_y.max()))
    if num_classes is None:
        return largest + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise DatasetUnavailable(
            f"dataset.num_classes={num_classes!r} is not a positive integer; set it to the number of classes "
            "or to null (the largest label plus one)"
        )
    for key, y in (("y_train", train_y), ("y_test", test_y)):
        if y.max() >= num_classes:
            raise DatasetUnavailable(
                f"{where} array {key!r} holds label {int(y.max())}, outside [0, dataset.num_classes={num_classes}); "
                f"raise dataset.num_classes to at least {largest + 1} or set it to null"
            )
    return int(num_classes)
