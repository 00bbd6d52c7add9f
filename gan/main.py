"""Entry point: `python -m gan.main --config=configs/default.py --workdir=DIR`.

Parses flags only; every knob lives in the config (override any field with --config.a.b=value).
"""
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gan import train
from gan.errors import UserFacingError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_libraries(record):
    """Orbax logs every checkpoint step at INFO through absl; keep its warnings only."""
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_logger().addFilter(_quiet_libraries)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except UserFacingError as e:
        logging.error("%s", e)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
