"""Can XLA's CPU backend use this CPU's bfloat16 matrix units (AMX) for the DCGAN? A script
that prints numbers, not a test. Usage (from the repo root):
  python experiments/bf16_amx.py [--batch_sizes=64,128] [--steps=30]

It measures, in one process:
1. Dense matmuls (2048^3): float32; bfloat16 in and out (XLA's CPU compiler normalises such a
   dot to float32: converts around an f32 dot); bfloat16 in with float32 accumulation
   (`preferred_element_type=float32`), the form the CPU's bf16 matrix library calls take.
2. The two largest layers of the default model (D's 14x14x64 -> 7x7x128 stride-2 conv, and the
   2x2 stride-1 conv, 9x9x128 -> 8x8x256, that computes G's sub-pixel 7x7x128 -> 14x14x64
   transposed conv, gan/subpixel.py; D's input gradient has the same form): XLA's convolution
   in float32, bfloat16, bfloat16 with float32 accumulation; and the same layer as im2col (an
   explicit patch matrix) + one matmul, timing the patch copy and the matmul apart.
3. The whole default train step with every convolution of FastConv / FastConvTranspose
   (gan/conv_transpose.py, gan/subpixel.py) computed as im2col + matmul with float32
   accumulation (gradients as matmuls too), against XLA's convolutions, in float32 and bfloat16.
   The im2col convolution is checked equal to XLA's, in float32 and bfloat16, before anything
   is timed.
Of benchmark.py's flags it reads --batch_sizes and --steps; giving any other is an error.
"""
import contextlib
import functools
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # noqa: E402  (same trainer, data, timing and matmul peak as benchmark.py)

from gan import conv_transpose, subpixel  # noqa: E402

FLAGS = flags.FLAGS  # --batch_sizes and --steps are benchmark.py's flags, imported with it
USED_FLAGS = ("batch_sizes", "steps")
_DIMS = ("NHWC", "HWIO", "NHWC")


def seconds(f, *args, repeats=20):
    jax.block_until_ready(f(*args))
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / repeats


@jax.custom_vjp
def accumulate_f32_matmul(a, b):
    """a @ b contracting a's last axis, accumulated in float32, returned in a's dtype; its
    gradients are matmuls of the same form (so bf16 stays bf16 in, f32 accumulate)."""
    return lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32).astype(a.dtype)


def _matmul_fwd(a, b):
    return accumulate_f32_matmul(a, b), (a, b)


def _matmul_bwd(residuals, g):
    a, b = residuals
    g = g.astype(a.dtype)
    da = lax.dot_general(g, b, (((g.ndim - 1,), (1,)), ((), ())),
                         preferred_element_type=jnp.float32).astype(a.dtype)
    db = lax.dot_general(a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1]),
                         (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return da, db.astype(b.dtype)


accumulate_f32_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _pads(pads):
    return ((0, 0), (0, 0)) if pads == "VALID" else tuple(map(tuple, pads))


def _patch_matrix(x, kernel_hw, strides, pads):
    """im2col: (B, Ho, Wo, kh*kw*C), taps in HWI order (matches w.reshape(kh*kw*C, O))."""
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    (kh, kw), (sh, sw) = kernel_hw, strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    cols = [lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (ho - 1) + 1,
                                        j + sw * (wo - 1) + 1, x.shape[3]), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _patches(x, kernel_hw, strides, pads):
    # 16-bit values are moved as uint16: XLA CPU copied bfloat16 slices into the patch matrix
    # at ~1 GB/s at batch 128, uint16 ones 4-6x faster (uint32 did not help float32).
    if x.dtype.itemsize != 2:
        return _patch_matrix(x, kernel_hw, strides, pads)
    moved = _patch_matrix(lax.bitcast_convert_type(x, jnp.uint16), kernel_hw, strides, pads)
    return lax.bitcast_convert_type(moved, x.dtype)


def _patches_fwd(x, kernel_hw, strides, pads):
    return _patches(x, kernel_hw, strides, pads), x.shape


def _patches_bwd(kernel_hw, strides, pads, shape, g):
    # The bitcasts have no gradient: differentiate the float version instead.
    _, vjp = jax.vjp(lambda x: _patch_matrix(x, kernel_hw, strides, pads),
                     jnp.zeros(shape, g.dtype))
    return vjp(g)


_patches.defvjp(_patches_fwd, _patches_bwd)


def patches(x, kernel_hw, strides, pads):
    return _patches(x, tuple(kernel_hw), tuple(strides), _pads(pads))


def im2col_conv(x, w, window_strides, padding, *, dimension_numbers=_DIMS, **options):
    """lax.conv_general_dilated (NHWC/HWIO, explicit pads or 'VALID', no dilation or groups)
    as im2col + one matmul."""
    if (tuple(dimension_numbers) != _DIMS or options
            or (isinstance(padding, str) and padding != "VALID")):
        raise ValueError(f"im2col_conv supports NHWC/HWIO, explicit pads or 'VALID' and no "
                         f"other options; got {dimension_numbers}, {padding!r}, {options}.")
    kh, kw, cin, cout = w.shape
    pads = _pads(padding)
    for n, k, s, (lo, hi) in zip(x.shape[1:3], (kh, kw), window_strides, pads):
        if n + lo + hi < k:
            raise ValueError(f"im2col_conv: padded input {n + lo + hi} smaller than kernel {k}.")
    return accumulate_f32_matmul(patches(x, (kh, kw), window_strides, padding),
                                 w.reshape(kh * kw * cin, cout))


@contextlib.contextmanager
def use_convolution(conv):
    """Within the block, gan.conv_transpose's and gan.subpixel's convolutions are `conv`."""
    shim = types.SimpleNamespace(**{n: getattr(lax, n) for n in dir(lax) if not n.startswith("_")})
    shim.conv_general_dilated = conv
    saved = conv_transpose.lax, subpixel.lax
    conv_transpose.lax = subpixel.lax = shim
    try:
        yield
    finally:
        conv_transpose.lax, subpixel.lax = saved


# (input, kernel, strides, pads) of the equivalence check: what gan/conv_transpose.py and
# gan/subpixel.py pass (negative pads come from kernel_size=1's input gradient).
CHECK_CASES = [((3, 14, 14, 8), (4, 4, 8, 5), (2, 2), ((1, 2), (1, 2))),
               ((2, 9, 9, 6), (2, 2, 6, 7), (1, 1), "VALID"),
               ((2, 10, 10, 3), (4, 4, 3, 4), (2, 2), ((2, 2), (2, 2))),
               ((2, 7, 9, 3), (3, 2, 3, 4), (1, 2), ((2, 0), (1, 1))),
               ((2, 14, 14, 8), (1, 1, 8, 4), (2, 2), ((0, -1), (0, -1)))]


def check_im2col():
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape, kernel, strides, pads in CHECK_CASES:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=kernel), jnp.float32)

        def loss(conv, x, w):
            return jnp.sum(jnp.sin(conv(x, w, strides, pads, dimension_numbers=_DIMS)))

        for a, b in zip(jax.grad(lambda x, w: loss(lax.conv_general_dilated, x, w), (0, 1))(x, w),
                        jax.grad(lambda x, w: loss(im2col_conv, x, w), (0, 1))(x, w)):
            worst = max(worst, float(jnp.max(jnp.abs(a - b))))
        y1 = lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMS)
        worst = max(worst, float(jnp.max(jnp.abs(y1 - im2col_conv(x, w, strides, pads)))))
        # bfloat16: the uint16 patch copy must be exact; the output is rounded to bfloat16.
        x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
        if not jnp.array_equal(patches(x16, kernel[:2], strides, pads),
                               _patch_matrix(x16, kernel[:2], strides, _pads(pads))):
            raise SystemExit(f"bfloat16 patches differ from the plain copy for {shape}, {kernel}")
        y16 = im2col_conv(x16, w16, strides, pads).astype(jnp.float32)
        y32 = lax.conv_general_dilated(x16.astype(jnp.float32), w16.astype(jnp.float32),
                                       strides, pads, dimension_numbers=_DIMS)
        if float(jnp.max(jnp.abs(y16 - y32))) > 2 ** -7 * float(jnp.max(jnp.abs(y32))):
            raise SystemExit(f"bfloat16 im2col convolution off by more than bfloat16 rounding "
                             f"for {shape}, {kernel}")
    if worst > 1e-4:
        raise SystemExit(f"im2col convolution differs from lax.conv_general_dilated by {worst}")
    print(f"im2col convolution = lax.conv_general_dilated (values and gradients in float32, "
          f"max abs difference {worst:.1e}; bfloat16 values to its rounding)", flush=True)


def matmul_rows(n=2048):
    rows = [("float32", jnp.float32, False), ("bfloat16 in and out", jnp.bfloat16, False),
            ("bfloat16 in, float32 accumulate", jnp.bfloat16, True)]
    print(f"\nmatmul {n}x{n}x{n}: GFLOP/s")
    for name, dtype, accumulate_f32 in rows:
        gflops = benchmark.matmul_peak_gflops(jnp.dtype(dtype), n, accumulate_f32=accumulate_f32)
        print(f"  {name:32s} {gflops:7.0f}", flush=True)


def layer_rows(batch):
    # (name, input shape, kernel, strides, pads): the default model's two largest layers.
    layers = [("D conv 14x14x64->7x7x128 k4 s2", (batch, 14, 14, 64), (4, 4, 64, 128), (2, 2),
               ((1, 1), (1, 1))),
              ("G subpixel conv 9x9x128->8x8x256 k2", (batch, 9, 9, 128), (2, 2, 128, 256),
               (1, 1), "VALID")]
    print(f"\nlayers at batch {batch}: forward GFLOP/s (ms)")
    for name, shape, kernel, strides, pads in layers:
        out = []
        for dtype in (jnp.float32, jnp.bfloat16):
            x, w = jnp.ones(shape, dtype), jnp.ones(kernel, dtype)
            make_patches = jax.jit(lambda x: patches(x, kernel[:2], strides, pads))
            p = make_patches(x)
            flops = 2 * np.prod(p.shape) * kernel[3]
            pets = [None] if dtype == jnp.float32 else [None, jnp.float32]
            for pet in pets:
                conv = jax.jit(lambda x, w: lax.conv_general_dilated(
                    x, w, strides, pads, dimension_numbers=_DIMS, preferred_element_type=pet))
                s = seconds(conv, x, w)
                label = jnp.dtype(dtype).name + (" f32-acc" if pet else "")
                out.append(f"XLA conv {label} {flops / s / 1e9:.0f} ({s * 1e3:.1f})")
            s_p = seconds(make_patches, x)
            s_m = seconds(jax.jit(accumulate_f32_matmul), p, w.reshape(-1, kernel[3]))
            out.append(f"im2col {jnp.dtype(dtype).name}: patches {s_p * 1e3:.1f} ms "
                       f"({p.nbytes / s_p / 1e9:.1f} GB/s) + matmul {flops / s_m / 1e9:.0f} "
                       f"({s_m * 1e3:.1f})")
        print(f"  {name}:\n    " + "\n    ".join(out), flush=True)


def step_rows(batch_sizes, steps):
    print("\nwhole default train step (transpose, custom_vjp): img/s")
    for batch in batch_sizes:
        for dtype in ("float32", "bfloat16"):
            row = []
            for name, conv in [("XLA convs", lax.conv_general_dilated),
                               ("im2col + matmul", im2col_conv)]:
                with use_convolution(conv):
                    call_s = benchmark.time_variant(
                        benchmark.make_config("transpose", "custom_vjp", dtype), batch, 1,
                        steps)[2]
                row.append(f"{name} {batch / call_s:6.0f}")
            print(f"  batch {batch:4d} {dtype:9s} " + "   ".join(row), flush=True)


def check_flags():
    ignored = [f"--{f.name}" for f in FLAGS.flags_by_module_dict().get(benchmark.__name__, [])
               if f.present and f.name not in USED_FLAGS]
    if ignored:
        raise app.UsageError(f"{', '.join(ignored)}: not used by bf16_amx.py (it reads "
                             f"--batch_sizes and --steps only; see benchmark.py for the rest).")
    benchmark.check_counts(USED_FLAGS)


def main(_):
    check_flags()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}", flush=True)
    check_im2col()
    matmul_rows()
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    for batch in batch_sizes:
        layer_rows(batch)
    step_rows(batch_sizes, FLAGS.steps)


if __name__ == "__main__":
    app.run(main)
