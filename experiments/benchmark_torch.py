"""PyTorch eager version of the default train step, to compare with experiments/benchmark.py (JAX).

A script that prints numbers, not a test. It needs only torch, numpy and absl (neither jax nor the
`gan` package), so it runs from a separate venv. Usage (from the repo root):
  python experiments/benchmark_torch.py [--batch_sizes=64,128] [--steps=30] [--warmup=3]
    [--dtypes=float32,bfloat16]
The model is configs/default.py's (28x28x1 MNIST, upsample='transpose', d_norm='none',
nonsaturating loss, Adam 2e-4 / (0.5, 0.999)), copied from gan/models.py; the step is
gan/train_step.py's: one D update on (real, detached fresh fakes), then one G update on fresh
latents through the updated D. Each row: ms per step, images/s, achieved GFLOP/s (an analytic
FLOP count of the step / time), its share of the matmul peak measured in the same run with torch,
and the losses after the timed steps. Random uint8 images stand in for the dataset.

FLOP counts (per image, multiply-add = 2 FLOPs, convolutions and dense layers only): 'dense'
counts every kernel tap, including those that fall on padding (what torch's kernels execute);
'valid' counts only taps on real input elements, which is how XLA's cost analysis counts a
padded or dilated convolution (compare it with the JAX benchmark's GFLOP/s). GFLOP/s and
'of peak' below use the 'valid' count, like the JAX benchmark.
"""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from absl import app, flags
from torch import nn

flags.DEFINE_list("batch_sizes", ["64", "128"], "Batch sizes.")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes to time (bfloat16: torch.autocast).")
flags.DEFINE_integer("steps", 30, "Timed steps per variant (after --warmup untimed steps).")
flags.DEFINE_integer("warmup", 3, "Untimed steps per variant before timing.")
flags.DEFINE_integer("threads", 0, "torch.set_num_threads(threads) if > 0; else torch's default.")
FLAGS = flags.FLAGS
NUM_IMAGES = 4096

# configs/default.py, dataset MNIST at native size (SIZE_PATTERNS[28] = (7, 2)).
IMAGE_SIZE, CHANNELS, LATENT_DIM = 28, 1, 100
G_FEATURES, D_FEATURES, KERNEL, LEAKY_SLOPE = 64, 64, 4, 0.2
START = 7  # G's start resolution
LR, BETAS = 2e-4, (0.5, 0.999)


class Generator(nn.Module):
    """z -> Dense(7*7*128, no bias) -> BN -> ReLU -> 7x7x128 -> ConvT(64) 14x14 -> BN -> ReLU
    -> ConvT(1, bias) 28x28 -> tanh. NCHW; flax's is NHWC (same math up to a fixed permutation)."""

    def __init__(self):
        super().__init__()
        width = G_FEATURES * 2  # features * 2 ** (n_up - 1)
        self.width = width
        self.dense = nn.Linear(LATENT_DIM, START * START * width, bias=False)
        # flax BatchNorm(momentum=0.9) == torch momentum 0.1; eps 1e-5 both. Over the 6272
        # features of the (B, 6272) dense output, as flax normalises it before the reshape.
        self.bn0 = nn.BatchNorm1d(START * START * width, eps=1e-5, momentum=0.1)
        # Flax SAME transposed conv (k=4, s=2): explicit pads (2, 2) on the 2x-dilated input,
        # output 2x the input; torch padding=1 is that conv (pads k - 1 - 1 = 2), also 2x.
        self.up1 = nn.ConvTranspose2d(width, width // 2, KERNEL, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2, eps=1e-5, momentum=0.1)
        self.up2 = nn.ConvTranspose2d(width // 2, CHANNELS, KERNEL, stride=2, padding=1, bias=True)

    def forward(self, z):
        x = F.relu(self.bn0(self.dense(z))).reshape(z.shape[0], self.width, START, START)
        x = F.relu(self.bn1(self.up1(x)))
        return torch.tanh(self.up2(x).float())  # flax: jnp.tanh(x.astype(float32))


class Discriminator(nn.Module):
    """Conv(64, s2) -> LeakyReLU(0.2) -> Conv(128, s2) -> LeakyReLU(0.2) -> Dense(1); no norm."""

    def __init__(self):
        super().__init__()
        # XLA SAME for k=4, s=2 on an even size n: output n/2, pads (1, 1) == torch padding=1.
        self.conv1 = nn.Conv2d(CHANNELS, D_FEATURES, KERNEL, stride=2, padding=1)
        self.conv2 = nn.Conv2d(D_FEATURES, D_FEATURES * 2, KERNEL, stride=2, padding=1)
        self.dense = nn.Linear(D_FEATURES * 2 * START * START, 1)

    def forward(self, x):
        x = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        x = F.leaky_relu(self.conv2(x), LEAKY_SLOPE)
        return self.dense(x.flatten(1))[:, 0].float()


def init_dcgan(module):
    """gan/models.py: kernels N(0, 0.02), biases 0; BatchNorm scale 1, offset 0 (flax defaults)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def bce(logits, label):
    """gan/losses.py _bce: mean sigmoid BCE against a constant label, in float32."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, label).float())


def make_train_step(generator, discriminator, dtype):
    g_opt = torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS, eps=1e-8)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=LR, betas=BETAS, eps=1e-8)
    d_params = list(discriminator.parameters())
    use_autocast = dtype == torch.bfloat16

    def forward_ctx():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_autocast)

    def train_step(real):
        batch = real.shape[0]
        # D update: fresh fakes from G in train mode (batch statistics, running stats updated),
        # detached; nonsaturating d_loss = bce(real, 1) + bce(fake, 0).
        for p in d_params:
            p.requires_grad_(True)
        with torch.no_grad(), forward_ctx():
            fake = generator(torch.randn(batch, LATENT_DIM))
        with forward_ctx():
            real_logits = discriminator(real)
            fake_logits = discriminator(fake)
        d_loss = bce(real_logits, 1.0) + bce(fake_logits, 0.0)
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        # G update through the updated D; only G's parameters get gradients (JAX differentiates
        # w.r.t. g_params only), so D's weight gradients are not computed.
        for p in d_params:
            p.requires_grad_(False)
        with forward_ctx():
            logits = discriminator(generator(torch.randn(batch, LATENT_DIM)))
        g_loss = bce(logits, 1.0)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return d_loss.detach(), g_loss.detach()

    return train_step


# ---- analytic FLOP count -------------------------------------------------------------------

def _conv_taps_1d(n_in, n_out, k, stride, pad_lo):
    """Valid taps of a strided conv along one dim: (output o, tap t) with input o*s - lo + t in range."""
    return sum(1 for o in range(n_out) for t in range(k) if 0 <= o * stride - pad_lo + t < n_in)


def _conv_transpose_taps_1d(n_in, n_out, k, stride, padding):
    """Valid taps of a torch-style transposed conv: (input i, tap t) landing on output i*s - p + t."""
    return sum(1 for i in range(n_in) for t in range(k) if 0 <= i * stride - padding + t < n_out)


def layer_macs():
    """{layer: (dense MACs, valid MACs)} per image for one forward pass."""
    k, s = KERNEL, 2
    c_g = G_FEATURES * 2
    layers = {}
    layers["g_dense"] = (LATENT_DIM * START * START * c_g,) * 2
    for name, n_in, c_in, c_out in (("g_up1", START, c_g, c_g // 2),
                                    ("g_up2", 2 * START, c_g // 2, CHANNELS)):
        dense = n_in * n_in * k * k * c_in * c_out  # every input times every tap (col2im form)
        valid = _conv_transpose_taps_1d(n_in, 2 * n_in, k, s, 1) ** 2 * c_in * c_out
        layers[name] = (dense, valid)
    for name, n_in, c_in, c_out in (("d_conv1", IMAGE_SIZE, CHANNELS, D_FEATURES),
                                    ("d_conv2", IMAGE_SIZE // 2, D_FEATURES, 2 * D_FEATURES)):
        n_out = n_in // 2
        dense = n_out * n_out * k * k * c_in * c_out
        valid = _conv_taps_1d(n_in, n_out, k, s, 1) ** 2 * c_in * c_out
        layers[name] = (dense, valid)
    layers["d_dense"] = (2 * D_FEATURES * START * START,) * 2
    return layers


def train_step_flops_per_image():
    """(dense, valid) FLOPs per image of one train step, counting the passes that actually run.

    Per layer, forward, input-gradient and weight-gradient passes each cost the forward's MACs.
    D step: G forward (no grad); D forward on reals and on fakes; D backward for both: weight
    grads of every D layer, input grads of every D layer but the first (images need none).
    G step: G forward; D forward; D input grads of every layer (down to the fake images), no D
    weight grads; G weight grads of every layer, G input grads of every layer but the dense (z).
    """
    m = layer_macs()
    g_layers, d_layers = ["g_dense", "g_up1", "g_up2"], ["d_conv1", "d_conv2", "d_dense"]
    counts = {}  # layer -> number of passes of its forward's cost
    for name in g_layers:
        counts[name] = 1 + 1 + 1  # D-step forward, G-step forward, G-step weight grad
        counts[name] += 0 if name == "g_dense" else 1  # G-step input grad
    for name in d_layers:
        counts[name] = 2 + 2  # forwards on real and fake, weight grads on real and fake
        counts[name] += 0 if name == "d_conv1" else 2  # input grads on real and fake
        counts[name] += 1 + 1  # G step: forward on fake, input grad
    return tuple(2 * sum(counts[n] * m[n][i] for n in counts) for i in (0, 1))


# ---- timing --------------------------------------------------------------------------------

def matmul_peak_gflops(dtype, n=2048, repeats=20):
    """This machine's dense matmul rate in torch, the yardstick for the efficiency column."""
    a = torch.ones((n, n), dtype=dtype)
    with torch.no_grad():
        for _ in range(2):
            out = a @ a
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = a @ a
        elapsed = time.perf_counter() - t0
    del out
    return 2 * n ** 3 * repeats / elapsed / 1e9


def time_variant(batch_size, dtype, steps, warmup):
    torch.manual_seed(0)
    generator, discriminator = Generator(), Discriminator()
    init_dcgan(generator)
    init_dcgan(discriminator)
    generator.train()
    discriminator.train()
    train_step = make_train_step(generator, discriminator, dtype)
    # The dataset as uint8 NCHW; each step gathers its batch and scales it to [-1, 1]
    # (gan/data.to_model_range), in float32 (under autocast the convs cast it to bfloat16).
    images = torch.from_numpy(np.random.default_rng(0).integers(
        0, 256, (NUM_IMAGES, CHANNELS, IMAGE_SIZE, IMAGE_SIZE), np.uint8))
    perm = torch.from_numpy(np.random.default_rng(1).permutation(NUM_IMAGES))
    steps_per_epoch = NUM_IMAGES // batch_size

    def batch(step):
        position = step % steps_per_epoch
        idx = perm[position * batch_size:(position + 1) * batch_size]
        return images.index_select(0, idx).float() / 127.5 - 1.0

    t0 = time.perf_counter()
    for step in range(warmup):
        train_step(batch(step))
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in range(warmup, warmup + steps):
        d_loss, g_loss = train_step(batch(step))
    step_s = (time.perf_counter() - t0) / steps
    return warmup_s, step_s, float(d_loss), float(g_loss)


def main(_):
    if FLAGS.threads > 0:
        torch.set_num_threads(FLAGS.threads)
    print(f"torch {torch.__version__}: {torch.get_num_threads()} threads "
          f"(interop {torch.get_num_interop_threads()}), mkldnn {torch.backends.mkldnn.is_available()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    dense_flops, valid_flops = train_step_flops_per_image()
    print(f"train step FLOPs per image (convs + dense layers): {valid_flops / 1e6:.2f} M valid taps "
          f"(XLA cost-analysis convention), {dense_flops / 1e6:.2f} M all taps incl. padding")
    dtypes = {d: {"float32": torch.float32, "bfloat16": torch.bfloat16}[d] for d in FLAGS.dtypes}
    peaks = {d: matmul_peak_gflops(t) for d, t in dtypes.items()}
    print("matmul peak GFLOP/s: " + ", ".join(f"{d} {p:.0f}" for d, p in peaks.items()))
    print(f"{'upsample':10s} {'impl':11s} {'dtype':9s} {'batch':>5s} {'warmup s':>8s} "
          f"{'ms/step':>8s} {'img/s':>7s} {'GFLOP/s':>8s} {'of peak':>7s} "
          f"{'d_loss':>7s} {'g_loss':>7s}")
    for batch_size in map(int, FLAGS.batch_sizes):
        for name, dtype in dtypes.items():
            warmup_s, step_s, d_loss, g_loss = time_variant(
                batch_size, dtype, FLAGS.steps, FLAGS.warmup)
            gflops = valid_flops * batch_size / step_s / 1e9
            print(f"{'transpose':10s} {'torch':11s} {name:9s} {batch_size:5d} {warmup_s:8.2f} "
                  f"{step_s * 1e3:8.1f} {batch_size / step_s:7.0f} {gflops:8.1f} "
                  f"{gflops / peaks[name]:7.0%} {d_loss:7.3f} {g_loss:7.3f}", flush=True)
            if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
                raise RuntimeError(f"non-finite losses: d_loss {d_loss}, g_loss {g_loss}")


if __name__ == "__main__":
    app.run(main)
