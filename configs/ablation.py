"""The ablation: configs/default.py's run, plus the arms it varies and how many seeds each gets.

    python -m gan.main --config=configs/ablation.py --workdir=DIR         # upsample x d_activation
    python -m gan.main --config=configs/ablation.py:loss --workdir=DIR    # the four losses
    python -m gan.main --config=configs/ablation.py:slope --workdir=DIR   # LeakyReLU slopes
    ... --config.dataset.name=fashion_mnist --config.sweep.num_seeds=3 --config.train.num_steps=5000

An arm is a dict of overrides of the base config (dotted field names); its name and folder
are derived from them (`gan/sweep.py`). Seeds config.seed .. config.seed + num_seeds - 1 run
for every arm, in DIR/<arm name>/seed_<k>/.
"""
import importlib.util
import os

import ml_collections

UPSAMPLERS = ("transpose", "bilinear", "nearest")  # C1
D_ACTIVATIONS = ("leaky_relu", "relu")  # C2
LOSSES = ("minimax", "nonsaturating", "hinge", "least_squares")  # C3
LEAKY_SLOPES = (0.0, 0.01, 0.1, 0.2, 0.3)  # C2, the slope as a number (0.0 is ReLU)

ARM_SETS = {
    "default": [{"model.upsample": u, "model.d_activation": a}
                for u in UPSAMPLERS for a in D_ACTIVATIONS],
    "loss": [{"loss": loss} for loss in LOSSES],
    "slope": [{"model.leaky_slope": s} for s in LEAKY_SLOPES],
}

# Budget (CPU-sized). The default MNIST ablation is 6 arms x 5 seeds = 30 runs and must end
# within 60 min on the 2-core CPU. Measured per training step (batch 64, quiet CPU,
# experiments/benchmark.py): transpose ~75 ms, nearest ~170 ms, bilinear ~200 ms (resize + conv
# does 4x the multiply-adds of a stride-2 transposed conv in the upsampling layers), i.e.
# ~150 ms on average over the arms. Per run:
#   400 steps x ~150 ms                          ~60 s
#   2 evaluations at 2,000 samples (step 200 and the final one)   ~2 x 10 s
#   data load, init, compile (later seeds reuse DIR/jax_cache)    ~5-10 s
# ~85 s per run x 30 = ~43 min. 400 steps x 64 images is ~0.4 epoch of MNIST: short runs, and
# the report says its verdicts hold for this budget only. On an accelerator, scale up with e.g.
# --config.train.num_steps=20000 --config.eval.every=1000 --config.eval.num_samples=10000.
NUM_STEPS = 400
EVAL_EVERY = 200
EVAL_SAMPLES = 2000
NUM_SEEDS = 5


def _default_config():
    path = os.path.join(os.path.dirname(__file__), "default.py")
    spec = importlib.util.spec_from_file_location("gan_default_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(arm_set="default"):
    arm_set = arm_set or "default"
    if arm_set not in ARM_SETS:
        raise ValueError(f"Unknown arm set {arm_set!r}; use one of {sorted(ARM_SETS)}, "
                         "e.g. --config=configs/ablation.py:loss")
    config = _default_config()
    config.train.num_steps = NUM_STEPS
    config.train.log_every = 50
    config.train.sample_every = 200
    config.train.checkpoint_every = 200
    config.eval.every = EVAL_EVERY
    config.eval.num_samples = EVAL_SAMPLES

    config.sweep = ml_collections.ConfigDict()
    config.sweep.arm_set = arm_set
    config.sweep.num_seeds = NUM_SEEDS
    config.sweep.compilation_cache = True  # reuse compiled programs across runs (DIR/jax_cache)
    config.sweep.arms = [dict(arm) for arm in ARM_SETS[arm_set]]
    return config
