"""Datasets, seeded index streams, device-side augmentation and micro-batching."""

from adabatch.data.augment import AUGMENTATIONS, Augmentation, CropFlip, FlipResizedCrop, build_augmentation
from adabatch.data.batches import Batch, Examples, Layout, TrainingData, evaluation_batches, normalize, plan_layout
from adabatch.data.sources import DATASET_SHAPES, DATASETS, ArrayDataset, DatasetUnavailable, load_dataset
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
    "TrainingData",
    "build_augmentation",
    "evaluation_batches",
    "load_dataset",
    "normalize",
    "plan_layout",
]
