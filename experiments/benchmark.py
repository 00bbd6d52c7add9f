"""Training throughput of the compiled train step: images/s per upsampler, batch size and impl.

A script that prints numbers, not a test. Usage (from the repo root):
  python experiments/benchmark.py [--batch_sizes=64,128] [--steps=30]
Random uint8 images stand in for the dataset: throughput does not depend on pixel values.
"""
import time

import jax
import numpy as np
from absl import app, flags

from gan import models
from gan.config_checks import default_config
from gan.train_step import create_state, make_train_call, make_train_step

flags.DEFINE_list("batch_sizes", ["64", "128"], "Global batch sizes.")
flags.DEFINE_list("upsamplers", list(models.UPSAMPLERS), "Upsamplers to time.")
flags.DEFINE_integer("steps", 30, "Timed steps per variant (after one warm-up call).")
flags.DEFINE_bool("compare_flax_transpose", True, "Also time nn.ConvTranspose for 'transpose'.")
FLAGS = flags.FLAGS


def time_variant(upsample, impl, batch_size, steps):
    config = default_config()
    config.model.upsample, config.model.transpose_impl = upsample, impl
    generator, discriminator = models.make_models(config, 28)
    state = create_state(config, generator, discriminator, (28, 28, 1), 0)
    call = jax.jit(make_train_call(make_train_step(config, generator, discriminator)))
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (4096, 28, 28, 1), np.uint8))
    indices = np.arange(batch_size, dtype=np.int32)[None]
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(call(state, images, indices))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = call(state, images, indices)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
    return compile_s, step_s


def main(_):
    print(f"devices: {jax.devices()}")
    print(f"{'upsample':10s} {'impl':11s} {'batch':>5s} {'compile s':>9s} {'ms/step':>8s} "
          f"{'img/s':>7s}")
    for batch_size in map(int, FLAGS.batch_sizes):
        for upsample in FLAGS.upsamplers:
            impls = ["custom_vjp"]
            if upsample == "transpose" and FLAGS.compare_flax_transpose:
                impls.append("flax")
            for impl in impls:
                compile_s, step_s = time_variant(upsample, impl, batch_size, FLAGS.steps)
                name = impl if upsample == "transpose" else "-"
                print(f"{upsample:10s} {name:11s} {batch_size:5d} {compile_s:9.1f} "
                      f"{step_s * 1e3:8.1f} {batch_size / step_s:7.0f}", flush=True)


if __name__ == "__main__":
    app.run(main)
