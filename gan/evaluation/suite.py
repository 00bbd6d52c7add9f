"""The one entry point of evaluation: every metric of a set of fakes against the real test split.

`evaluate_images` takes uint8 images from anywhere; `evaluate_generator` samples a generator,
quantises its images to uint8 exactly as the reals are stored, and calls `evaluate_images`.
Every result carries the sample count, the reference and the classifier's identity.
"""
import functools
import time

import jax
import numpy as np

from gan import data
from gan.evaluation import classifier as classifier_lib
from gan.evaluation.class_coverage import class_metrics
from gan.evaluation.d_health import d_health
from gan.evaluation.fid import fid, kid
from gan.evaluation.inputs import as_uint8_images, check_count
from gan.evaluation.neighbours import prdc
from gan.evaluation.spectral import spectral_metrics

DEFAULT_NUM_SAMPLES = 10000
DEFAULT_HF_CUTOFF = 0.25  # cycles per pixel: half the Nyquist frequency
D_EVAL_IMAGES = 1000  # reals and as many fakes for discriminator health
REFERENCE_SEED = 0  # fixes which test images form a reference smaller than the split


@functools.lru_cache(maxsize=4)
def _reference(dataset, data_dir, cache_dir, n):
    """The first n test images of a fixed permutation (all 10,000 when n >= 10,000), with their
    classifier outputs. Cached: evaluations inside training reuse them."""
    images, _ = data.load_split(dataset, "test", data_dir)
    if n < len(images):
        images = images[np.random.default_rng(REFERENCE_SEED).permutation(len(images))[:n]]
    features, probs = classifier_lib.get_classifier(dataset, data_dir, cache_dir).predict(images)
    return images, features, probs


def evaluate_images(fake_uint8, dataset_name, *, data_dir="", num_samples=None, cache_dir="",
                    discriminator=None, d_variables=None, rng_seed=0,
                    hf_cutoff=DEFAULT_HF_CUTOFF, kid_subsets=100):
    """All metrics of uint8 fakes (N, H, W[, 1]) vs the real test split; a flat JSON-ready dict.

    num_samples: how many of the fakes to use (all if None); that many test images form the
    reference (all 10,000 when N >= 10,000). Metrics are compared at the classifier's 28x28;
    spectra and D health at the fakes' own size, with the reals resized the way training does.
    """
    start = time.time()
    fakes = np.asarray(fake_uint8)
    if fakes.dtype != np.uint8:
        raise TypeError(f"evaluate_images takes uint8 images, got {fakes.dtype}; quantise floats "
                        "in [-1, 1] with gan.data.to_uint8 first.")
    fakes = check_count(as_uint8_images(fakes, "images"), num_samples, "images")
    n, size = len(fakes), fakes.shape[1]
    clf = classifier_lib.get_classifier(dataset_name, data_dir, cache_dir)
    reals, real_features, real_probs = _reference(  # resolved paths: the cache key
        dataset_name, data.resolve_data_dir(data_dir), classifier_lib.resolve_cache_dir(cache_dir), n)
    fakes_28 = data.resize_images(fakes, classifier_lib.IMAGE_SIZE)
    fake_features, fake_probs = clf.predict(fakes_28)
    reals_native = data.resize_images(reals, size)

    kid_mean, kid_std = kid(real_features, fake_features, num_subsets=kid_subsets, seed=rng_seed)
    out = {"dataset": dataset_name, "num_samples": n, "reference": "test",
           "num_reference": len(reals), "classifier_sha256": clf.sha256,
           "classifier_test_accuracy": clf.test_accuracy, "classifier_recipe": clf.meta["recipe"],
           "fid": fid(real_features, fake_features), "kid": kid_mean, "kid_std": kid_std,
           "kid_subsets": kid_subsets}
    out.update(prdc(real_features, fake_features))
    out.update(class_metrics(fake_probs, real_probs))
    out.update(spectral_metrics(fakes, reals_native, hf_cutoff), hf_cutoff=hf_cutoff)
    if discriminator is not None:
        if d_variables is None:
            raise ValueError("evaluate_images got a discriminator but no d_variables.")
        m = min(D_EVAL_IMAGES, n)
        out.update(d_health(discriminator, d_variables, reals_native[:m], fakes[:m]),
                   d_eval_images=2 * m)
    out["eval_seconds"] = time.time() - start
    return out


def real_floor(dataset_name, num_samples, *, data_dir="", seed=0, **kwargs):
    """The metrics of real train images (a fixed random subset) vs the test reference: the best
    values a generator can hope for at this N. kwargs go to evaluate_images."""
    images, _ = data.load_split(dataset_name, "train", data_dir)
    subset = images[train_subset(len(images), num_samples, seed)]
    return evaluate_images(subset, dataset_name, data_dir=data_dir, num_samples=num_samples,
                           rng_seed=seed, **kwargs)


def train_subset(num_train, num_samples, seed=0):
    """Indices of the fixed random train subset the real-vs-real floor uses."""
    return np.random.default_rng(seed).permutation(num_train)[:num_samples]


@functools.lru_cache(maxsize=8)
def _sampler(generator):
    """Compiled once per generator: evaluations inside training reuse it."""
    return jax.jit(lambda variables, z: generator.apply(variables, z, train=False))


def sample_generator(generator, g_variables, num_samples, latent_dim, seed, batch_size=500):
    """uint8 (N, H, W, C) samples in inference mode, from latents that are a function of the seed
    alone (and differ from the training and sample-grid latents)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0xE7A1)
    z = np.asarray(jax.random.normal(key, (num_samples, latent_dim)), np.float32)
    apply = _sampler(generator)
    out = []
    for s in range(0, num_samples, batch_size):
        batch = z[s:s + batch_size]
        pad = batch_size - len(batch)  # one compiled shape for every batch
        images = apply(g_variables, np.pad(batch, ((0, pad), (0, 0))))
        out.append(data.to_uint8(np.asarray(images)[:len(batch)]))
    return np.concatenate(out)


def evaluate_generator(config, generator, g_variables, discriminator, d_variables, num_samples,
                       seed):
    """Samples `num_samples` images from the generator and evaluates them (see evaluate_images)."""
    fakes = sample_generator(generator, g_variables, num_samples, config.model.latent_dim, seed)
    ev = config.get("eval", {})
    return evaluate_images(
        fakes, config.dataset.name, data_dir=config.dataset.data_dir, num_samples=num_samples,
        cache_dir=ev.get("cache_dir", ""), discriminator=discriminator, d_variables=d_variables,
        rng_seed=seed, hf_cutoff=ev.get("hf_cutoff", DEFAULT_HF_CUTOFF))
