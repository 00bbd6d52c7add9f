"""Shared test setup.

Runs before any test module imports jax:
- XLA_FLAGS gives the CPU backend 8 devices, so multi-device (sharding/pmap) tests work on a
  machine without accelerators. Set here with setdefault so a caller's own flags win.
- GAN_CACHE_DIR defaults to a fresh temporary folder shared by the session.
- GAN_DATA_DIR defaults to the `shared/data` folder beside the checkout (see DESIGN.md), which
  holds the real MNIST and Fashion-MNIST IDX files.
"""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# One evaluation-classifier cache for the whole session (and the subprocesses it starts): the
# first test that evaluates trains it (about a minute), later ones load it.
os.environ.setdefault("GAN_CACHE_DIR", tempfile.mkdtemp(prefix="gan_test_cache_"))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO_ROOT, os.pardir, "shared", "data"))
os.environ.setdefault("GAN_DATA_DIR", DEFAULT_DATA_DIR)

import pytest  # noqa: E402  (after the environment is set)


def pytest_configure(config):
    # Also declared in pytest.ini; registering here keeps `-m slow` warning-free if the
    # ini file is bypassed (e.g. `pytest -c /dev/null`).
    config.addinivalue_line("markers", "slow: long-running test, excluded from the default run")


@pytest.fixture(scope="session")
def data_dir():
    """The local dataset root the tests read (real MNIST / Fashion-MNIST IDX files)."""
    path = os.environ["GAN_DATA_DIR"]
    if not os.path.isdir(os.path.join(path, "mnist")):
        pytest.fail(f"GAN_DATA_DIR={path} holds no mnist/ folder; point it at the folder with "
                    "mnist/ and fashion_mnist/ IDX .gz files (../shared/data beside the checkout).")
    return path
