import gzip
import pickle
from collections import Counter
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adabatch.data import (
    ArrayDataset,
    Batch,
    CropFlip,
    DatasetUnavailable,
    FlipResizedCrop,
    IndexStream,
    TrainingData,
    build_augmentation,
    evaluation_batches,
    load_dataset,
    normalize,
    plan_layout,
)
from adabatch.data import batches, sources
from adabatch.data.stream import derive_seed
from adabatch.data.standin import IDX_STEMS, write_cifar_batch, write_idx, write_idx_dir

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_idx_arrays(seed: int, height: int = 5, width: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (7, height, width), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 7, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (3, height, width), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 3, dtype=np.uint8),
    }


def assert_matches_idx(dataset: ArrayDataset, arrays: dict[str, np.ndarray]) -> None:
    assert dataset.train_x.dtype == torch.uint8 and dataset.train_y.dtype == torch.int64
    assert torch.equal(dataset.train_x, torch.from_numpy(arrays["train_x"]).unsqueeze(1))
    assert torch.equal(dataset.train_y, torch.from_numpy(arrays["train_y"]).long())
    assert torch.equal(dataset.test_x, torch.from_numpy(arrays["test_x"]).unsqueeze(1))
    assert torch.equal(dataset.test_y, torch.from_numpy(arrays["test_y"]).long())
    assert dataset.input_shape == (1,) + arrays["train_x"].shape[1:]
    assert dataset.num_classes == 10 and dataset.max_value == 255.0


@pytest.fixture
def no_debian_fashion(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")


# --- IDX datasets ---------------------------------------------------------------------------


def test_fashion_mnist_from_debian_dir(tmp_path, monkeypatch):
    arrays = make_idx_arrays(0)
    write_idx_dir(tmp_path / "debian", arrays, compress=True)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    # A different copy in data_dir must lose to the Debian one.
    write_idx_dir(tmp_path / "data" / "FashionMNIST" / "raw", make_idx_arrays(1), compress=False)
    dataset = load_dataset("fashion_mnist", tmp_path / "data", download=False)
    assert_matches_idx(dataset, arrays)
    assert dataset.name == "fashion_mnist" and dataset.mean == (0.2860,) and dataset.std == (0.3530,)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_from_torchvision_layout(tmp_path, no_debian_fashion, compress):
    arrays = make_idx_arrays(2)
    write_idx_dir(tmp_path / "FashionMNIST" / "raw", arrays, compress)
    assert_matches_idx(load_dataset("fashion_mnist", tmp_path, download=False), arrays)


def test_mnist_from_torchvision_layout_with_mixed_compression(tmp_path):
    arrays = make_idx_arrays(3, height=28, width=28)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for i, (key, stem) in enumerate(IDX_STEMS.items()):
        write_idx(raw / stem, arrays[key], compress=i % 2 == 0)
    dataset = load_dataset("mnist", tmp_path, download=False)
    assert_matches_idx(dataset, arrays)
    assert dataset.mean == (0.1307,) and dataset.std == (0.3081,)


def test_idx_with_corrupt_magic_number_is_rejected(tmp_path):
    arrays = make_idx_arrays(4)
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dir(raw, arrays, compress=False)
    path = raw / IDX_STEMS["train_x"]
    content = bytearray(path.read_bytes())
    content[2] = 0x0D  # float32 type code instead of unsigned byte
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: not a 3-d uint8 IDX file \(magic 0x00000d03"):
        load_dataset("mnist", tmp_path, download=False)


def test_idx_labels_file_in_place_of_images_is_rejected(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(5, dtype=np.uint8), compress=False)
    with pytest.raises(ValueError, match="expected magic 0x00000803"):
        sources.read_idx(path, ndim=3)


def test_idx_truncated_payload_is_rejected(tmp_path):
    path = write_idx(tmp_path / "images", np.zeros((4, 3, 3), dtype=np.uint8), compress=True)
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-5]))
    with pytest.raises(ValueError, match=r"corrupt IDX file .* 36 bytes, found 31"):
        sources.read_idx(path, ndim=3)


# --- CIFAR ----------------------------------------------------------------------------------


def test_cifar10_from_python_batches(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for number, name in enumerate(files):
        data = np.zeros((2, 3072), dtype=np.uint8)
        data[:, 0] = number  # red channel, pixel (0, 0) identifies the file
        labels = [number, 9 - number]
        if name == "data_batch_2":
            data[1, 1024 + 5 * 32 + 7] = 200  # green channel, row 5, column 7
        write_cifar_batch(directory / name, data, {"labels": labels}, bytes_keys=False)
    with open(directory / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f, protocol=2)

    dataset = load_dataset("cifar10", tmp_path, download=False)

    assert dataset.train_x.shape == (10, 3, 32, 32) and dataset.train_x.dtype == torch.uint8
    assert (dataset.input_shape, dataset.num_classes) == ((3, 32, 32), 10)
    assert dataset.test_x.shape == (2, 3, 32, 32)
    assert dataset.train_x[3, 1, 5, 7] == 200
    assert dataset.train_x[3, 1].sum() == 200 and dataset.train_x[3, 2].sum() == 0
    assert dataset.train_x[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert dataset.train_y.tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    assert dataset.test_y.tolist() == [5, 4] and dataset.test_x[:, 0, 0, 0].tolist() == [5, 5]
    assert dataset.train_y.dtype == torch.int64
    assert dataset.num_classes == 10 and dataset.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_uses_fine_labels_and_bytes_keys(tmp_path):
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    write_cifar_batch(
        directory / "train", train, {"fine_labels": [99, 0, 42, 7], "coarse_labels": [19, 0, 3, 1]}, bytes_keys=True
    )
    write_cifar_batch(
        directory / "test", test, {"fine_labels": [1, 2, 3], "coarse_labels": [0, 0, 0]}, bytes_keys=True
    )

    dataset = load_dataset("cifar100", tmp_path, download=False)

    assert dataset.train_y.tolist() == [99, 0, 42, 7] and dataset.test_y.tolist() == [1, 2, 3]
    assert (dataset.input_shape, dataset.num_classes) == ((3, 32, 32), 100)
    # CHW: channel c, row r, column q is element c * 1024 + r * 32 + q of the row.
    assert dataset.train_x[2, 2, 31, 0] == train[2, 2 * 1024 + 31 * 32]
    rgb_at_4_9 = train[1, [c * 1024 + 4 * 32 + 9 for c in range(3)]]
    assert torch.equal(dataset.train_x.permute(0, 2, 3, 1)[1, 4, 9], torch.from_numpy(rgb_at_4_9))
    assert torch.equal(dataset.test_x.flatten(1), torch.from_numpy(test))
    assert dataset.num_classes == 100 and dataset.std == (0.2673, 0.2564, 0.2762)


def test_cifar_batch_with_wrong_row_length_is_rejected(tmp_path):
    path = tmp_path / "test_batch"
    write_cifar_batch(path, np.zeros((2, 1000), dtype=np.uint8), {"labels": [0, 1]}, bytes_keys=False)
    with pytest.raises(ValueError, match="corrupt CIFAR batch"):
        sources.read_cifar_batch(path, "labels")


# --- missing datasets and downloads --------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_dataset_without_download(tmp_path, no_debian_fashion, name):
    data_dir = tmp_path / "empty"
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset(name, data_dir, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{name}'" in message and str(data_dir) in message


def test_failed_download_becomes_one_line_dataset_unavailable(tmp_path, monkeypatch):
    def offline(dataset_class, root):
        raise URLError("[Errno -2] Name or service\nnot known")

    monkeypatch.setattr(sources, "_download_with_torchvision", offline)
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert "\n" not in message and "cifar-10-batches-py" in message
    assert "download failed: URLError" in message and "Name or service not known" in message


def test_download_then_parse_torchvision_layout(tmp_path, monkeypatch):
    arrays = make_idx_arrays(5)
    calls = []

    def fake_download(dataset_class, root):
        calls.append(dataset_class)
        write_idx_dir(root / dataset_class / "raw", arrays, compress=False)

    monkeypatch.setattr(sources, "_download_with_torchvision", fake_download)
    assert_matches_idx(load_dataset("mnist", tmp_path), arrays)
    assert calls == ["MNIST"]


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="dataset=.svhn. is unknown; choose one of cifar10, cifar100, digits, fashion_mnist, image_folder, mnist"):
        load_dataset("svhn", tmp_path)


# --- sklearn digits and the real Fashion-MNIST ---------------------------------------------


def test_digits_split_is_deterministic_stratified_partition(tmp_path):
    from sklearn.datasets import load_digits

    dataset = load_dataset("digits", tmp_path)
    again = load_dataset("digits", tmp_path)
    assert dataset.train_x.shape == (1437, 1, 8, 8) and dataset.test_x.shape == (360, 1, 8, 8)
    assert dataset.train_x.dtype == torch.uint8 and dataset.max_value == 16.0
    assert dataset.num_classes == 10 and set(dataset.test_y.tolist()) == set(range(10))
    assert (dataset.input_shape, dataset.num_classes) == ((1, 8, 8), 10)
    assert torch.equal(dataset.test_x, again.test_x) and torch.equal(dataset.train_y, again.train_y)
    totals, tests = Counter(dataset.train_y.tolist() + dataset.test_y.tolist()), Counter(dataset.test_y.tolist())
    assert all(abs(tests[label] - 0.2 * totals[label]) <= 1 for label in range(10))  # stratified

    def rows(x, y):
        return Counter(tuple(image) + (label,) for image, label in zip(x.reshape(len(x), -1).tolist(), y.tolist()))

    digits = load_digits()
    split = rows(dataset.train_x, dataset.train_y) + rows(dataset.test_x, dataset.test_y)
    assert split == rows(torch.from_numpy(digits.images.astype(np.uint8)), torch.from_numpy(digits.target))

    scaled = dataset.train_x.double() / 16
    assert dataset.mean[0] == pytest.approx(scaled.mean().item())
    assert dataset.std[0] == pytest.approx(scaled.std(unbiased=False).item())


def test_the_digits_split_is_made_once_then_read_from_the_data_directory(tmp_path):
    from adabatch.data.sources import DIGITS_SPLIT, digits

    made = digits()  # no data_dir: made with scikit-learn, kept nowhere
    digits(tmp_path / "missing")  # nor in a folder that does not exist
    assert list(tmp_path.iterdir()) == []
    first = digits(tmp_path)
    (cache,) = tmp_path.iterdir()
    assert cache.name.startswith("digits-scikit-learn-") and cache.suffix == ".npz"
    written = cache.stat().st_mtime_ns
    read = digits(tmp_path)
    assert cache.stat().st_mtime_ns == written  # read, not written again
    cache.write_bytes(cache.read_bytes()[:200])  # a cut file is made again
    again = digits(tmp_path)
    for dataset in (first, read, again):
        for key in DIGITS_SPLIT:
            assert torch.equal(getattr(dataset, key), getattr(made, key)), key
        assert (dataset.mean, dataset.std) == (made.mean, made.std)


def test_a_changed_digits_split_is_made_anew_not_read_from_the_old_file(tmp_path, monkeypatch):
    kept = sources.digits(tmp_path)
    monkeypatch.setattr(sources, "DIGITS_SPLIT_SEED", 1)
    changed = sources.digits(tmp_path)
    assert len(list(tmp_path.iterdir())) == 2
    assert not torch.equal(changed.test_y, kept.test_y)
    assert torch.equal(changed.test_y, sources.digits().test_y)


@pytest.mark.skipif(not sources.DEBIAN_FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(tmp_path):
    dataset = load_dataset("fashion_mnist", tmp_path, download=False)
    assert dataset.train_x.shape == (60000, 1, 28, 28) and dataset.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(dataset.train_y).tolist() == [6000] * 10
    assert (dataset.input_shape, dataset.num_classes) == ((1, 28, 28), 10)
    assert (dataset.train_x.double() / 255).mean().item() == pytest.approx(0.2860, abs=1e-4)


# --- index stream ---------------------------------------------------------------------------


def plain_permutations(num_examples: int, seed: int, epochs: int) -> torch.Tensor:
    """The stream as it was before batches were drawn without replacement: epoch permutations end to end."""
    return torch.cat([
        torch.randperm(num_examples, generator=torch.Generator().manual_seed(derive_seed(seed, 0, epoch)))
        for epoch in range(epochs)
    ])


@pytest.mark.parametrize("sizes", [[5, 5, 10, 2, 8], [1] * 30, [10, 10, 10]])
def test_batches_inside_epochs_are_the_plain_permutations(sizes):
    stream = IndexStream(10, seed=3)
    drawn = torch.cat([stream.take(size) for size in sizes])
    assert torch.equal(drawn, plain_permutations(10, 3, 3)[: len(drawn)])
    assert stream.head.numel() == 0


def test_every_batch_holds_distinct_examples_and_every_epoch_each_example_once():
    num_examples, g = 37, torch.Generator().manual_seed(0)
    stream = IndexStream(num_examples, seed=5)
    drawn = 0
    for _ in range(300):
        size = int(torch.randint(1, num_examples + 1, (1,), generator=g))
        batch = stream.take(size)
        assert len(batch) == size and len(set(batch.tolist())) == size
        drawn += size
    drawn += stream.take(num_examples - stream.offset).numel()  # to the end of the epoch
    assert stream.offset == 0 and drawn == stream.epoch * num_examples
    replay = IndexStream(num_examples, seed=5)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(num_examples, dtype=torch.int64)
    for _ in range(300):
        counts += torch.bincount(replay.take(int(torch.randint(1, num_examples + 1, (1,), generator=g))),
                                 minlength=num_examples)
    counts += torch.bincount(replay.take(num_examples - replay.offset), minlength=num_examples)
    assert torch.equal(counts, torch.full((num_examples,), stream.epoch))


def test_a_full_batch_drawn_mid_epoch_is_a_permutation_of_the_training_set():
    stream = IndexStream(60, seed=1)
    stream.take(17)
    for _ in range(3):
        assert sorted(stream.take(60).tolist()) == list(range(60))


def test_a_batch_straddling_an_epoch_takes_the_next_epochs_first_new_examples():
    stream = IndexStream(10, seed=2)
    stream.take(6)
    tail = plain_permutations(10, 2, 1)[6:]
    following = plain_permutations(10, 2, 2)[10:]
    batch = stream.take(8)
    fresh = [i for i in following.tolist() if i not in tail.tolist()][:4]
    assert batch.tolist() == tail.tolist() + fresh
    # the examples passed over come next in that epoch, in their order
    rest = [i for i in following.tolist() if i not in fresh]
    assert stream.take(6).tolist() == rest


def test_a_batch_larger_than_the_training_set_is_refused():
    with pytest.raises(ValueError, match="11 examples .* without replacement from 10; use a batch size between"):
        IndexStream(10, seed=0).take(11)


def test_stream_is_seeded():
    assert torch.equal(IndexStream(100, seed=1).take(100), IndexStream(100, seed=1).take(100))
    assert not torch.equal(IndexStream(100, seed=1).take(100), IndexStream(100, seed=2).take(100))


@pytest.mark.parametrize("before", [[13, 7], [9, 12]])  # ends inside an epoch; after a batch straddled one
def test_stream_resumes_from_state_dict(before):
    stream = IndexStream(13, seed=7)
    for size in before:
        stream.take(size)
    state = stream.state_dict()
    expected = [stream.take(size) for size in (11, 13, 5)]
    resumed = IndexStream(13, seed=7)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.take(size), batch) for size, batch in zip((11, 13, 5), expected))
    with pytest.raises(ValueError, match="seed"):
        IndexStream(13, seed=8).load_state_dict(state)


# --- batches ----------------------------------------------------------------------------------


def make_batch(size: int) -> Batch:
    return Batch(torch.arange(size), torch.arange(size * 2).view(size, 2))


@pytest.mark.parametrize(
    ("size", "max_size", "expected"),
    [(10, 4, [4, 3, 3]), (8, 4, [4, 4]), (9, 4, [3, 3, 3]), (3, 5, [3]), (1, 1, [1]), (0, 3, [])],
)
def test_split_sizes(size, max_size, expected):
    batch = make_batch(size)
    chunks = batch.split(max_size)
    assert [len(chunk) for chunk in chunks] == expected
    if chunks:
        assert torch.equal(torch.cat([c.indices for c in chunks]), batch.indices)
        assert torch.equal(torch.cat([c.aug_params for c in chunks]), batch.aug_params)


def test_shard_sizes_cover_batch():
    batch = Batch(torch.arange(10), None)
    shards = [batch.shard(rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert torch.equal(torch.cat([s.indices for s in shards]), batch.indices)
    assert all(s.aug_params is None for s in shards)
    assert [len(Batch(torch.arange(2), None).shard(rank, 4)) for rank in range(4)] == [1, 1, 0, 0]
    with pytest.raises(ValueError):
        batch.shard(3, 3)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("max_micro", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("size", [4, 7, 13, 64, 101])
def test_ranks_run_even_micro_batches_that_cover_the_batch_in_order(size, max_micro, world_size):
    batch = make_batch(size)
    layout = plan_layout(size, world_size, max_micro)
    per_rank = [batch.local_micro_batches(rank, world_size, max_micro) for rank in range(world_size)]
    parts = [part for rank_parts in per_rank for part in rank_parts]
    assert torch.equal(torch.cat([p.indices for p in parts]), batch.indices)
    assert torch.equal(torch.cat([p.aug_params for p in parts]), batch.aug_params)
    sizes = [len(p) for p in parts]
    assert max(sizes) == layout.micro_batch_size <= max_micro and max(sizes) - min(sizes) <= 1
    assert max(len(rank_parts) for rank_parts in per_rank) == layout.accumulation
    assert layout.accumulation == max(1, -(-size // (world_size * max_micro)))  # as few as max_micro allows
    if world_size == 1:
        assert sizes == [len(p) for p in batch.split(max_micro)]  # one process: the plain split


def fake_dataset(n: int = 40, channels: int = 3, size: int = 32) -> ArrayDataset:
    generator = torch.Generator().manual_seed(0)
    return ArrayDataset(
        name="fake",
        train_x=torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator),
        train_y=torch.arange(n) % 10,
        test_x=torch.randint(0, 256, (7, channels, size, size), dtype=torch.uint8, generator=generator),
        test_y=torch.arange(7),
        num_classes=10,
        max_value=255.0,
        mean=(0.5, 0.4, 0.3)[:channels],
        std=(0.25, 0.2, 0.1)[:channels],
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augmentation", ["none", "crop_flip", "vit"])
def test_examples_do_not_depend_on_micro_batching(augmentation, device):
    data = TrainingData(fake_dataset(), build_augmentation(augmentation), seed=0, device=device)
    data.draw(30)  # move past the first epoch boundary
    batch = data.draw(23)
    x, y = data.examples(batch)
    assert x.shape == (23, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, data.train_y[batch.indices])
    for max_size in (1, 5, 8):
        parts = [data.examples(chunk) for chunk in batch.split(max_size)]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
    shards = [data.examples(batch.shard(rank, 4))[0] for rank in range(4)]
    assert torch.equal(torch.cat(shards), x)


@pytest.mark.parametrize("normalized_up_front", [True, False])
def test_examples_without_augmentation_are_normalized_images(normalized_up_front, monkeypatch):
    """Bit for bit the same whether the train split was normalized once or each batch is."""
    if not normalized_up_front:
        monkeypatch.setattr(batches, "NORMALIZED_TRAIN_SPLIT_MAX_BYTES", 0)
    dataset = fake_dataset()
    data = TrainingData(dataset, None, seed=1, device="cpu")
    assert data.normalized == normalized_up_front
    batch = data.draw(36)
    assert batch.aug_params is None
    x, _ = data.examples(batch)
    assert x.dtype == torch.float32 and torch.equal(x, normalize(dataset.train_x[batch.indices], dataset))


@pytest.mark.parametrize("device", DEVICES)
def test_training_data_resumes_stream_and_augmentation(device):
    data = TrainingData(fake_dataset(), build_augmentation("crop_flip"), seed=5, device=device)
    data.draw(17)
    data.draw(30)  # straddles the first epoch
    state = data.state_dict()
    expected = data.draw(40)
    resumed = TrainingData(fake_dataset(), build_augmentation("crop_flip"), seed=5, device=device)
    fresh = resumed.draw(40)
    resumed.load_state_dict(state)
    batch = resumed.draw(40)
    assert torch.equal(batch.indices, expected.indices) and torch.equal(batch.aug_params, expected.aug_params)
    assert not torch.equal(fresh.aug_params, expected.aug_params)


def test_normalize_and_evaluation_batches():
    dataset = fake_dataset()
    x = normalize(dataset.test_x, dataset)
    assert x.dtype == torch.float32
    pixel = dataset.test_x[2, 1, 3, 4].item()
    assert x[2, 1, 3, 4].item() == pytest.approx((pixel / 255 - 0.4) / 0.2)
    batches = list(evaluation_batches(dataset, "test", 3, "cpu"))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    assert torch.equal(torch.cat([bx for bx, _ in batches]), x)
    assert torch.equal(torch.cat([by for _, by in batches]), dataset.test_y)
    train = list(evaluation_batches(dataset, "train", 4, "cpu", limit=10))
    assert [len(y) for _, y in train] == [4, 4, 2]
    assert torch.equal(torch.cat([bx for bx, _ in train]), normalize(dataset.train_x[:10], dataset))
    shares = [list(evaluation_batches(dataset, "train", 2, "cpu", 10, rank, 3)) for rank in range(3)]
    assert [[len(y) for _, y in share] for share in shares] == [[2, 2], [2, 1], [2, 1]]
    assert torch.equal(torch.cat([bx for share in shares for bx, _ in share]), normalize(dataset.train_x[:10], dataset))


# --- augmentations ----------------------------------------------------------------------------


def test_build_augmentation_names():
    assert build_augmentation("none") is None
    assert isinstance(build_augmentation("crop_flip"), CropFlip)
    assert isinstance(build_augmentation("vit"), FlipResizedCrop)
    with pytest.raises(ValueError, match="dataset.augmentation=.* is unknown; choose one of none, crop_flip, vit"):
        build_augmentation("mixup")


def test_crop_flip_matches_per_example_loop():
    augmentation = CropFlip(padding=4)
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    params = augmentation.sample(64, torch.Generator().manual_seed(1))
    assert params.shape == (64, 3) and params.dtype == torch.int64
    assert params[:, :2].min() == 0 and params[:, :2].max() == 8
    assert set(params[:, 2].tolist()) == {0, 1}
    out = augmentation.apply(x, params)
    for image, (top, left, flip), result in zip(x, params.tolist(), out):
        crop = F.pad(image, (4, 4, 4, 4))[:, top : top + 32, left : left + 32]
        if flip:
            crop = crop.flip(-1)
        assert torch.equal(result, crop)


def test_crop_flip_on_small_non_square_images():
    x = torch.arange(2 * 1 * 3 * 5, dtype=torch.float32).view(2, 1, 3, 5)
    params = torch.tensor([[0, 0, 0], [2, 1, 1]])
    out = CropFlip(padding=1).apply(x, params)
    padded = F.pad(x, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:3, 0:5])
    assert torch.equal(out[1], padded[1, :, 2:5, 1:6].flip(-1))


def test_vit_params_are_valid_and_deterministic():
    augmentation = FlipResizedCrop()
    params = augmentation.sample(2000, torch.Generator().manual_seed(0))
    assert torch.equal(params, augmentation.sample(2000, torch.Generator().manual_seed(0)))
    flip, height, width, top, left = params.T
    assert set(flip.tolist()) == {0.0, 1.0} and 0.45 < flip.mean() < 0.55
    assert (height <= 1).all() and (width <= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 1 + 1e-6).all() and (left + width <= 1 + 1e-6).all()
    area, ratio = height * width, width / height
    assert (area >= 0.8 - 1e-5).all() and (area <= 1 + 1e-6).all()
    assert (ratio >= 0.9 - 1e-5).all() and (ratio <= 1.1 + 1e-5).all()
    assert (area < 0.99).float().mean() > 0.5  # crops are not collapsed onto the full image


def test_vit_output_shape_and_determinism():
    augmentation = build_augmentation("vit")
    x = torch.randn(5, 3, 32, 32)
    first = augmentation.apply(x, augmentation.sample(5, torch.Generator().manual_seed(3)))
    second = augmentation.apply(x, augmentation.sample(5, torch.Generator().manual_seed(3)))
    assert first.shape == x.shape and torch.equal(first, second)


def test_vit_identity_and_flip_params():
    x = torch.randn(2, 3, 32, 32)
    augmentation = FlipResizedCrop()
    identity = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]] * 2)
    assert torch.allclose(augmentation.apply(x, identity), x, rtol=0, atol=1e-5)
    flip = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]] * 2)
    assert torch.allclose(augmentation.apply(x, flip), x.flip(-1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_vit_crop_geometry_on_linear_image(flip):
    # Bilinear sampling reproduces a linear image exactly, so the output is the ramp at the mapped coordinates.
    size = 8
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    x = (3 * cols + 10 * rows)[None, None]
    height, width, top, left = 0.5, 0.625, 0.25, 0.125
    out = FlipResizedCrop().apply(x, torch.tensor([[flip, height, width, top, left]]))
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    source_rows = size * (top + height * centres) - 0.5
    source_cols = size * (left + width * centres) - 0.5  # in the (possibly flipped) image
    if flip:
        source_cols = size - 1 - source_cols
    expected = 3 * source_cols[None, :] + 10 * source_rows[:, None]
    assert torch.allclose(out[0, 0], expected, rtol=0, atol=1e-4)
