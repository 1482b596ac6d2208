"""The dataset sources: the shipped ones by name, and the generic npz, image_folder and torchvision.

Every file is written in its genuine format under tmp_path; nothing is downloaded or mocked.
"""

import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from adabatch.components import build, shipped, shipped_names
from adabatch.data import (
    ArrayDataset,
    DatasetUnavailable,
    TrainingData,
    build_augmentation,
    digits,
    image_folder,
    load_dataset,
    mnist,
    normalize,
    npz,
    sources,
    torchvision,
    torchvision_source,
)
from adabatch.data.standin import IDX_STEMS, write_idx, write_idx_dir
from adabatch.run.loop import train


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetUnavailable) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message == message.strip()
    return message


def float64_stats(images: np.ndarray, max_value: float) -> tuple[np.ndarray, np.ndarray]:
    scaled = images.astype(np.float64) / max_value
    return scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))


def assert_stats(dataset: ArrayDataset, train_x: np.ndarray, max_value: float) -> None:
    mean, std = float64_stats(train_x, max_value)
    assert len(dataset.mean) == len(dataset.std) == train_x.shape[1]
    np.testing.assert_allclose(dataset.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(dataset.std, std, rtol=1e-12)


# --- shipped sources -----------------------------------------------------------------------------


def test_shipped_sources_are_the_configs_of_the_dataset_group():
    assert shipped_names("dataset") == (
        "cifar10", "cifar100", "digits", "fashion_mnist", "image_folder", "mnist", "npz", "text", "torchvision")
    assert shipped("dataset", "digits") is digits and shipped("dataset", "mnist") is mnist


def test_load_dataset_passes_data_dir_and_download_only_to_sources_taking_them(tmp_path, monkeypatch):
    arrays = {
        "train_x": np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
        "train_y": np.array([3, 1], dtype=np.uint8),
        "test_x": np.zeros((1, 28, 28), dtype=np.uint8),
        "test_y": np.array([9], dtype=np.uint8),
    }
    write_idx_dir(tmp_path / "MNIST" / "raw", arrays, compress=False)
    by_name, direct = load_dataset("mnist", tmp_path, download=False), mnist(str(tmp_path), download=False)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(by_name, field), getattr(direct, field))
    assert (by_name.name, by_name.mean, by_name.std) == ("mnist", (0.1307,), (0.3081,))
    # digits takes neither (test_data.py loads it by name); a source without them is called bare:
    calls = []
    monkeypatch.setattr(sys.modules[__name__], "bare_source", lambda: calls.append("bare") or direct, raising=False)
    bare = build("dataset", {"_target_": f"{__name__}.bare_source"}, offered={"data_dir": tmp_path, "download": False})
    assert bare is direct and calls == ["bare"]


@pytest.mark.parametrize("channels", [1, 3])
def test_channel_stats_in_chunks_match_one_pass(monkeypatch, channels):
    images = np.random.default_rng(0).integers(0, 256, (50, channels, 6, 7), dtype=np.uint8)
    one_pass = sources.channel_stats(images, 255.0)
    mean, std = float64_stats(images, 255.0)
    assert one_pass == (tuple(mean), tuple(std))  # exactly numpy's, as digits always had
    monkeypatch.setattr(sources, "_STATS_CHUNK_ELEMENTS", 3 * images[0].size)  # 17 chunks
    chunked = sources.channel_stats(torch.from_numpy(images), 255.0)
    np.testing.assert_allclose(chunked, one_pass, rtol=1e-13)


# --- npz -----------------------------------------------------------------------------------------


def test_npz_uint8_images_without_channels(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (9, 5, 4), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 3, 4, 0, 1, 2, 3], dtype=np.int32),
        "x_test": rng.integers(0, 256, (3, 5, 4), dtype=np.uint8),
        "y_test": np.array([6, 0, 1], dtype=np.uint8),  # the largest label is only in the test split
    }
    np.savez(tmp_path / "tiny_set.npz", **arrays)
    dataset = npz(tmp_path / "tiny_set.npz")
    assert dataset.name == "tiny_set" and dataset.num_classes == 7 and dataset.max_value == 255.0
    assert dataset.input_shape == (1, 5, 4) and dataset.train_x.dtype == torch.uint8
    assert torch.equal(dataset.train_x, torch.from_numpy(arrays["x_train"][:, None]))
    assert torch.equal(dataset.test_x, torch.from_numpy(arrays["x_test"][:, None]))
    assert dataset.train_y.dtype == dataset.test_y.dtype == torch.int64
    assert dataset.train_y.tolist() == arrays["y_train"].tolist() and dataset.test_y.tolist() == [6, 0, 1]
    assert_stats(dataset, arrays["x_train"][:, None], 255.0)


def test_npz_float_images_with_channels_and_num_classes(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {
        "x_train": rng.random((6, 3, 4, 5)),  # float64, already scaled
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": rng.random((2, 3, 4, 5)),
        "y_test": np.array([2, 1]),
    }
    path = tmp_path / "floats.npz"
    np.savez_compressed(path, **arrays)
    dataset = npz(str(path), num_classes=12)
    assert dataset.num_classes == 12 and dataset.max_value == 1.0 and dataset.input_shape == (3, 4, 5)
    assert dataset.train_x.dtype == torch.float32
    assert torch.equal(dataset.train_x, torch.from_numpy(arrays["x_train"].astype(np.float32)))
    assert torch.equal(dataset.test_x, torch.from_numpy(arrays["x_test"].astype(np.float32)))
    assert dataset.train_y.tolist() == [0, 1, 2, 0, 1, 2] and dataset.test_y.tolist() == [2, 1]
    assert_stats(dataset, arrays["x_train"].astype(np.float32), 1.0)
    x = normalize(dataset.test_x, dataset)
    expected = (arrays["x_test"].astype(np.float32) - np.float32(dataset.mean[1])) / np.float32(dataset.std[1])
    np.testing.assert_allclose(x[:, 1].numpy(), expected[:, 1], rtol=1e-5)
    data = TrainingData(dataset, build_augmentation("crop_flip"), seed=0, device="cpu")
    batch_x, batch_y = data.examples(data.draw(5))
    assert batch_x.shape == (5, 3, 4, 5) and batch_x.dtype == torch.float32 and batch_y.dtype == torch.int64


def test_npz_missing_array_is_named_with_what_the_file_holds(tmp_path):
    path = tmp_path / "y.npz"
    np.savez(path, x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.zeros(2, int), x_test=np.zeros((1, 3, 3), np.uint8))
    assert one_line_error(npz, path) == (
        f"dataset.path={path} has no array 'y_test' (it holds x_train, y_train, x_test); "
        "save x_train, y_train, x_test, y_test with numpy.savez"
    )


def good_npz_arrays() -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((4, 3, 3), np.uint8),
        "y_train": np.array([0, 1, 2, 1]),
        "x_test": np.zeros((2, 3, 3), np.uint8),
        "y_test": np.array([1, 0]),
    }


NPZ_ERRORS = {  # case: (arrays replaced in good_npz_arrays, None to drop one; part of the message)
    "missing two keys": (
        {"x_test": None, "y_test": None},
        "has no arrays 'x_test', 'y_test' (it holds x_train, y_train)",
    ),
    "integer images": (
        {"x_train": np.zeros((4, 3, 3), np.int64)},
        "array 'x_train' has dtype int64; store images as uint8",
    ),
    "images of one dimension": (
        {"x_test": np.zeros(2, np.uint8)},
        "array 'x_test' has shape (2,); store images as (N, H, W) or (N, C, H, W)",
    ),
    "channels last": (
        {"x_train": np.zeros((4, 8, 8, 3), np.uint8), "x_test": np.zeros((2, 8, 8, 3), np.uint8)},
        "array 'x_train' has shape (4, 8, 8, 3), which looks channels-last (N, H, W, C)",
    ),
    "empty split": (
        {"x_test": np.zeros((0, 3, 3), np.uint8), "y_test": np.zeros(0, int)},
        "array 'x_test' has shape (0, 1, 3, 3); each split needs at least one image",
    ),
    "splits of different shapes": (
        {"x_test": np.zeros((2, 4, 3), np.uint8)},
        "x_train images of shape (C, H, W) = (1, 3, 3) but x_test images of (1, 4, 3)",
    ),
    "splits of different dtypes": (
        {"x_test": np.zeros((2, 3, 3), np.float32)},
        "has x_train of dtype uint8 but x_test of dtype float32",
    ),
    "NaN pixels": (
        {"x_train": np.full((4, 3, 3), np.nan, np.float32), "x_test": np.zeros((2, 3, 3), np.float32)},
        "array 'x_train' holds NaN or infinite values",
    ),
    "float labels": (
        {"y_train": np.array([0.0, 1.0, 2.0, 1.0])},
        "array 'y_train' has dtype float64; store labels as integer class indices",
    ),
    "one label too few": (
        {"y_test": np.array([1])},
        "array 'y_test' has shape (1,) but 'x_test' holds 2 images; store one label per image, shape (2,)",
    ),
    "labels of two dimensions": (
        {"y_train": np.zeros((4, 1), int)},
        "array 'y_train' has shape (4, 1) but 'x_train' holds 4 images",
    ),
    "negative label": (
        {"y_test": np.array([1, -1])},
        "array 'y_test' holds label -1; labels must be class indices >= 0",
    ),
    "object arrays": (
        {"y_train": np.array([0, 1, "a", 2], dtype=object)},
        "array 'y_train' cannot be read (ValueError: Object arrays cannot be loaded when allow_pickle=False)",
    ),
}


@pytest.mark.parametrize("case", list(NPZ_ERRORS))
def test_npz_errors_name_the_file_and_the_array(tmp_path, case):
    changes, expected = NPZ_ERRORS[case]
    arrays = {key: value for key, value in {**good_npz_arrays(), **changes}.items() if value is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    message = one_line_error(npz, path)
    assert message.startswith(f"dataset.path={path} ") or message.startswith(f"dataset.path={path}:")
    assert expected in message


def test_npz_label_outside_num_classes(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, **good_npz_arrays())
    assert npz(path, num_classes=3).num_classes == 3
    message = one_line_error(npz, path, num_classes=2)
    assert message == (
        f"dataset.path={path} array 'y_train' holds label 2, outside [0, dataset.num_classes=2); "
        "raise dataset.num_classes to at least 3 or set it to null"
    )
    for bad in (0, -3, 2.5, "10", True):
        assert f"dataset.num_classes={bad!r} is not a positive integer" in one_line_error(npz, path, num_classes=bad)


def test_npz_missing_or_unreadable_files(tmp_path):
    missing = tmp_path / "nowhere" / "set.npz"
    assert one_line_error(npz, missing) == (
        f"dataset.path={missing} does not exist; point it at a .npz file "
        "(save x_train, y_train, x_test, y_test with numpy.savez)"
    )
    assert one_line_error(npz, tmp_path).startswith(f"dataset.path={tmp_path} is a folder; ")
    text = tmp_path / "notes.npz"
    text.write_text("x_train,y_train\n1,2\n")
    assert one_line_error(npz, text).startswith(f"dataset.path={text} is not a .npz file (it does not start like a zip")
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **good_npz_arrays())
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert one_line_error(npz, truncated).startswith(f"dataset.path={truncated} is not a .npz file (BadZipFile: ")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    assert one_line_error(npz, single).startswith(f"dataset.path={single} holds a single array (.npy), not a .npz")


def test_npz_through_hydra_instantiate(tmp_path):
    np.savez(tmp_path / "set.npz", **good_npz_arrays())
    config = OmegaConf.create({"_target_": "adabatch.data.npz", "path": str(tmp_path / "set.npz"), "num_classes": None})
    dataset = instantiate(config)
    assert dataset.name == "set" and dataset.num_classes == 3


# --- image_folder ----------------------------------------------------------------------------------


def write_images(root, split, class_name, images, mode):
    folder = root / split / class_name
    folder.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(images):
        Image.fromarray(array, mode=None).convert(mode).save(folder / f"{i:02d}.png")


def test_image_folder_grayscale_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    images = {name: rng.integers(0, 256, (count, 6, 5), dtype=np.uint8) for name, count in (("cat", 3), ("dog", 2), ("emu", 2))}
    tests = {name: rng.integers(0, 256, (count, 6, 5), dtype=np.uint8) for name, count in (("cat", 1), ("emu", 2))}
    for name, arrays in images.items():
        write_images(tmp_path / "pets", "train", name, arrays, "L")
    for name, arrays in tests.items():
        write_images(tmp_path / "pets", "test", name, arrays, "L")

    dataset = image_folder(tmp_path / "pets")

    assert dataset.name == "pets" and dataset.num_classes == 3 and dataset.max_value == 255.0
    assert dataset.input_shape == (1, 6, 5) and dataset.train_x.dtype == torch.uint8
    expected_train = np.concatenate([images["cat"], images["dog"], images["emu"]])[:, None]
    assert torch.equal(dataset.train_x, torch.from_numpy(expected_train))
    assert dataset.train_y.tolist() == [0, 0, 0, 1, 1, 2, 2] and dataset.train_y.dtype == torch.int64
    assert torch.equal(dataset.test_x, torch.from_numpy(np.concatenate([tests["cat"], tests["emu"]])[:, None]))
    assert dataset.test_y.tolist() == [0, 2, 2]  # emu is class 2 of train/, though 1 of test/
    assert_stats(dataset, expected_train, 255.0)


def test_image_folder_rgb_with_a_gray_image_among_them(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (2, 4, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (1, 4, 7), dtype=np.uint8)
    write_images(tmp_path, "train", "a", rgb, "RGB")
    write_images(tmp_path, "train", "b", gray, "L")
    write_images(tmp_path, "test", "b", rgb[:1], "RGB")

    dataset = image_folder(str(tmp_path))

    assert dataset.input_shape == (3, 4, 7) and dataset.num_classes == 2
    assert torch.equal(dataset.train_x[:2], torch.from_numpy(rgb.transpose(0, 3, 1, 2)))
    assert torch.equal(dataset.train_x[2], torch.from_numpy(np.repeat(gray[0][None], 3, axis=0)))
    assert torch.equal(dataset.test_x, torch.from_numpy(rgb[:1].transpose(0, 3, 1, 2)))
    assert dataset.train_y.tolist() == [0, 0, 1] and dataset.test_y.tolist() == [1]
    assert_stats(dataset, dataset.train_x.numpy(), 255.0)


def test_image_folder_images_of_different_sizes(tmp_path):
    write_images(tmp_path, "train", "a", np.zeros((1, 4, 4), np.uint8), "L")
    write_images(tmp_path, "train", "b", np.zeros((1, 7, 5), np.uint8), "L")
    write_images(tmp_path, "test", "a", np.zeros((1, 4, 4), np.uint8), "L")
    message = one_line_error(image_folder, tmp_path)
    assert message == (
        f"dataset.root={tmp_path}: {tmp_path / 'train' / 'b' / '00.png'} is 5x7 (width x height) but "
        f"{tmp_path / 'train' / 'a' / '00.png'} is 4x4; all images must share one size (resize them first)"
    )


def test_image_folder_test_class_missing_from_train(tmp_path):
    write_images(tmp_path, "train", "a", np.zeros((1, 4, 4), np.uint8), "L")
    write_images(tmp_path, "test", "a", np.zeros((1, 4, 4), np.uint8), "L")
    write_images(tmp_path, "test", "z", np.zeros((1, 4, 4), np.uint8), "L")
    message = one_line_error(image_folder, tmp_path)
    assert message == (
        f"dataset.root={tmp_path}: test class 'z' ({tmp_path / 'test' / 'z'}) has no folder in {tmp_path / 'train'}; "
        "every test class needs training images (train classes: a)"
    )


def test_image_folder_layout_errors(tmp_path):
    layout = f"put the images in {tmp_path}/train/<class>/ and {tmp_path}/test/<class>/ (one folder per class)"
    assert one_line_error(image_folder, tmp_path / "absent").startswith(f"dataset.root={tmp_path / 'absent'} does not exist; ")
    assert one_line_error(image_folder, tmp_path) == f"dataset.root={tmp_path} has no train/ folder; {layout}"
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    message = one_line_error(image_folder, tmp_path)
    assert message.startswith(f"dataset.root={tmp_path}: train/ is not an image folder (Couldn't find any class folder")
    assert message.endswith(layout)
    (tmp_path / "train" / "a").mkdir()
    assert "Found no valid file for the classes a" in one_line_error(image_folder, tmp_path)
    write_images(tmp_path, "train", "a", np.zeros((1, 4, 4), np.uint8), "L")
    (tmp_path / "test" / "a").mkdir()
    assert one_line_error(image_folder, tmp_path) == f"dataset.root={tmp_path}: {tmp_path / 'test'} holds no images; {layout}"
    (tmp_path / "test" / "a" / "broken.png").write_bytes(b"not a png")
    message = one_line_error(image_folder, tmp_path)
    assert message.startswith(f"dataset.root={tmp_path}: {tmp_path / 'test' / 'a' / 'broken.png'} cannot be read as an image (")


# --- torchvision -----------------------------------------------------------------------------------


def kmnist_arrays(seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 8, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 3, dtype=np.uint8),
    }


def test_torchvision_kmnist_from_idx_files(tmp_path):
    # torchvision's KMNIST reads the uncompressed IDX files data_dir/KMNIST/raw/<IDX_STEMS> (MNIST.raw_folder).
    arrays = kmnist_arrays()
    write_idx_dir(tmp_path / "KMNIST" / "raw", arrays, compress=False)
    dataset = torchvision("KMNIST", tmp_path, download=False)
    assert dataset.name == "kmnist" and dataset.num_classes == 10 and dataset.max_value == 255.0
    assert dataset.input_shape == (1, 28, 28) and dataset.train_x.dtype == torch.uint8
    assert torch.equal(dataset.train_x, torch.from_numpy(arrays["train_x"][:, None]))
    assert torch.equal(dataset.test_x, torch.from_numpy(arrays["test_x"][:, None]))
    assert dataset.train_y.dtype == torch.int64 and dataset.train_y.tolist() == arrays["train_y"].tolist()
    assert dataset.test_y.tolist() == arrays["test_y"].tolist()
    assert_stats(dataset, arrays["train_x"][:, None], 255.0)


def test_torchvision_emnist_takes_train_through_kwargs_and_split_from_options(tmp_path):
    # EMNIST.__init__(root, split, **kwargs) hands train and download on to MNIST.__init__.
    arrays = kmnist_arrays(6)
    arrays["test_y"] = np.array([46, 0, 3], dtype=np.uint8)
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, stem in IDX_STEMS.items():
        split = "train" if key.startswith("train") else "test"
        kind = "images-idx3" if key.endswith("x") else "labels-idx1"
        write_idx(raw / f"emnist-balanced-{split}-{kind}-ubyte", arrays[key], compress=False)
    config = OmegaConf.create(
        {"_target_": "adabatch.data.torchvision", "class_name": "EMNIST", "data_dir": str(tmp_path),
         "download": False, "options": {"split": "balanced"}}
    )
    dataset = instantiate(config)  # options arrive as a DictConfig
    assert dataset.num_classes == 47 and dataset.test_y.tolist() == [46, 0, 3]
    assert torch.equal(dataset.train_x, torch.from_numpy(arrays["train_x"][:, None]))
    assert torch.equal(dataset.test_x, torch.from_numpy(arrays["test_x"][:, None]))


@pytest.mark.parametrize("image_size", [(1, 6, 5), (3, 4, 7)])
def test_torchvision_fake_data_through_its_items(tmp_path, image_size):
    from torchvision.datasets import FakeData

    options = {"size": 7, "image_size": list(image_size), "num_classes": 4}
    dataset = torchvision("FakeData", tmp_path / "unused", options=options)
    reference = FakeData(size=7, image_size=image_size, num_classes=4)
    expected = np.stack([np.asarray(reference[i][0]).reshape(image_size[1], image_size[2], -1) for i in range(7)])
    assert dataset.input_shape == image_size and dataset.num_classes == 4 and dataset.name == "fakedata"
    assert torch.equal(dataset.train_x, torch.from_numpy(expected.transpose(0, 3, 1, 2)))
    assert dataset.train_y.tolist() == [reference[i][1] for i in range(7)]
    assert torch.equal(dataset.test_x, dataset.train_x)  # FakeData has no split: both are the same examples
    assert not (tmp_path / "unused").exists()
    assert_stats(dataset, expected.transpose(0, 3, 1, 2), 255.0)


def test_torchvision_unknown_class_name(tmp_path):
    message = one_line_error(torchvision, "SVNH", tmp_path)
    assert message.startswith("dataset.class_name='SVNH' is not a dataset class of torchvision.datasets; did you mean 'SVHN'? ")
    assert "such as CIFAR10, EMNIST, FakeData, FashionMNIST, KMNIST, MNIST, QMNIST, STL10, SVHN, USPS" in message
    assert "did you mean 'KMNIST'?" in one_line_error(torchvision, "kmnist", tmp_path)
    for not_a_dataset in ("VisionDataset", "utils", "wrap_dataset_for_transforms_v2", "zzzzzz"):
        message = one_line_error(torchvision, not_a_dataset, tmp_path)
        assert message.startswith(f"dataset.class_name={not_a_dataset!r} is not a dataset class of torchvision.datasets; ")


def test_torchvision_missing_files_without_download(tmp_path):
    data_dir = tmp_path / "data"
    message = one_line_error(torchvision, "KMNIST", data_dir, download=False)
    assert message == (
        f"torchvision.datasets.KMNIST(root={str(data_dir)!r}, download=False, train=True) failed "
        "(RuntimeError: Dataset not found. You can use download=True to download it); with dataset.download=false its "
        f"files must already be under data_dir={data_dir}: set dataset.download=true with network access, or copy "
        "torchvision's KMNIST files there"
    )


def test_torchvision_options_errors(tmp_path):
    assert one_line_error(torchvision, "KMNIST", tmp_path, options={"train": False}) == (
        "dataset.options sets train=False, which this source sets itself "
        "(train=True for the train split, False for the test split); remove it from dataset.options"
    )
    assert "dataset.options sets root=" in one_line_error(torchvision, "KMNIST", tmp_path, options={"root": "/x"})
    assert one_line_error(torchvision, "KMNIST", tmp_path, options=["split"]).startswith(
        "dataset.options=['split'] is not a mapping of keyword arguments"
    )
    message = one_line_error(torchvision, "FakeData", tmp_path, options={"colour": "red"})
    assert message.startswith("torchvision.datasets.FakeData(colour='red') failed (TypeError: ")
    assert message.endswith("check dataset.options={'colour': 'red'} against the arguments of torchvision.datasets.FakeData")
    assert one_line_error(torchvision, "FakeData", tmp_path, options={"size": 0}) == (
        "torchvision.datasets.FakeData train split holds no examples; choose dataset.options that select some"
    )
    message = one_line_error(torchvision, "EMNIST", tmp_path, download=False, options={"split": "nope"})
    assert "(ValueError: Unknown value 'nope' for argument split." in message


def test_torchvision_fast_arrays_equal_the_items(tmp_path):
    from torchvision.datasets import KMNIST

    write_idx_dir(tmp_path / "KMNIST" / "raw", kmnist_arrays(7), compress=False)
    kmnist = KMNIST(str(tmp_path), train=False)
    fast = torchvision_source._attribute_arrays(kmnist)
    assert fast is not None  # .data (N, 28, 28) uint8 tensor and .targets
    items = torchvision_source._item_arrays(kmnist, "KMNIST")
    assert np.array_equal(fast[0], items[0]) and np.array_equal(fast[1], items[1])

    class ChannelsLast:  # .data as CIFAR10 holds it: NHWC uint8, labels a list
        transform = target_transform = None
        data = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
        targets = [2, 0, 1]

    x, y = torchvision_source._attribute_arrays(ChannelsLast())
    assert np.array_equal(x, ChannelsLast.data.transpose(0, 3, 1, 2)) and y.tolist() == [2, 0, 1]


@pytest.mark.parametrize("to_tensor", ["PILToTensor", "ToTensor"])
def test_torchvision_items_that_are_tensors(tmp_path, to_tensor):
    import torchvision.transforms as transforms
    from torchvision.datasets import FakeData

    options = {"size": 4, "image_size": (3, 5, 6), "transform": getattr(transforms, to_tensor)()}
    dataset = torchvision("FakeData", tmp_path, options=options)
    reference = FakeData(size=4, image_size=(3, 5, 6))
    expected = np.stack([np.asarray(reference[i][0]).transpose(2, 0, 1) for i in range(4)])
    assert torch.equal(dataset.train_x, torch.from_numpy(expected))  # ToTensor's floats back to the same bytes


# --- the three configs, through the real training loop --------------------------------------------


def write_generic(source: str, root) -> list[str]:
    """Files for `dataset=<source>` under root, and the overrides that point the config at them."""
    rng = np.random.default_rng(3)
    if source == "npz":
        np.savez(root / "mine.npz", **good_npz_arrays())
        return [f"dataset.path={root / 'mine.npz'}"]
    if source == "image_folder":
        for split, count in (("train", 6), ("test", 2)):
            for label in ("cat", "dog"):
                write_images(root, split, label, rng.integers(0, 256, (count, 6, 5, 3), dtype=np.uint8), "RGB")
        return [f"dataset.root={root}"]
    write_idx_dir(root / "KMNIST" / "raw", kmnist_arrays(), compress=False)
    return ["dataset.class_name=KMNIST", "dataset.download=false", f"data_dir={root}"]


@pytest.mark.parametrize("source", ["npz", "image_folder", "torchvision"])
def test_generic_dataset_configs_train_through_the_loop(source, tmp_path):
    overrides = write_generic(source, tmp_path)
    cfg = compose(f"dataset={source}", *overrides, "model=logistic", "device=cpu", "batch_size=norm",
                  "batch_size.initial=2", "batch_size.max=4", "train.samples=12", "train.eval_every=12",
                  "train.progress_every_s=0")
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["samples"] >= 12
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["dataset"]["name"] == source and config["dataset"]["_target_"] == f"adabatch.data.{source}"


def test_a_constant_channel_is_centred_not_divided_by_zero():
    images = np.stack([np.full((4, 3, 3), 7, np.uint8), np.arange(36, dtype=np.uint8).reshape(4, 3, 3)], axis=1)
    mean, std = sources.channel_stats(images, 255.0)
    assert std[0] == 1.0 and mean[0] == 7 / 255 and std[1] == pytest.approx(float((images[:, 1] / 255).std()))
