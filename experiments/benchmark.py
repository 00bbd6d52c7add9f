"""Training throughput of the compiled train step, through the same ParallelTrainer as training.

A script that prints numbers, not a test. Usage (from the repo root):
  python experiments/benchmark.py [--batch_sizes=64,128] [--steps=30] [--replicas=1,5]
    [--replicas_impls=loop,vmap] [--parallelism=single,pmap,sharded]
    [--dtypes=float32,bfloat16] [--upsamplers=transpose,bilinear,nearest]
pmap and sharded rows run over every device the process sees; choose how many at launch:
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/benchmark.py ...  (CPU)
  CUDA_VISIBLE_DEVICES=0,1 python experiments/benchmark.py ...                           (GPU)
Batch sizes are global (split over the devices in pmap/sharded, which skip batch sizes that do
not divide by the device count) and per replica in replica rows (single mode only).

Each row: one variant's compile time (its first call: compile plus one step), ms per call,
images/s summed over replicas (a call is one train step of every replica), and
- GFLOP/s: useful work per second = useful FLOPs per image * images/s. Useful FLOPs are XLA's
  cost analysis of the textbook program, compiled but not run: the same upsampler and batch
  size with transpose_impl='flax' (nn.ConvTranspose / nn.Conv, no zero taps), float32, one
  replica, single device. The fast custom_vjp program's own count includes the zero taps of
  gan/subpixel.py (1.31x of the exact work in a layer at n=7), so it would overstate the work;
  using one count per (upsampler, batch) makes the rows comparable with each other.
- of peak: GFLOP/s / the matmul peak of the row's dtype, measured on one device in this run
  (bfloat16 and float16 matmuls accumulating in float32, as matrix units do; for rows over
  several physical accelerators, the share of their combined peak is this divided by
  `devices`; forced CPU host devices share the same cores).
- XLA GF/s: XLA's own count of the timed program / time, zero taps included (jit modes; '-'
  for pmap, whose program has no compiled() handle here). In sharded mode XLA counts the
  per-device program, so this is that count x devices: all the devices' work, including any
  computation the partitioner replicates rather than splits (which GFLOP/s leaves out).
- prog MB: the compiled program's argument + output + temp - alias bytes (jit modes; per
  device in sharded), from XLA's memory analysis.
- peak MB: the first device's peak_bytes_in_use since the process started (GPU/TPU; '-' where
  the backend keeps no such statistic, as on CPU). It never decreases across rows.
The process's peak RSS is printed at the end. Random uint8 images stand in for the dataset:
throughput does not depend on pixel values. Replica rows run the default upsampler only.
"""
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from gan import data, models
from gan.config_checks import CHOICES, default_config
from gan.parallel import PARALLELISMS, REPLICA_IMPLS, ParallelTrainer
from gan.train_step import create_state

flags.DEFINE_list("batch_sizes", ["64", "128"], "Global batch sizes (per replica in replica rows).")
flags.DEFINE_list("upsamplers", list(models.UPSAMPLERS), "Upsamplers to time.")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes to time.")
flags.DEFINE_list("replicas", ["1"], "Seed replicas per program to time.")
flags.DEFINE_list("replicas_impls", list(REPLICA_IMPLS), "config.replicas_impl of replica rows.")
flags.DEFINE_list("parallelism", ["single"], "config.parallelism modes to time.")
flags.DEFINE_integer("steps", 30, "Timed calls per variant (after one compiling call).")
flags.DEFINE_bool("compare_flax_transpose", True, "Also time nn.ConvTranspose for 'transpose'.")
FLAGS = flags.FLAGS
NUM_IMAGES = 4096
MB = 2**20


def make_config(upsample, impl, dtype, mode="single", replicas_impl="loop"):
    config = default_config()
    config.model.upsample, config.model.transpose_impl, config.dtype = upsample, impl, dtype
    config.parallelism, config.replicas_impl = mode, replicas_impl
    return config


def setup(config, batch_size, replicas):
    """A trainer with its placed state, dataset and one call's indices."""
    trainer = ParallelTrainer(config, 28, 1, jnp.dtype(config.dtype), replicas=replicas)
    state = trainer.place(trainer.stack([
        create_state(config, trainer.generator, trainer.discriminator, (28, 28, 1), seed)
        for seed in range(replicas)]))
    images = trainer.place_images(
        np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8))
    indices = trainer.stack([data.batch_indices(seed, 0, 1, batch_size, NUM_IMAGES)
                             for seed in range(replicas)])
    return trainer, state, images, indices


def xla_flops(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX: one per device
    return float(cost["flops"]) if cost and "flops" in cost else None


def program_bytes(compiled):
    """Bytes the program holds while it runs: inputs, outputs and scratch, minus the outputs
    that reuse an input's buffer. None where the backend gives no memory analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def device_peak_bytes():
    stats = jax.local_devices()[0].memory_stats()  # None on CPU
    return stats.get("peak_bytes_in_use") if isinstance(stats, dict) else None


def useful_flops_per_image(upsample, batch_size):
    """XLA's count for the textbook program (no zero taps) of one image's train step."""
    trainer, state, images, indices = setup(make_config(upsample, "flax", "float32"),
                                            batch_size, 1)
    flops = xla_flops(trainer.compiled(state, images, indices))
    return flops / batch_size if flops is not None else None


def time_variant(config, batch_size, replicas, steps):
    trainer, state, images, indices = setup(config, batch_size, replicas)
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(trainer.call(state, images, indices))
    compile_s = time.perf_counter() - t0
    flops = prog_bytes = None
    if trainer.mode != "pmap":  # compiled() covers the jit modes only
        compiled = trainer.compiled(state, images, indices)
        flops, prog_bytes = xla_flops(compiled), program_bytes(compiled)
        # Sharded: XLA analyses the per-device SPMD program, which every device runs.
        flops = flops * trainer.num_shards if flops is not None else None
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.call(state, images, indices)
    jax.block_until_ready(metrics)
    call_s = (time.perf_counter() - t0) / steps
    return trainer.num_shards, compile_s, call_s, flops, prog_bytes


def matmul_peak_gflops(dtype, n=2048, repeats=20, accumulate_f32=None):
    """This machine's dense matmul rate, the yardstick for the efficiency column.

    Low-precision inputs accumulate in float32, as matrix units do. On a CPU with bfloat16
    matrix units (an Intel Xeon's AMX: experiments/benchmark_cpu_xeon.md) XLA turns a
    bfloat16-out dot into converts around a float32 one, but calls the bf16 units when the dot
    accumulates in float32 (~4x float32 there).
    The model's convolutions reach neither (experiments/bf16_amx.py). `accumulate_f32`
    overrides the choice (None: float32 accumulation for inputs narrower than 32 bits).
    """
    a = jnp.ones((n, n), dtype)
    if accumulate_f32 is None:
        accumulate_f32 = jnp.dtype(dtype).itemsize < 4
    accumulate = jnp.float32 if accumulate_f32 else None
    f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=accumulate))
    jax.block_until_ready(f(a))
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    jax.block_until_ready(out)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def fmt(value, spec, width):
    return "-".rjust(width) if value is None else format(value, f"{width}{spec}")


def fmt_mb(num_bytes):
    return fmt(None if num_bytes is None else num_bytes / MB, ".1f", 7)


def variants(mode):
    """(upsample, transpose impl, replicas, replicas impl) of the rows of one mode."""
    rows = []
    for upsample in FLAGS.upsamplers:
        impls = ["custom_vjp"]
        if upsample == "transpose" and FLAGS.compare_flax_transpose:
            impls.append("flax")
        rows += [(upsample, impl, 1, "-") for impl in impls]
    if mode == "single":  # ParallelTrainer runs replicas in single mode only
        rows += [("transpose", "custom_vjp", int(r), rep_impl)
                 for r in FLAGS.replicas if int(r) > 1 for rep_impl in FLAGS.replicas_impls]
    return rows


def check_counts(names):
    """--batch_sizes / --replicas (lists of integers >= 1) and --steps (>= 1), where named."""
    for name in ("batch_sizes", "replicas"):
        values = FLAGS[name].value
        if name in names and (not values or not all(v.isdecimal() and int(v) >= 1
                                                    for v in values)):
            raise app.UsageError(f"--{name}={','.join(values)}: give a comma-separated list of "
                                 f"integers >= 1.")
    if "steps" in names and FLAGS.steps < 1:
        raise app.UsageError(f"--steps={FLAGS.steps} must be >= 1.")


def check_flags():
    for name, values, valid in [("parallelism", FLAGS.parallelism, PARALLELISMS),
                                ("replicas_impls", FLAGS.replicas_impls, REPLICA_IMPLS),
                                ("upsamplers", FLAGS.upsamplers, models.UPSAMPLERS)]:
        bad = [v for v in values if v not in valid]
        if bad:
            raise app.UsageError(f"--{name}: unknown {bad}; valid: {list(valid)}.")
    check_counts(("batch_sizes", "replicas", "steps"))
    bad = [d for d in FLAGS.dtypes if d not in CHOICES["dtype"]]
    if bad or not FLAGS.dtypes:
        raise app.UsageError(f"--dtypes: unknown {bad}; valid: {list(CHOICES['dtype'])}.")


def peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def main(_):
    check_flags()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"device_count {jax.device_count()}, local_device_count {jax.local_device_count()}, "
          f"device_kind {jax.devices()[0].device_kind}", flush=True)
    peaks = {d: matmul_peak_gflops(jnp.dtype(d)) for d in FLAGS.dtypes}
    print("matmul peak GFLOP/s (one device): "
          + ", ".join(f"{d} {p:.0f}" for d, p in peaks.items()), flush=True)
    print(f"{'upsample':10s} {'impl':11s} {'rep impl':8s} {'dtype':9s} {'mode':7s} "
          f"{'devices':>7s} {'replicas':>8s} {'batch':>5s} {'compile s':>9s} {'ms/call':>8s} "
          f"{'img/s':>7s} {'GFLOP/s':>8s} {'of peak':>7s} {'XLA GF/s':>8s} {'prog MB':>7s} "
          f"{'peak MB':>7s}", flush=True)
    useful = {}  # (upsample, batch) -> useful FLOPs per image, computed once
    for batch_size in map(int, FLAGS.batch_sizes):
        for dtype in FLAGS.dtypes:
            for mode in FLAGS.parallelism:
                if mode != "single" and batch_size % jax.device_count():
                    print(f"skipped: batch {batch_size} does not divide over "
                          f"{jax.device_count()} devices in mode {mode}", flush=True)
                    continue
                for upsample, impl, replicas, rep_impl in variants(mode):
                    key = (upsample, batch_size)
                    if key not in useful:
                        useful[key] = useful_flops_per_image(upsample, batch_size)
                    config = make_config(upsample, impl, dtype, mode,
                                         rep_impl if replicas > 1 else "loop")
                    devices, compile_s, call_s, flops, prog_bytes = time_variant(
                        config, batch_size, replicas, FLAGS.steps)
                    img_s = replicas * batch_size / call_s
                    gflops = useful[key] * img_s / 1e9 if useful[key] is not None else None
                    share = gflops / peaks[dtype] if gflops is not None else None
                    xla_gflops = flops / call_s / 1e9 if flops is not None else None
                    name = impl if upsample == "transpose" else "-"
                    print(f"{upsample:10s} {name:11s} {rep_impl:8s} {dtype:9s} {mode:7s} "
                          f"{devices:7d} {replicas:8d} {batch_size:5d} {compile_s:9.1f} "
                          f"{call_s * 1e3:8.1f} {img_s:7.0f} {fmt(gflops, '.1f', 8)} "
                          f"{fmt(share, '.0%', 7)} {fmt(xla_gflops, '.1f', 8)} "
                          f"{fmt_mb(prog_bytes)} {fmt_mb(device_peak_bytes())}", flush=True)
    print(f"process peak RSS: {peak_rss_mb():.0f} MB", flush=True)


if __name__ == "__main__":
    app.run(main)
