"""Datasets, seeded index streams, device-side augmentation and micro-batching.

Dataset sources (each returns an ArrayDataset; a config builds one with `_target_: adabatch.data.<name>`):
digits, mnist, fashion_mnist, cifar10, cifar100, npz, image_folder, torchvision and text (token windows
of a UTF-8 file), also by the name of their config in configs/dataset/ through load_dataset. The
functions npz, image_folder and text hide the submodules of the same name as attributes of this
package: import those modules with `from adabatch.data.npz import ...`.
"""

from adabatch.data.augment import AUGMENTATIONS, Augmentation, CropFlip, FlipResizedCrop, build_augmentation
from adabatch.data.batches import Batch, Examples, Layout, TrainingData, evaluation_batches, normalize, plan_layout
from adabatch.data.image_folder import image_folder
from adabatch.data.npz import npz
from adabatch.data.sources import (
    ArrayDataset,
    DatasetUnavailable,
    cifar10,
    cifar100,
    digits,
    fashion_mnist,
    load_dataset,
    mnist,
)
from adabatch.data.stream import IndexStream
from adabatch.data.text import TextDataset, check_text_model, text
from adabatch.data.torchvision_source import torchvision

__all__ = [
    "AUGMENTATIONS",
    "ArrayDataset",
    "Augmentation",
    "Batch",
    "CropFlip",
    "DatasetUnavailable",
    "Examples",
    "FlipResizedCrop",
    "IndexStream",
    "Layout",
    "TextDataset",
    "TrainingData",
    "build_augmentation",
    "cifar10",
    "cifar100",
    "check_text_model",
    "digits",
    "evaluation_batches",
    "fashion_mnist",
    "image_folder",
    "load_dataset",
    "mnist",
    "normalize",
    "npz",
    "plan_layout",
    "text",
    "torchvision",
]
