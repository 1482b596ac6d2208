"""A dataset of image files: root/train/<class>/<image> and root/test/<class>/<image>."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adabatch.data.sources import ArrayDataset, DatasetUnavailable, channel_stats
from adabatch.errors import one_line

_LAYOUT = "put the images in {root}/train/<class>/ and {root}/test/<class>/ (one folder per class)"


def image_folder(root: str | Path) -> ArrayDataset:
    """The images under root/train and root/test as a uint8 dataset named after root.

    The classes are the sub-folders of root/train in sorted order (torchvision's ImageFolder lists
    them and their images); root/test may hold any subset of them. Images are one channel when every
    image of both splits has PIL mode "L", else RGB (three channels), and must all share one size.
    Everything the folders can get wrong raises DatasetUnavailable with a one-line message.
    """
    root = Path(root)
    where = f"dataset.root={root}"
    layout = _LAYOUT.format(root=root)
    if not root.is_dir():
        problem = "is a file" if root.exists() else "does not exist"
        raise DatasetUnavailable(f"{where} {problem}; {layout}")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetUnavailable(f"{where} has no {split}/ folder; {layout}")
    train = _list_split(root, "train", where, layout, allow_empty=False)
    test = _list_split(root, "test", where, layout, allow_empty=True)
    unknown = [name for name in test.classes if name not in train.class_to_idx]
    if unknown:
        raise DatasetUnavailable(
            f"{where}: test class {unknown[0]!r} ({root / 'test' / unknown[0]}) has no folder in {root / 'train'}; "
            f"every test class needs training images (train classes: {', '.join(train.classes)})"
        )
    test_labels = [train.class_to_idx[test.classes[label]] for _, label in test.samples]
    if not test.samples:
        raise DatasetUnavailable(f"{where}: {root / 'test'} holds no images; {layout}")

    paths = [path for path, _ in train.samples] + [path for path, _ in test.samples]
    images = _read_images(paths, where)
    num_train = len(train.samples)
    train_x, test_x = torch.from_numpy(images[:num_train]), torch.from_numpy(images[num_train:])
    mean, std = channel_stats(train_x, 255.0)
    return ArrayDataset(
        name=root.name or root.resolve().name,
        train_x=train_x,
        train_y=torch.tensor([label for _, label in train.samples], dtype=torch.int64),
        test_x=test_x,
        test_y=torch.tensor(test_labels, dtype=torch.int64),
        num_classes=len(train.classes),
        max_value=255.0,
        mean=mean,
        std=std,
    )


def _list_split(root: Path, split: str, where: str, layout: str, allow_empty: bool):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root / split), allow_empty=allow_empty)
    except (OSError, ValueError) as error:  # FileNotFoundError: no class folders, or a class without images
        raise DatasetUnavailable(f"{where}: {split}/ is not an image folder ({one_line(error)}); {layout}") from error


def _read_images(paths: list[str], where: str) -> np.ndarray:
    """uint8 (N, C, H, W): C = 1 when every image has mode L, else 3 (RGB)."""
    from PIL import Image

    arrays, first = [], None
    for path in paths:
        try:
            with Image.open(path) as image:
                mode, size = image.mode, image.size
                if mode.startswith(("I", "F")):
                    raise DatasetUnavailable(
                        f"{where}: {path} has PIL mode {mode} (16-bit, 32-bit or float pixels); "
                        "save 8-bit images (mode L or RGB)"
                    )
                if first is None:
                    first = (path, size)
                elif size != first[1]:
                    raise DatasetUnavailable(
                        f"{where}: {path} is {size[0]}x{size[1]} (width x height) but {first[0]} is "
                        f"{first[1][0]}x{first[1][1]}; all images must share one size (resize them first)"
                    )
                arrays.append(np.asarray(image if mode == "L" else image.convert("RGB")))
        except OSError as error:  # PIL.UnidentifiedImageError, truncated files
            raise DatasetUnavailable(
                f"{where}: {path} cannot be read as an image ({type(error).__name__}: {one_line(error)}); "
                "replace or remove it"
            ) from error
    if all(array.ndim == 2 for array in arrays):
        return np.stack(arrays)[:, None]
    # PIL converts L to RGB by repeating the value in each channel; do the same for the gray images.
    rgb = [np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array for array in arrays]
    return np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2))
