"""Datasets as in-memory uint8 arrays: local IDX `.gz` files, or TFDS as a fallback.

Both sources yield the same thing: images uint8 (N, H, W, 1) and labels int32 (N,).
Scaling to [-1, 1] happens on device, inside the train step (`to_model_range`).
"""
import functools
import gzip
import os
import struct
import zlib

import numpy as np

from gan.errors import UserFacingError

DATA_DIR_ENV = "GAN_DATA_DIR"

# Native image size of each dataset, known before any file is read (config validation uses it).
DATASETS = {"mnist": 28, "fashion_mnist": 28}
SPLITS = {"train": "train", "test": "t10k"}
_IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class DataError(UserFacingError, ValueError):
    """A dataset file or folder is missing or malformed."""


def read_idx(path, expected_magic=None):
    """Reads one IDX file (gzipped or not) into a uint8 array, validating header and length."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found.")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt. "
                        "Replace it with a good copy.") from e
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header.")
    (magic,) = struct.unpack(">I", raw[:4])
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                        "(not an IDX file of the expected kind).")
    if magic >> 8 != 0x08:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}: not an unsigned-byte IDX file.")
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: header truncated ({len(raw)} bytes, need {header_len}).")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape))
    got = len(raw) - header_len
    if got != expected:
        raise DataError(f"{path}: wrong length: header says shape {shape} = {expected} bytes of data, "
                        f"file has {got}. The file is truncated or corrupt.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def resolve_data_dir(configured):
    """The local dataset root: the config's value, else $GAN_DATA_DIR, else '' (use TFDS)."""
    return configured or os.environ.get(DATA_DIR_ENV, "")


def load_idx_split(root, name, split):
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder. The data dir ({root}) must hold one subfolder "
                        f"per dataset ({', '.join(DATASETS)}) with the IDX .gz files.")
    prefix = SPLITS[split]
    images = read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), _IMAGE_MAGIC)
    labels = read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), _LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels.")
    return images[..., None], labels.astype(np.int32)


def load_tfds_split(name, split, download):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"No local data dir is set and TFDS cannot be imported ({e}). Point "
                        f"${DATA_DIR_ENV} (or config.dataset.data_dir) at a folder holding "
                        f"{name}/ with the IDX .gz files.") from e
    try:
        ds = tfds.load(name, split=split, batch_size=-1, as_supervised=True, download=download)
        images, labels = tfds.as_numpy(ds)
    except Exception as e:  # TFDS raises many types; all mean the same to the user.
        hint = ("" if download else " (config.dataset.download=False: nothing is fetched)")
        raise DataError(f"TFDS could not load {name}/{split}{hint}: {str(e).rstrip('.')}. Offline, point "
                        f"${DATA_DIR_ENV} (or config.dataset.data_dir) at a folder holding "
                        f"{name}/ with the IDX .gz files.") from e
    return np.asarray(images, np.uint8), np.asarray(labels, np.int32)


def load_split(name, split, data_dir="", download=False):
    """Images uint8 (N, H, W, 1) and labels int32 (N,) of one split ('train' or 'test')."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; valid: {sorted(DATASETS)}.")
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; valid: {sorted(SPLITS)}.")
    root = resolve_data_dir(data_dir)
    if root:
        return load_idx_split(root, name, split)
    return load_tfds_split(name, split, download)


def resize_images(images, size):
    """Bilinear resize of uint8 (N, H, W, C) images to (N, size, size, C), still uint8."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    import jax.image  # Local import: only needed for non-native sizes.
    out = jax.image.resize(images.astype(np.float32),
                           (images.shape[0], size, size, images.shape[3]), "bilinear")
    return np.clip(np.rint(np.asarray(out)), 0, 255).astype(np.uint8)


def to_model_range(images_uint8, dtype=np.float32):
    """uint8 [0, 255] -> [-1, 1]; works on numpy and jax arrays."""
    return images_uint8.astype(dtype) / 127.5 - 1.0


def to_uint8(images):
    """[-1, 1] float -> uint8, rounded exactly the way real images are stored."""
    x = np.asarray(images, np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed, epoch, num_examples):
    """The example order of one epoch: a pure function of (seed, epoch), so resumes replay it."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(seed, start_step, num_steps, batch_size, num_examples):
    """Indices (num_steps, batch_size) of the batches of steps [start_step, start_step + num_steps).

    Each epoch is a fresh permutation; the last incomplete batch of an epoch is dropped.
    """
    steps_per_epoch = num_examples // batch_size
    rows = []
    for step in range(start_step, start_step + num_steps):
        epoch, position = divmod(step, steps_per_epoch)
        perm = epoch_permutation(seed, epoch, num_examples)
        rows.append(perm[position * batch_size:(position + 1) * batch_size])
    return np.stack(rows).astype(np.int32)


def data_position(step, batch_size, num_examples):
    """Where step `step` reads: {'epoch', 'batch_in_epoch', 'examples_seen'}."""
    epoch, batch = divmod(step, num_examples // batch_size)
    return {"epoch": int(epoch), "batch_in_epoch": int(batch),
            "examples_seen": int(step * batch_size)}
