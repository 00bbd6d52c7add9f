"""The benchmark scripts in experiments/ run, print what their committed outputs show, and the
im2col convolution that experiments/bf16_amx.py times computes what XLA's convolution does."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gan import conv_transpose

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import bf16_amx  # noqa: E402

_DIMS = ("NHWC", "HWIO", "NHWC")


def run_script(*args):
    env = dict(os.environ, XLA_FLAGS="")  # one host device, whatever the caller set
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("shape,kernel,strides,pads", bf16_amx.CHECK_CASES)
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-4), (jnp.bfloat16, 0.1)])
def test_im2col_conv_equals_xla_conv(shape, kernel, strides, pads, dtype, tol):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), dtype)
    w = jnp.asarray(rng.normal(size=kernel), dtype)
    expected = lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), strides,
                                        pads, dimension_numbers=_DIMS)
    got = bf16_amx.im2col_conv(x, w, strides, pads)
    assert got.dtype == dtype and got.shape == expected.shape
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, atol=tol, rtol=tol)

    # The kernel gradient (the only one the custom VJPs of gan/conv_transpose.py take).
    def kernel_grad(conv, x, w):
        return jax.grad(lambda v: jnp.sum(jnp.sin(conv(x, v, strides, pads,
                                                       dimension_numbers=_DIMS)
                                                  .astype(jnp.float32))))(w)
    np.testing.assert_allclose(
        np.asarray(kernel_grad(bf16_amx.im2col_conv, x, w), np.float32),
        kernel_grad(lax.conv_general_dilated, x.astype(jnp.float32), w.astype(jnp.float32)),
        atol=tol * 10, rtol=tol)


def test_use_convolution_switches_the_model_and_back():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 14, 14, 3)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(2).normal(size=(4, 4, 3, 5)), jnp.float32)

    def step(x, w):  # a strided conv and its custom VJP: convolutions in gan/ throughout
        return jax.grad(lambda x, w: jnp.sum(jnp.sin(conv_transpose.strided_conv(
            x, w, (2, 2), ((1, 1), (1, 1))))), (0, 1))(x, w)

    def convolutions():  # a new function each time, so that no trace is reused
        return jax.jit(lambda x, w: step(x, w)).lower(x, w).as_text().count(
            "stablehlo.convolution")

    plain, plain_grads = convolutions(), step(x, w)
    with pytest.raises(RuntimeError), bf16_amx.use_convolution(bf16_amx.im2col_conv):
        assert convolutions() == 0 < plain
        patched_grads = step(x, w)
        raise RuntimeError("leaving the block by an error restores the convolution too")
    assert conv_transpose.lax is lax and bf16_amx.subpixel.lax is lax
    assert convolutions() == plain
    for a, b in zip(patched_grads, plain_grads):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_bf16_amx_script_rejects_bad_flags():
    for bad in ("--batch_sizes=0", "--batch_sizes=abc", "--batch_sizes=", "--steps=0",
                "--dtypes=float64"):
        result = subprocess.run([sys.executable, "experiments/bf16_amx.py", bad], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, (bad, result.stderr)
        assert bad.split("=")[0] in result.stderr, (bad, result.stderr)


def test_benchmark_script_prints_a_row_per_dtype():
    out = run_script("experiments/benchmark.py", "--upsamplers=transpose",
                     "--compare_flax_transpose=false", "--batch_sizes=8",
                     "--dtypes=float32,bfloat16", "--steps=1")
    peak_line = next(line for line in out.splitlines() if line.startswith("matmul peak"))
    assert "float32" in peak_line and "bfloat16" in peak_line
    rows = [line.split() for line in out.splitlines() if line.startswith("transpose ")]
    assert [row[3] for row in rows] == ["float32", "bfloat16"]
    assert all(float(row[10]) > 0 for row in rows)  # img/s


def test_bf16_amx_script_runs_its_check_and_every_section():
    out = run_script("experiments/bf16_amx.py", "--batch_sizes=4", "--steps=1")
    assert "im2col convolution = lax.conv_general_dilated" in out
    for section in ("matmul 2048x2048x2048", "layers at batch 4", "whole default train step"):
        assert section in out
    step_rows = [line for line in out.splitlines() if line.strip().startswith("batch")]
    assert len(step_rows) == 2 and all("im2col + matmul" in line for line in step_rows)
