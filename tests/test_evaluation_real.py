"""Evaluation on real MNIST: the pinned classifier, the calibration directions, the entry points.

One MNIST classifier is trained (about a minute on 2 CPU cores) into a temporary cache shared by
the whole module, exactly as a first use would do.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from gan import config_checks, data, models
from gan.evaluation import calibration, classifier, inputs, suite

CONTRACT_KEYS = {
    "num_samples", "classifier_sha256", "classifier_test_accuracy", "fid", "kid", "kid_std",
    "precision", "recall", "density", "coverage", "classes_covered", "class_kl",
    "classifier_score", "hf_ratio", "checkerboard", "spectrum_fake", "spectrum_real"}
D_KEYS = {"d_dead_fraction_0", "d_dead_fraction_1", "d_dead_fraction_mean", "d_input_grad_norm",
          "d_param_grad_norm_0", "d_param_grad_norm_1", "d_param_grad_norm_2", "d_ece", "d_brier",
          "d_accuracy"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("gan_cache"))


@pytest.fixture(scope="module")
def mnist(cache_dir, data_dir):
    """The MNIST classifier, trained on first use into the module's cache."""
    return classifier.get_classifier("mnist", data_dir, cache_dir)


@pytest.fixture(scope="module")
def test_images(data_dir):
    return data.load_split("mnist", "test", data_dir)


def _classifier_folder(cache_dir, dataset="mnist"):
    return os.path.join(cache_dir, "classifier", classifier.cache_folder_name(dataset))


def test_classifier_meets_target_and_is_pinned_on_disk(mnist, cache_dir, data_dir):
    assert mnist.test_accuracy >= classifier.TARGET_ACCURACY["mnist"]
    assert mnist.sha256 == classifier.weights_sha256(mnist.params)
    assert classifier.test_accuracy(mnist, "mnist", data_dir) == mnist.test_accuracy
    folder = _classifier_folder(cache_dir)
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    assert meta["sha256"] == mnist.sha256 and meta["test_accuracy"] == mnist.test_accuracy
    params, _ = classifier._load(folder)  # from disk, not the in-memory copy
    assert classifier.weights_sha256(params) == mnist.sha256


def test_corrupt_cache_is_reported_with_the_fix(mnist, cache_dir, tmp_path, data_dir):
    other = tmp_path / "cache"
    shutil.copytree(_classifier_folder(cache_dir), _classifier_folder(str(other)))
    meta_path = os.path.join(_classifier_folder(str(other)), "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["sha256"] = "0" * 64
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(classifier.ClassifierError, match="Delete that folder"):
        classifier.get_classifier("mnist", data_dir, str(other))
    with pytest.raises(classifier.ClassifierError, match="valid"):
        classifier.get_classifier("cifar10", data_dir, str(other))


def test_classifier_training_is_deterministic(data_dir):
    a, _, _ = classifier.train("mnist", data_dir, max_steps=3)
    b, _, _ = classifier.train("mnist", data_dir, max_steps=3)
    c, _, _ = classifier.train("mnist", data_dir, max_steps=3, seed=1)
    assert classifier.weights_sha256(a) == classifier.weights_sha256(b)
    assert classifier.weights_sha256(a) != classifier.weights_sha256(c)


def test_classifier_outputs_do_not_depend_on_the_batch(mnist, test_images):
    images = test_images[0][:1500]
    f_all, p_all = mnist.predict(images)
    f_few, p_few = mnist.predict(images[1200:1210])  # another padded batch position
    np.testing.assert_allclose(f_few, f_all[1200:1210], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p_few, p_all[1200:1210], rtol=1e-5, atol=1e-7)
    assert f_all.dtype == np.float64 and f_all.shape == (1500, classifier.FEATURE_DIM)


def test_calibration_every_metric_moves_the_right_way(mnist, cache_dir, data_dir):
    strengths = {"blur": (0.5, 1.0, 2.0), "noise": (0.05, 0.1, 0.2),
                 "checkerboard": (0.1, 0.2, 0.4), "drop_classes": (2, 5, 8)}
    rows = calibration.run("mnist", 1500, data_dir, cache_dir, strengths=strengths, kid_subsets=20)
    failed = [(what, values) for what, held, values in calibration.checks(rows) if not held]
    assert not failed, "\n" + calibration.markdown_table(rows)
    assert len(calibration.checks(rows)) >= 13


def _tiny_models(image_size=28):
    config = config_checks.default_config()
    config.model.g_features = 16
    config.model.d_features = 16
    config.eval.cache_dir = ""  # filled in by the test
    return config, *models.make_models(config, image_size)


def test_evaluate_generator_quantises_like_reals_and_returns_the_contract(mnist, cache_dir,
                                                                          data_dir):
    config, generator, discriminator = _tiny_models()
    config.dataset.data_dir, config.eval.cache_dir = data_dir, cache_dir
    g_vars = generator.init(jax.random.PRNGKey(0), np.zeros((2, 100), np.float32), train=False)
    d_vars = discriminator.init(jax.random.PRNGKey(1), np.zeros((2, 28, 28, 1)), train=False)
    fakes = suite.sample_generator(generator, g_vars, 120, 100, seed=3)
    # The same latents through the generator directly, quantised like the reals.
    z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(3), 0xE7A1), (120, 100))
    direct = data.to_uint8(generator.apply(g_vars, z, train=False))
    assert fakes.dtype == np.uint8
    assert np.mean(fakes != direct) < 1e-3  # identical up to float rounding at .5 boundaries
    result = suite.evaluate_generator(config, generator, g_vars, discriminator, d_vars, 120, 3)
    assert CONTRACT_KEYS | D_KEYS <= set(result)
    assert result["num_samples"] == 120 and result["num_reference"] == 120
    assert result["classifier_sha256"] == mnist.sha256
    json.loads(json.dumps(result))  # plain Python values only
    lists, strings = {"spectrum_fake", "spectrum_real"}, {"classifier_sha256"}
    assert all(isinstance(result[k], (int, float)) for k in CONTRACT_KEYS - lists - strings)
    assert all(isinstance(v, float) for k in lists for v in result[k])


def test_evaluate_images_at_32_pixels_with_a_32_pixel_discriminator(mnist, cache_dir, data_dir):
    train_images, _ = data.load_split("mnist", "train", data_dir)
    fakes = data.resize_images(train_images[:200], 32)
    _, _, discriminator = _tiny_models(32)
    d_vars = discriminator.init(jax.random.PRNGKey(1), np.zeros((2, 32, 32, 1)), train=False)
    r = suite.evaluate_images(fakes, "mnist", data_dir=data_dir, cache_dir=cache_dir,
                              discriminator=discriminator, d_variables=d_vars, kid_subsets=5)
    assert r["num_samples"] == 200 and len(r["spectrum_fake"]) == len(r["spectrum_real"])
    assert 0.8 < r["hf_ratio"] < 1.25  # resized reals vs resized reals
    assert {"d_dead_fraction_2", "d_param_grad_norm_3"} <= set(r)  # one more stride-2 layer


def test_evaluate_images_rejects_floats_and_too_few(mnist, cache_dir, data_dir, test_images):
    with pytest.raises(TypeError, match="to_uint8"):
        suite.evaluate_images(np.zeros((100, 28, 28), np.float32), "mnist", cache_dir=cache_dir)
    with pytest.raises(inputs.SampleError, match="100 images, but 500 are needed"):
        suite.evaluate_images(test_images[0][:100], "mnist", data_dir=data_dir,
                              cache_dir=cache_dir, num_samples=500)


def test_cli_on_real_test_images_and_on_bad_input(mnist, cache_dir, data_dir, tmp_path,
                                                  test_images):
    np.savez(tmp_path / "real.npz", images=test_images[0][:400])
    np.save(tmp_path / "bad.npy", np.zeros((400, 28, 30), np.uint8))
    run = lambda path: subprocess.run(
        [sys.executable, "-m", "gan.evaluate", "--dataset=mnist", f"--samples={path}",
         f"--cache_dir={cache_dir}", f"--data_dir={data_dir}", f"--output={tmp_path}/out.json"],
        capture_output=True, text=True, timeout=300)
    ok = run(tmp_path / "real.npz")
    assert ok.returncode == 0, ok.stderr[-2000:]
    result = json.loads(ok.stdout)
    assert result["num_samples"] == 400 and result["classifier_sha256"] == mnist.sha256
    assert result["classes_covered"] == 10 and np.isfinite(result["fid"])
    with open(tmp_path / "out.json") as f:
        assert json.load(f) == result
    bad = run(tmp_path / "bad.npy")
    assert bad.returncode == 2 and "shape (400, 28, 30)" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_fashion_mnist_classifier_meets_target(tmp_path, data_dir):
    fashion = classifier.get_classifier("fashion_mnist", data_dir, str(tmp_path))
    assert fashion.test_accuracy >= classifier.TARGET_ACCURACY["fashion_mnist"]
    assert fashion.sha256 == classifier.weights_sha256(fashion.params)
