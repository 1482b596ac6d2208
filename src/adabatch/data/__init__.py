"""Datasets, seeded index streams, device-side augmentation and micro-batching."""

from adabatch.data.augment import AUGMENTATIONS, Augmentation, CropFlip, FlipResizedCrop, build_augmentation
from adabatch.data.batches import Batch, Examples, Layout, TrainingData, evaluation_batches, normalize, plan_layout
from adabatch.data.sources import (
    DATASET_SHAPES,
    DATASETS,
    SHIPPED_SOURCES,
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

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DATASET_SHAPES",
    "ArrayDataset",
    "Augmentation",
    "Batch",
    "CropFlip",
    "DatasetUnavailable",
    "Examples",
    "FlipResizedCrop",
    "IndexStream",
    "Layout",
    "SHIPPED_SOURCES",
    "TrainingData",
    "build_augmentation",
    "cifar10",
    "cifar100",
    "digits",
    "evaluation_batches",
    "fashion_mnist",
    "load_dataset",
    "mnist",
    "normalize",
    "plan_layout",
]
