"""The pinned domain classifier: a small CNN per dataset, trained once, cached, identified by hash.

Inception weights cannot be downloaded here and judge 28x28 digits poorly, so every metric uses
this classifier's penultimate layer (features) and softmax (class predictions). It is trained
deterministically (fixed seed, fixed data order, no batch statistics) the first time it is
needed, written as one flax msgpack file under the cache dir (plain file I/O, which process 0
of a multi-process run can do alone; orbax would wait for the other processes), and
identified by the sha256 of its weights and
its test accuracy, which are written next to every metric computed with it.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time

import flax.serialization
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from gan import data
from gan.errors import UserFacingError

CACHE_DIR_ENV = "GAN_CACHE_DIR"
# Part of the cache path and of every result: change it whenever the recipe below changes.
RECIPE = "cnn5x5s2-32-64-d256_drop0.3_adam2e-3_b128_e3_seed0"
IMAGE_SIZE = 28
FEATURE_DIM = 256
TARGET_ACCURACY = {"mnist": 0.99, "fashion_mnist": 0.90}
EVAL_BATCH = 1000
# What this recipe produced on the development machine (2-core x86 CPU, jax 0.10.2). Another
# machine or library version may change the last bits of the weights; we then log a warning, and
# the hash written beside every metric tells which classifier produced it.
PINNED = {
    "mnist": {"sha256": "df986ac52e57a0778c97e84f03e182b345e9aea506df3a1860f37fa35f4f43dc",
              "test_accuracy": 0.9914},
    "fashion_mnist": {"sha256": "43ac20cc771d4743724c67fe4566a40f2930408dfeb570e0ad4e1fe86be56b58",
                      "test_accuracy": 0.9077},
}


class ClassifierError(UserFacingError, RuntimeError):
    """The cached classifier is corrupt or the trained one misses its accuracy target."""


class CNN(nn.Module):
    """Two stride-2 5x5 convs, a dense layer (the features), dropout, the class logits.

    Stride-2 convs, not max-pooling: on XLA CPU the max-pool gradient made a training step ~9x
    slower (232 vs 25 ms at batch 128); im2col + matmul was slower still.
    """
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train=False, return_features=False):
        x = nn.relu(nn.Conv(32, (5, 5), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(64, (5, 5), strides=(2, 2))(x))
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
        x = nn.Dropout(0.3, deterministic=not train)(features)
        logits = nn.Dense(self.num_classes)(x)
        return (logits, features) if return_features else logits


def resolve_cache_dir(configured=""):
    """The cache root: the given value, else $GAN_CACHE_DIR, else ~/.cache/gan."""
    return os.path.abspath(os.path.expanduser(
        configured or os.environ.get(CACHE_DIR_ENV, "") or "~/.cache/gan"))


def weights_sha256(params):
    """sha256 over every leaf's path, dtype, shape and bytes, in a fixed order."""
    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Classifier:
    """Inference-only wrapper: `predict(uint8 images) -> (features float64, probabilities float64)`."""

    def __init__(self, params, meta):
        self.params, self.meta = params, meta
        self.sha256, self.test_accuracy = meta["sha256"], meta["test_accuracy"]
        self._apply = jax.jit(lambda p, x: CNN().apply(
            {"params": p}, data.to_model_range(x), return_features=True))

    def predict(self, images_uint8):
        """Fixed batches (the last one padded) so every image sees the same compiled program."""
        images_uint8 = np.asarray(images_uint8, np.uint8)
        if images_uint8.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
            raise ValueError(f"The classifier takes (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1) uint8 images, "
                             f"got {images_uint8.shape}; resize with gan.data.resize_images.")
        feats, probs = [], []
        for start in range(0, len(images_uint8), EVAL_BATCH):
            batch = images_uint8[start:start + EVAL_BATCH]
            n = len(batch)
            if n < EVAL_BATCH:
                batch = np.concatenate([batch, np.zeros((EVAL_BATCH - n, *batch.shape[1:]), np.uint8)])
            logits, f = self._apply(self.params, batch)
            feats.append(np.asarray(f[:n], np.float64))
            logits = np.asarray(logits[:n], np.float64)
            e = np.exp(logits - logits.max(1, keepdims=True))  # softmax in float64
            probs.append(e / e.sum(1, keepdims=True))
        return np.concatenate(feats), np.concatenate(probs)


def train(dataset, data_dir="", epochs=3, batch_size=128, lr=2e-3, seed=0, max_steps=None):
    """Trains the CNN deterministically; returns (params, test_accuracy, seconds).

    Everything random is a function of `seed`: the init, each epoch's order, each step's dropout.
    """
    start = time.time()
    images, labels = data.load_split(dataset, "train", data_dir)
    model = CNN()
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)))["params"]
    steps_per_epoch = len(images) // batch_size
    total = epochs * steps_per_epoch if max_steps is None else max_steps
    warmup = min(steps_per_epoch // 4, total // 2)
    tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total))
    opt_state = tx.init(params)
    dropout_key = jax.random.PRNGKey(seed + 1)

    @jax.jit
    def step(params, opt_state, x, y, i):
        def loss_fn(p):
            logits = model.apply({"params": p}, data.to_model_range(x), train=True,
                                 rngs={"dropout": jax.random.fold_in(dropout_key, i)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(total):
        epoch, pos = divmod(i, steps_per_epoch)
        idx = data.epoch_permutation(seed, epoch, len(images))[pos * batch_size:(pos + 1) * batch_size]
        params, opt_state = step(params, opt_state, images[idx], labels[idx], i)
    params = jax.device_get(params)
    accuracy = test_accuracy(Classifier(params, {"sha256": "", "test_accuracy": 0.0}), dataset, data_dir)
    return params, accuracy, time.time() - start


def test_accuracy(classifier, dataset, data_dir=""):
    images, labels = data.load_split(dataset, "test", data_dir)
    _, probs = classifier.predict(images)
    return float(np.mean(probs.argmax(1) == labels))


@contextlib.contextmanager
def _file_lock(path):
    """Parallel runs (seeds of a sweep) wait for one another instead of all training."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


PARAMS_FILE = "params.msgpack"


def _save(folder, params, meta):
    tmp = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, PARAMS_FILE), "wb") as f:
        f.write(flax.serialization.to_bytes(params))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, folder)  # atomic: readers see no half-written classifier


def _load(folder):
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        abstract = jax.eval_shape(lambda: CNN().init(
            jax.random.PRNGKey(0), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1)))["params"])
        with open(os.path.join(folder, PARAMS_FILE), "rb") as f:
            params = flax.serialization.from_bytes(abstract, f.read())
    except Exception as e:  # any unreadable file means the same thing to the user
        raise ClassifierError(f"Cached classifier in {folder} cannot be read ({e}). Delete that "
                              "folder; it is retrained on next use.") from e
    params = jax.tree.map(np.asarray, params)
    if weights_sha256(params) != meta.get("sha256"):
        raise ClassifierError(f"Cached classifier in {folder}: its weights do not match the sha256 "
                              "in meta.json (corrupt or edited). Delete that folder; it is "
                              "retrained on next use.")
    return params, meta


_LOADED = {}


def cache_folder_name(dataset):
    """'.msgpack' names the file format: folders from the earlier orbax format are left alone."""
    return f"{dataset}-{RECIPE}.msgpack"


def get_classifier(dataset, data_dir="", cache_dir=""):
    """The dataset's classifier: from memory, else from the cache, else trained and cached."""
    if dataset not in TARGET_ACCURACY:
        raise ClassifierError(f"No domain classifier for dataset {dataset!r}; valid: "
                              f"{sorted(TARGET_ACCURACY)}.")
    root = os.path.join(resolve_cache_dir(cache_dir), "classifier")
    folder = os.path.join(root, cache_folder_name(dataset))
    if folder in _LOADED:
        return _LOADED[folder]
    os.makedirs(root, exist_ok=True)
    with _file_lock(folder + ".lock"):
        if not os.path.isdir(folder):
            logging.info("Training the %s domain classifier (first use; cached in %s).", dataset, folder)
            params, accuracy, seconds = train(dataset, data_dir)
            if accuracy < TARGET_ACCURACY[dataset]:
                raise ClassifierError(
                    f"The {dataset} classifier reached test accuracy {accuracy:.4f}, below its "
                    f"target {TARGET_ACCURACY[dataset]}; the recipe in gan/evaluation/classifier.py "
                    "needs more epochs or capacity.")
            meta = {"dataset": dataset, "recipe": RECIPE, "sha256": weights_sha256(params),
                    "test_accuracy": accuracy, "train_seconds": round(seconds, 1),
                    "jax_version": jax.__version__}
            _save(folder, params, meta)
            logging.info("Trained the %s classifier in %.0f s: test accuracy %.4f, sha256 %s.",
                         dataset, seconds, accuracy, meta["sha256"])
        params, meta = _load(folder)
    pinned = PINNED.get(dataset)
    if pinned and pinned["sha256"] != meta["sha256"]:
        logging.warning("The %s classifier's sha256 %s differs from the pinned %s (another machine "
                        "or library version?): its metrics are not comparable with the pinned "
                        "ones.", dataset, meta["sha256"], pinned["sha256"])
    _LOADED[folder] = Classifier(params, meta)
    return _LOADED[folder]
