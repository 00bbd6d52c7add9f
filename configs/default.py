"""One DCGAN training run on MNIST. Every knob lives here; override with --config.a.b=value."""
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16 (params stay float32)
    # single: one device. pmap: state replicated, each global batch split over the local devices.
    # sharded: jit with the batch sharded over a device mesh. train.batch_size is global in all.
    config.parallelism = "single"
    config.sync_batch_norm = True  # pmap: batch-norm statistics over the global batch
    # Sweeps: seeds of one arm trained together as replicas of one program (single only): one
    # compile, each seed its own data order, checkpoints and metrics. On this 2-core CPU it
    # saves nothing in speed (experiments/benchmark_cpu.md), hence 1.
    config.replicas_per_program = 1
    # How replicas share the program: 'loop' traces each replica's step one after another;
    # 'vmap' batches them (XLA CPU turns batched convs into grouped convs, ~5x slower there).
    config.replicas_impl = "loop"

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "mnist"  # mnist | fashion_mnist
    config.dataset.data_dir = ""  # folder with <name>/ IDX .gz files; '' -> $GAN_DATA_DIR, then TFDS
    config.dataset.download = False  # TFDS only: may it download? (offline machines: False)
    config.dataset.image_size = 0  # 0: native size (28); 32 or 64 resize the images once at load

    config.model = ml_collections.ConfigDict()
    config.model.latent_dim = 100
    config.model.upsample = "transpose"  # transpose | bilinear | nearest
    # How transposed convs are computed: G's upsampling (upsample='transpose') and the input
    # gradient of D's strided convs. 'custom_vjp' never emits the lhs-dilated convs that XLA CPU
    # runs slowly (gan/conv_transpose.py); 'flax' is nn.ConvTranspose / nn.Conv with autodiff.
    # Same math, same parameters.
    config.model.transpose_impl = "custom_vjp"
    config.model.kernel_size = 4
    config.model.g_features = 64  # channels of the last hidden G layer; doubles per layer inward
    config.model.d_features = 64  # channels of the first D layer; doubles per layer
    config.model.d_activation = "leaky_relu"  # leaky_relu | relu
    config.model.leaky_slope = 0.2
    config.model.d_norm = "none"  # none | batch

    config.loss = "nonsaturating"  # minimax | nonsaturating | hinge | least_squares

    config.optim = ml_collections.ConfigDict()
    config.optim.g_lr = 2e-4
    config.optim.d_lr = 2e-4
    config.optim.g_b1 = 0.5
    config.optim.d_b1 = 0.5
    config.optim.b2 = 0.999

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 3000  # total steps; if num_epochs > 0 it wins
    config.train.num_epochs = 0
    config.train.steps_per_call = 1  # train steps traced into one compiled call
    config.train.log_every = 100
    config.train.sample_every = 500
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    config.train.num_samples = 64  # images in each sample grid (fixed latents)
    # Flag the generator as collapsed when its samples' per-pixel spread falls below this
    # fraction of the reals' (logged as sample_diversity / collapsed at each sample grid).
    config.train.collapse_diversity = 0.1

    config.eval = ml_collections.ConfigDict()  # gan/evaluation: pinned classifier, FID/KID/PR/...
    config.eval.every = 0  # steps between in-training evaluations (metrics.jsonl); 0: none
    config.eval.final = True  # evaluate the final model into DIR/eval.json
    config.eval.num_samples = 10000  # fakes per evaluation (and as many test reals as reference)
    config.eval.cache_dir = ""  # domain-classifier cache; '' -> $GAN_CACHE_DIR, then ~/.cache/gan
    config.eval.hf_cutoff = 0.25  # high-frequency energy ratio above this radius (cycles/pixel)
    return config
