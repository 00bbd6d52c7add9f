"""Metric implementations on synthetic data, cross-checked against independent computations."""
import jax
import numpy as np
import pytest
import scipy.linalg
from PIL import Image
from scipy.spatial.distance import cdist

from gan import data, models
from gan.evaluation import class_coverage, d_health, degrade, fid, inputs, neighbours, spectral


def _random_cov(rng, d, rank=None):
    a = rng.normal(size=(d, rank or 2 * d))
    return a @ a.T / a.shape[1]


# --- FID / KID -------------------------------------------------------------------------------

def test_fid_matches_scipy_sqrtm_on_well_conditioned_statistics():
    rng = np.random.default_rng(0)
    d = 40
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    reference = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    r = fid.sqrtm_psd(s1)
    np.testing.assert_allclose(r, scipy.linalg.sqrtm(s1).real, atol=1e-9)
    np.testing.assert_allclose(r @ r, s1, atol=1e-9)


def test_fid_finite_and_real_on_degenerate_sets():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(500, 64))
    identical = np.repeat(rng.normal(size=(1, 64)), 300, axis=0)  # zero covariance
    few = rng.normal(size=(20, 64))  # N < feature dimension: singular covariance
    for fake in (identical, few):
        value = fid.fid(real, fake)
        assert np.isfinite(value) and value > 0
    # With s2 = 0 the square-root term vanishes: FID = |mu1 - mu2|^2 + tr(s1).
    mu1, s1 = fid.feature_stats(real)
    mu2, s2 = fid.feature_stats(identical)
    assert np.abs(s2).max() < 1e-20  # rounding only
    assert fid.fid(real, identical) == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.trace(s1))
    # Rank-deficient on both sides: still agrees with the exact value where scipy is finite.
    s1, s2 = _random_cov(rng, 30, rank=5), _random_cov(rng, 30, rank=8)
    ours = fid.trace_sqrt_product(s1, s2)
    assert np.isfinite(ours) and ours >= 0
    assert ours == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real, rel=1e-5, abs=1e-6)


def test_fid_zero_on_identical_sets_and_grows_with_mean_shift():
    x = np.random.default_rng(2).normal(size=(400, 16))
    assert fid.fid(x, x) == pytest.approx(0.0, abs=1e-8)
    shifts = [fid.fid(x, x + s) for s in (0.5, 1.0, 2.0)]
    np.testing.assert_allclose(shifts, [16 * s ** 2 for s in (0.5, 1.0, 2.0)], rtol=1e-8)


def test_kid_unbiased_near_zero_for_same_distribution_positive_for_shift():
    rng = np.random.default_rng(3)
    real, same, shifted = (rng.normal(size=(1500, 32)) for _ in range(3))
    shifted += 0.5
    k_same, std_same = fid.kid(real, same, num_subsets=20, subset_size=500)
    k_shift, _ = fid.kid(real, shifted, num_subsets=20, subset_size=500)
    assert abs(k_same) < 3 * std_same + 1e-3
    assert k_shift > 10 * abs(k_same) and k_shift > 0


def test_kid_matches_naive_formula():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.2
    k = lambda a, b: (a @ b / 5 + 1) ** 3
    n = 30
    naive = (sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
             + sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
             - 2 * sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n ** 2)
    assert fid._mmd2_unbiased(x, y) == pytest.approx(naive, rel=1e-10)
    # KID averages that estimator over subsets of at most half of each set: they differ, so
    # the std is a real spread even when the sets are smaller than subset_size.
    mean, std = fid.kid(x, y, num_subsets=20, subset_size=1000)
    assert std > 0 and abs(mean - naive) < 3 * std


# --- precision / recall / density / coverage --------------------------------------------------

def _naive_prdc(real, fake, k_pr=3, k_dc=5):
    drr, dff, drf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_pr, r_dc = np.sort(drr, 1)[:, k_pr], np.sort(drr, 1)[:, k_dc]
    f_pr = np.sort(dff, 1)[:, k_pr]
    return {"precision": np.mean((drf <= r_pr[:, None]).any(0)),
            "recall": np.mean((drf <= f_pr[None, :]).any(1)),
            "density": (drf <= r_dc[:, None]).sum() / (k_dc * len(fake)),
            "coverage": np.mean(drf.min(1) <= r_dc)}


def test_prdc_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(neighbours, "BLOCK", 7)  # blocks that do not divide the set sizes
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(45, 4)) * 1.3 + 0.3
    got, want = neighbours.prdc(real, fake), _naive_prdc(real, fake)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_prdc_responds_to_mode_dropping_and_collapse():
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(10, 8)) * 6
    sample = lambda modes, n: centres[rng.choice(modes, n)] + rng.normal(size=(n, 8))
    real = sample(np.arange(10), 1000)
    full = neighbours.prdc(real, sample(np.arange(10), 1000))
    half = neighbours.prdc(real, sample(np.arange(5), 1000))
    collapsed = neighbours.prdc(real, np.repeat(real[:1], 1000, axis=0))
    assert full["precision"] > 0.8 and full["recall"] > 0.8
    assert half["recall"] < 0.6 and half["coverage"] < 0.6  # half the modes: about half recalled
    assert half["precision"] > full["precision"] - 0.05  # what is generated is still real-like
    assert collapsed["recall"] < 0.01 and collapsed["coverage"] < 0.01


def test_prdc_rejects_too_few_points():
    with pytest.raises(ValueError, match="more than 5 real"):
        neighbours.prdc(np.zeros((5, 3)), np.zeros((10, 3)))


# --- class coverage ---------------------------------------------------------------------------

def test_class_metrics_on_uniform_and_single_class_predictions():
    uniform = np.eye(10)[np.arange(1000) % 10]
    good = class_coverage.class_metrics(uniform, uniform)
    assert good["classes_covered"] == 10
    assert good["class_kl"] == pytest.approx(0.0, abs=1e-12)
    assert good["classifier_score"] == pytest.approx(10.0, rel=1e-6)
    one = class_coverage.class_metrics(np.eye(10)[np.zeros(1000, int)], uniform)
    assert one["classes_covered"] == 1
    assert one["class_kl"] == pytest.approx(np.log(10))
    assert one["classifier_score"] == pytest.approx(1.0, rel=1e-6)
    # Confident but uncertain predictions lower the score: (0.5, 0.5) mixtures give at most 5.
    blurred = 0.5 * uniform + 0.5 * np.roll(uniform, 1, axis=1)
    assert class_coverage.class_metrics(blurred, uniform)["classifier_score"] < 5.0 + 1e-9


# --- spectra ----------------------------------------------------------------------------------

def _smooth_images(n=200, size=28, seed=7):
    rng = np.random.default_rng(seed)
    x = degrade.blur((rng.random((n, size, size, 1)) * 255).astype(np.uint8), 1.5)
    return np.clip((x.astype(float) - x.mean()) * 6 + 128, 0, 255).astype(np.uint8)


def test_spectral_ratios_identity_blur_noise_checkerboard():
    images = _smooth_images()
    same = spectral.spectral_metrics(images, images)
    assert same["hf_ratio"] == pytest.approx(1.0) and same["checkerboard"] == pytest.approx(1.0)
    assert len(same["spectrum_fake"]) == len(same["spectrum_real"]) == 21  # radii 0 .. 20 / 28
    assert spectral.spectral_metrics(degrade.blur(images, 1.0), images)["hf_ratio"] < 1
    assert spectral.spectral_metrics(degrade.noise(images, 0.1), images)["hf_ratio"] > 1
    scores = [spectral.spectral_metrics(degrade.checkerboard(images, a), images)["checkerboard"]
              for a in (0.1, 0.3)]
    assert 1 < scores[0] < scores[1]


def test_power_spectrum_parseval_and_radial_profile():
    images = _smooth_images(20)
    x = images[..., 0] / 255.0
    x = x - x.mean((1, 2), keepdims=True)
    power = spectral.mean_power(images)
    assert power.sum() == pytest.approx(np.mean(np.sum(x ** 2, (1, 2))), rel=1e-10)  # Parseval
    assert power[0, 0] == pytest.approx(0.0, abs=1e-20)  # mean removed
    with pytest.raises(ValueError, match="hf_cutoff"):
        spectral.spectral_metrics(images, images, hf_cutoff=0.9)


# --- discriminator health --------------------------------------------------------------------

def test_calibration_scores():
    labels = np.array([1, 1, 0, 0] * 50)
    perfect = d_health.calibration(labels.astype(float), labels)
    assert perfect == {"d_ece": 0.0, "d_brier": 0.0, "d_accuracy": 1.0}
    coin = d_health.calibration(np.full(200, 0.5), labels)
    assert coin["d_ece"] == pytest.approx(0.0) and coin["d_brier"] == pytest.approx(0.25)
    wrong = d_health.calibration(np.where(labels == 1, 0.05, 0.95), labels)
    assert wrong["d_ece"] == pytest.approx(0.95) and wrong["d_accuracy"] == 0.0
    # Calibrated but unsure: p = 0.7 on a set where 70% are real has ECE 0, Brier 0.21.
    mixed = d_health.calibration(np.full(10, 0.7), np.array([1] * 7 + [0] * 3))
    assert mixed["d_ece"] == pytest.approx(0.0) and mixed["d_brier"] == pytest.approx(0.21)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_d_health_dead_units_and_gradients(norm):
    disc = models.Discriminator(image_size=28, features=8, activation="relu", norm=norm)
    rng = np.random.default_rng(8)
    reals = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    fakes = rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8)
    variables = jax.device_get(disc.init(jax.random.PRNGKey(0), np.zeros((2, 28, 28, 1), np.float32),
                                         train=False))
    # Kill 3 of the first layer's 8 channels: a bias far below any pre-activation.
    variables["params"]["Conv_0"]["bias"] = np.asarray(variables["params"]["Conv_0"]["bias"]).copy()
    variables["params"]["Conv_0"]["bias"][:3] = -1e3
    h = d_health.d_health(disc, variables, reals, fakes)
    assert h["d_dead_fraction_0"] == pytest.approx(3 / 8)
    assert h["d_dead_fraction_mean"] == pytest.approx(np.mean([h["d_dead_fraction_0"],
                                                               h["d_dead_fraction_1"]]))
    assert {f"d_param_grad_norm_{i}" for i in range(3)} <= set(h)
    # Input gradient: the batched per-image norms equal a one-image gradient's norm.
    x = data.to_model_range(np.concatenate([reals, fakes]))
    one = jax.grad(lambda im: disc.apply(variables, im[None], train=False)[0])(x[5])
    per_image = jax.vmap(jax.grad(lambda im: disc.apply(variables, im[None], train=False)[0]))(x)
    norms = np.sqrt(np.sum(np.asarray(per_image, np.float64) ** 2, axis=(1, 2, 3)))
    assert np.sqrt(np.sum(np.asarray(one) ** 2)) == pytest.approx(norms[5], rel=1e-5)
    assert h["d_input_grad_norm"] == pytest.approx(norms.mean(), rel=1e-5)
    assert h["d_param_grad_norm_0"] > 0  # the live channels still get gradient
    for key in ("d_ece", "d_brier", "d_accuracy"):
        assert 0 <= h[key] <= 1


# --- inputs -----------------------------------------------------------------------------------

def test_as_uint8_images_accepts_valid_forms():
    rng = np.random.default_rng(9)
    u8 = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(inputs.as_uint8_images(u8), u8[..., None])
    floats = data.to_model_range(u8[..., None])
    np.testing.assert_array_equal(inputs.as_uint8_images(floats), u8[..., None])  # exact round trip
    np.testing.assert_array_equal(inputs.as_uint8_images(u8.astype(np.int64)), u8[..., None])


@pytest.mark.parametrize("array, match", [
    (np.zeros((4, 28, 27), np.uint8), "shape"),
    (np.zeros((4, 28, 28, 3), np.uint8), "grayscale"),
    (np.full((4, 28, 28), 2.0, np.float32), r"\[-1, 1\]"),
    (np.full((4, 28, 28), 0.5, np.float32), r"looks like \[0, 1\]"),
    (np.full((4, 28, 28), np.nan, np.float32), "NaN"),
    (np.full((4, 28, 28), 300, np.int32), r"\[0, 255\]"),
])
def test_as_uint8_images_rejects_bad_input(array, match):
    with pytest.raises(inputs.SampleError, match=match):
        inputs.as_uint8_images(array)


def test_check_count():
    images = np.zeros((50, 28, 28, 1), np.uint8)
    assert len(inputs.check_count(images, 20)) == 20
    with pytest.raises(inputs.SampleError, match="50 images, but 100 are needed"):
        inputs.check_count(images, 100)
    with pytest.raises(inputs.SampleError, match="minimum"):
        inputs.check_count(images[:5])


def test_load_samples_npy_npz_and_png_folder(tmp_path):
    rng = np.random.default_rng(10)
    u8 = rng.integers(0, 256, (15, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "a.npy", u8)
    np.savez(tmp_path / "b.npz", images=u8, labels=np.arange(15))
    np.savez(tmp_path / "c.npz", data.to_model_range(u8[..., 0]))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(u8):
        Image.fromarray(im[..., 0]).save(folder / f"{i:03d}.png")
    for path in ("a.npy", "b.npz", "c.npz", "pngs"):
        np.testing.assert_array_equal(inputs.load_samples(str(tmp_path / path)), u8, err_msg=path)
    np.savez(tmp_path / "d.npz", x=u8, y=u8)
    with pytest.raises(inputs.SampleError, match="'images'"):
        inputs.load_samples(str(tmp_path / "d.npz"))
    with pytest.raises(inputs.SampleError, match="no such file"):
        inputs.load_samples(str(tmp_path / "missing.npy"))
