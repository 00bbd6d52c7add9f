"""Training throughput of the compiled train step, through the same ParallelTrainer as training.

A script that prints numbers, not a test. Usage (from the repo root):
  python experiments/benchmark.py [--batch_sizes=64,128] [--steps=30] [--replicas=1,5]
    [--dtypes=float32,bfloat16] [--upsamplers=transpose,bilinear,nearest]
Each row: one variant's compile time, ms per call, images/s summed over replicas (a call is
one train step of every replica), achieved GFLOP/s (XLA's cost analysis of the compiled call /
time), its share of this machine's matmul peak measured in the same run, and XLA's temp memory. Random uint8 images stand in for the dataset: throughput does
not depend on pixel values. Replica rows run the default upsampler only.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from gan import data, models
from gan.config_checks import default_config
from gan.parallel import ParallelTrainer
from gan.train_step import create_state

flags.DEFINE_list("batch_sizes", ["64", "128"], "Batch sizes (per replica).")
flags.DEFINE_list("upsamplers", list(models.UPSAMPLERS), "Upsamplers to time.")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes to time.")
flags.DEFINE_list("replicas", ["1"], "Seed replicas per program (vmapped) to time.")
flags.DEFINE_integer("steps", 30, "Timed calls per variant (after one compiling call).")
flags.DEFINE_bool("compare_flax_transpose", True, "Also time nn.ConvTranspose for 'transpose'.")
FLAGS = flags.FLAGS
NUM_IMAGES = 4096


def time_variant(upsample, impl, batch_size, dtype, replicas, steps):
    config = default_config()
    config.model.upsample, config.model.transpose_impl, config.dtype = upsample, impl, dtype
    trainer = ParallelTrainer(config, 28, 1, jnp.dtype(dtype), replicas=replicas)
    state = trainer.place(trainer.stack([
        create_state(config, trainer.generator, trainer.discriminator, (28, 28, 1), seed)
        for seed in range(replicas)]))
    images = trainer.place_images(
        np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 28, 28, 1), np.uint8))
    indices = trainer.stack([data.batch_indices(seed, 0, 1, batch_size, NUM_IMAGES)
                             for seed in range(replicas)])
    t0 = time.perf_counter()
    compiled = trainer.compiled(state, images, indices)
    state, metrics = jax.block_until_ready(trainer.call(state, images, indices))
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    memory = compiled.memory_analysis()
    temp_mb = getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.call(state, images, indices)
    jax.block_until_ready(metrics)
    call_s = (time.perf_counter() - t0) / steps
    return compile_s, call_s, flops, temp_mb


def matmul_peak_gflops(dtype, n=2048, repeats=20):
    """This machine's dense matmul rate, the yardstick for the efficiency column."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    jax.block_until_ready(out)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def main(_):
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    peaks = {d: matmul_peak_gflops(jnp.dtype(d)) for d in FLAGS.dtypes}
    print("matmul peak GFLOP/s: " + ", ".join(f"{d} {p:.0f}" for d, p in peaks.items()))
    print(f"{'upsample':10s} {'impl':11s} {'dtype':9s} {'replicas':>8s} {'batch':>5s} "
          f"{'compile s':>9s} {'ms/call':>8s} {'img/s':>7s} {'GFLOP/s':>8s} {'of peak':>7s} "
          f"{'temp MB':>7s}")
    variants = []
    for upsample in FLAGS.upsamplers:
        impls = ["custom_vjp"]
        if upsample == "transpose" and FLAGS.compare_flax_transpose:
            impls.append("flax")
        variants += [(upsample, impl, 1) for impl in impls]
    variants += [("transpose", "custom_vjp", int(r)) for r in FLAGS.replicas if int(r) > 1]
    for batch_size in map(int, FLAGS.batch_sizes):
        for dtype in FLAGS.dtypes:
            for upsample, impl, replicas in variants:
                compile_s, call_s, flops, temp_mb = time_variant(
                    upsample, impl, batch_size, dtype, replicas, FLAGS.steps)
                name = impl if upsample == "transpose" else "-"
                gflops = flops / call_s / 1e9
                print(f"{upsample:10s} {name:11s} {dtype:9s} {replicas:8d} {batch_size:5d} "
                      f"{compile_s:9.1f} {call_s * 1e3:8.1f} "
                      f"{replicas * batch_size / call_s:7.0f} {gflops:8.1f} "
                      f"{gflops / peaks[dtype]:7.0%} {temp_mb:7.1f}", flush=True)


if __name__ == "__main__":
    app.run(main)
