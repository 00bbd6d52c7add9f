"""Evaluate images from anywhere: `python -m gan.evaluate --dataset=mnist --samples=PATH`.

PATH is a .npy or .npz of uint8 (or [-1, 1] float) images shaped (N, 28, 28) or (N, 28, 28, 1),
or a folder of grayscale PNGs. Prints the metrics (see gan/evaluation/suite.py) as JSON on
stdout; logs go to stderr. The domain classifier is trained and cached on first use.
"""
import json
import logging as std_logging
import os
import sys

from absl import app, flags, logging

from gan import data
from gan.errors import UserFacingError

flags.DEFINE_enum("dataset", None, sorted(data.DATASETS), "Dataset the images imitate.")
flags.DEFINE_string("samples", None, "A .npy/.npz file or a folder of PNGs.")
flags.DEFINE_integer("num_samples", 0, "Evaluate the first N images; 0: all of them.")
flags.DEFINE_string("data_dir", "", "Folder with <dataset>/ IDX files; '' -> $GAN_DATA_DIR, then TFDS.")
flags.DEFINE_string("cache_dir", "", "Classifier cache; '' -> $GAN_CACHE_DIR, then ~/.cache/gan.")
flags.DEFINE_integer("seed", 0, "Seed of KID's random subsets.")
flags.DEFINE_float("hf_cutoff", 0.25, "High-frequency ratio above this radius (cycles/pixel).")
flags.DEFINE_string("output", "", "Also write the JSON to this file.")
flags.mark_flags_as_required(["dataset", "samples"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Orbax logs each classifier save/restore step at INFO; keep its warnings only.
    logging.get_absl_logger().addFilter(
        lambda r: r.levelno >= std_logging.WARNING or "/orbax/" not in r.pathname)
    try:
        from gan.evaluation import inputs, suite  # after flag parsing: jax import is slow
        images = inputs.load_samples(FLAGS.samples)
        result = suite.evaluate_images(
            images, FLAGS.dataset, data_dir=FLAGS.data_dir, num_samples=FLAGS.num_samples or None,
            cache_dir=FLAGS.cache_dir, rng_seed=FLAGS.seed, hf_cutoff=FLAGS.hf_cutoff)
    except (UserFacingError, ValueError) as e:
        logging.error("%s", e)
        sys.exit(2)
    text = json.dumps(result, indent=2)
    print(text)
    if FLAGS.output:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    app.run(main)
