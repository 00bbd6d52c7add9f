"""gan.data: the IDX reader on the real MNIST / Fashion-MNIST files and on corrupt copies,
the pixel scaling, and the deterministic per-epoch batch order that resumes rely on.

Expected numbers come from the datasets themselves (../shared/data/README.md, SHA256SUMS, and
the published MNIST / Fashion-MNIST label statistics), not from this code's output.
"""
import gzip
import hashlib
import os
import shutil
import struct

import numpy as np
import pytest

from gan import data
from gan.errors import UserFacingError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# The standard MNIST label counts (LeCun et al.; also listed in ../shared/data/README.md).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# The well-known first labels of each split (MNIST's first training digit is the famous "5";
# Fashion-MNIST's first training item is an ankle boot, class 9).
FIRST_LABELS = {
    ("mnist", "train"): [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
    ("mnist", "test"): [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
    ("fashion_mnist", "train"): [9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
    ("fashion_mnist", "test"): [9, 2, 1, 1, 6, 1, 4, 6, 5, 7],
}
# Mean pixel on a 0-1 scale of the training split (../shared/data/README.md).
TRAIN_MEAN_PIXEL = {"mnist": 0.1307, "fashion_mnist": 0.2860}


@pytest.fixture(scope="module")
def splits(data_dir):
    """All four real splits, loaded once through the public entry point (GAN_DATA_DIR)."""
    return {(name, split): data.load_split(name, split)
            for name in ("mnist", "fashion_mnist") for split in ("train", "test")}


# ---------------------------------------------------------------- the real files

def test_data_files_match_the_pinned_checksums(data_dir):
    """The files under test are the pinned ones (SHA256SUMS beside them)."""
    with open(os.path.join(data_dir, "SHA256SUMS")) as f:
        pinned = dict(reversed(line.split()) for line in f if line.strip())
    assert len(pinned) == 8
    for rel, digest in pinned.items():
        with open(os.path.join(data_dir, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, rel


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
def test_real_split_counts_shapes_dtypes(splits, name, split, count):
    images, labels = splits[name, split]
    assert isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)
    assert images.shape == (count, 28, 28, 1)
    assert images.dtype == np.uint8
    assert labels.shape == (count,)
    assert labels.dtype == np.int32
    # Both datasets use the full byte range (black background, saturated strokes).
    assert images.min() == 0 and images.max() == 255
    assert labels.min() == 0 and labels.max() == 9
    assert labels[:10].tolist() == FIRST_LABELS[name, split]


def test_mnist_label_counts(splits):
    assert np.bincount(splits["mnist", "train"][1], minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(splits["mnist", "test"][1], minlength=10).tolist() == MNIST_TEST_COUNTS


def test_fashion_mnist_label_counts(splits):
    assert np.bincount(splits["fashion_mnist", "train"][1], minlength=10).tolist() == [6000] * 10
    assert np.bincount(splits["fashion_mnist", "test"][1], minlength=10).tolist() == [1000] * 10


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_mean_pixel(splits, name):
    images, _ = splits[name, "train"]
    assert images.mean(dtype=np.float64) / 255.0 == pytest.approx(TRAIN_MEAN_PIXEL[name], abs=5e-4)


def test_images_and_labels_are_paired(splits):
    """Images and labels line up: per-class mean images differ (a shuffled pairing would not).

    MNIST 1s are thin strokes: their mean ink is far below the 0s' (a known property).
    """
    images, labels = splits["mnist", "train"]
    ink = images.reshape(len(images), -1).mean(axis=1, dtype=np.float64)
    assert ink[labels == 1].mean() < 0.6 * ink[labels == 0].mean()


def test_read_idx_raw_file_shape(data_dir):
    path = os.path.join(data_dir, "mnist", "t10k-images-idx3-ubyte.gz")
    arr = data.read_idx(path, expected_magic=0x00000803)
    assert arr.shape == (10000, 28, 28) and arr.dtype == np.uint8
    labels = data.read_idx(os.path.join(data_dir, "mnist", "t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10000,)


# ---------------------------------------------------------------- synthetic and corrupt files

def _idx_bytes(array, magic=None):
    array = np.asarray(array, np.uint8)
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_gz(path, raw):
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(raw)
    return str(path)


def test_read_idx_round_trip_gz_and_plain(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    gz = _write_gz(tmp_path / "a-idx3-ubyte.gz", _idx_bytes(arr))
    np.testing.assert_array_equal(data.read_idx(gz, expected_magic=0x00000803), arr)
    plain = tmp_path / "a-idx3-ubyte"
    plain.write_bytes(_idx_bytes(arr))
    np.testing.assert_array_equal(data.read_idx(plain), arr)


@pytest.fixture
def mnist_copy(tmp_path, data_dir):
    """A writable copy of the real mnist/ folder (test split files only: small and fast)."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in FILES[2:]:
        shutil.copy(os.path.join(data_dir, "mnist", name), folder / name)
    return folder


def _raw(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def _expect_data_error(fn, path, *problem_words):
    with pytest.raises(data.DataError) as info:
        fn()
    message = str(info.value)
    assert str(path) in message, f"message does not name the file: {message}"
    assert any(w in message.lower() for w in problem_words), f"message lacks the problem: {message}"
    assert isinstance(info.value, UserFacingError)  # gan.main prints it without a traceback
    return message


def test_bad_magic_number(mnist_copy):
    labels = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    raw = _raw(labels)
    _write_gz(labels, struct.pack(">I", 0x00000803) + raw[4:])  # an images magic in a labels file
    _expect_data_error(lambda: data.load_split("mnist", "test", str(mnist_copy.parent)),
                       labels, "magic")


def test_magic_of_another_element_type(tmp_path):
    # 0x0D = float32 elements: not an unsigned-byte IDX file, even with no expected magic.
    path = _write_gz(tmp_path / "x.gz", struct.pack(">II", 0x00000D01, 2) + bytes(8))
    _expect_data_error(lambda: data.read_idx(path), path, "magic")


def test_truncated_gzip(mnist_copy):
    images = mnist_copy / "t10k-images-idx3-ubyte.gz"
    blob = images.read_bytes()
    images.write_bytes(blob[:len(blob) // 2])
    _expect_data_error(lambda: data.load_split("mnist", "test", str(mnist_copy.parent)),
                       images, "truncated", "corrupt")


def test_corrupt_gzip_body(mnist_copy):
    labels = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(labels.read_bytes())
    for i in range(len(blob) // 2, len(blob) // 2 + 64):
        blob[i] ^= 0xFF
    labels.write_bytes(bytes(blob))
    _expect_data_error(lambda: data.load_split("mnist", "test", str(mnist_copy.parent)),
                       labels, "truncated", "corrupt")


def test_not_a_gzip_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_text("<html>404 Not Found</html>")
    _expect_data_error(lambda: data.read_idx(path), path, "corrupt", "decompress")


@pytest.mark.parametrize("delta", [-100, +7])
def test_wrong_length(mnist_copy, delta):
    images = mnist_copy / "t10k-images-idx3-ubyte.gz"
    raw = _raw(images)
    raw = raw[:delta] if delta < 0 else raw + bytes(delta)
    _write_gz(images, raw)
    message = _expect_data_error(lambda: data.load_split("mnist", "test", str(mnist_copy.parent)),
                                 images, "length")
    assert "7840000" in message  # the byte count the header promises (10000 * 28 * 28)


def test_header_truncated(tmp_path):
    path = _write_gz(tmp_path / "h.gz", struct.pack(">I", 0x00000803) + bytes(5))
    _expect_data_error(lambda: data.read_idx(path), path, "header", "truncated")


def test_too_short_for_header(tmp_path):
    path = _write_gz(tmp_path / "s.gz", b"\x00\x00")
    _expect_data_error(lambda: data.read_idx(path), path, "short", "header")


def test_missing_file(mnist_copy):
    missing = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    missing.unlink()
    _expect_data_error(lambda: data.load_split("mnist", "test", str(mnist_copy.parent)),
                       missing, "not found", "missing")


def test_missing_dataset_folder(tmp_path):
    _expect_data_error(lambda: data.load_split("fashion_mnist", "test", str(tmp_path)),
                       tmp_path / "fashion_mnist", "no such folder", "not found", "missing")


def test_images_and_labels_of_different_lengths(mnist_copy):
    labels = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    _write_gz(labels, _idx_bytes(np.zeros(9999, np.uint8)))
    with pytest.raises(data.DataError, match="10000.*9999"):
        data.load_split("mnist", "test", str(mnist_copy.parent))


def test_unknown_dataset_and_split():
    with pytest.raises(data.DataError, match="cifar"):
        data.load_split("cifar", "train")
    with pytest.raises(data.DataError, match="valid"):
        data.load_split("mnist", "validation")


def test_resolve_data_dir_precedence(monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, "/from/env")
    assert data.resolve_data_dir("/from/config") == "/from/config"
    assert data.resolve_data_dir("") == "/from/env"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.resolve_data_dir("") == ""  # '' means: use TFDS


# ---------------------------------------------------------------- scaling

def test_model_range_and_back():
    all_values = np.arange(256, dtype=np.uint8)
    scaled = data.to_model_range(all_values)
    assert scaled.dtype == np.float32
    assert scaled[0] == -1.0 and scaled[-1] == 1.0
    assert np.all(np.diff(scaled) > 0)
    np.testing.assert_array_equal(data.to_uint8(scaled), all_values)  # lossless round trip
    # Generator outputs outside [-1, 1] saturate instead of wrapping around.
    np.testing.assert_array_equal(data.to_uint8(np.array([-3.0, 3.0])), [0, 255])


def test_resize_images_to_32():
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    assert data.resize_images(images, 28) is images
    out = data.resize_images(images, 32)
    assert out.shape == (3, 32, 32, 1) and out.dtype == np.uint8
    flat = np.full((1, 28, 28, 1), 77, np.uint8)  # a constant image stays constant
    np.testing.assert_array_equal(data.resize_images(flat, 64), 77)


# ---------------------------------------------------------------- batch order

def test_epoch_permutation_is_a_deterministic_permutation():
    perm = data.epoch_permutation(3, 0, 1000)
    assert sorted(perm.tolist()) == list(range(1000))
    copy = perm.copy()
    data.epoch_permutation.cache_clear()  # recomputed, not just served from the cache
    np.testing.assert_array_equal(data.epoch_permutation(3, 0, 1000), copy)
    assert not np.array_equal(data.epoch_permutation(3, 1, 1000), copy)  # new order each epoch
    assert not np.array_equal(data.epoch_permutation(4, 0, 1000), copy)  # and each seed


def test_batch_indices_cover_each_epoch_exactly_once():
    n, b = 120, 8  # 15 steps per epoch, no remainder
    idx = data.batch_indices(seed=7, start_step=0, num_steps=30, batch_size=b, num_examples=n)
    assert idx.shape == (30, b) and idx.dtype == np.int32
    for epoch in (idx[:15], idx[15:]):
        assert sorted(epoch.ravel().tolist()) == list(range(n))
    assert not np.array_equal(idx[:15], idx[15:])


def test_batch_indices_drop_the_incomplete_last_batch():
    n, b = 10, 3  # 3 full batches per epoch; one example sits out each epoch
    idx = data.batch_indices(0, 0, 6, b, n)
    for epoch in (idx[:3], idx[3:]):
        assert len(set(epoch.ravel().tolist())) == 9
    # Step 3 starts epoch 1, at the head of that epoch's permutation.
    np.testing.assert_array_equal(idx[3], data.epoch_permutation(0, 1, n)[:3])


def test_batch_indices_are_a_function_of_the_step():
    """A run resumed at step k reads exactly the batches an uninterrupted run reads."""
    whole = data.batch_indices(5, 0, 25, 16, 100)
    parts = [data.batch_indices(5, start, count, 16, 100)
             for start, count in ((0, 4), (4, 1), (5, 13), (18, 7))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert not np.array_equal(data.batch_indices(6, 0, 25, 16, 100), whole)


def test_data_position():
    assert data.data_position(45, 10, 100) == {"epoch": 4, "batch_in_epoch": 5,
                                               "examples_seen": 450}
    assert data.data_position(0, 32, 60000) == {"epoch": 0, "batch_in_epoch": 0,
                                                "examples_seen": 0}
