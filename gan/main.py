"""Entry point: `python -m gan.main --config=configs/default.py --workdir=DIR`.

Parses flags only; every knob lives in the config (override any field with --config.a.b=value).
A config with a sweep (configs/ablation.py) runs every arm x seed, then writes the report:
    --list_arms          print the arms with their indices and exit
    --arm=INDEX_OR_NAME  run only that arm's seeds (one job per arm); no report
    --report_only        rebuild DIR/report.md from the runs that exist, listing missing ones
Several processes (hosts) training one run, every process running the same command:
    --distributed        let JAX find the processes (TPU VM pod slice, SLURM, Open MPI)
    --coordinator_address=HOST:PORT --num_processes=N --process_id=I   an explicit launch
    --distributed_timeout=SECONDS   how long to wait for all processes to join (300)
"""
import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gan import distributed, report, sweep, train
from gan.errors import UserFacingError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_bool("list_arms", False, "Sweep configs: print the arms with their indices.")
flags.DEFINE_string("arm", None, "Sweep configs: run only this arm (index or name).")
flags.DEFINE_bool("report_only", False, "Sweep configs: only rebuild the report from DIR.")
flags.DEFINE_bool("distributed", False, "Several processes: let jax.distributed.initialize() "
                  "find them (TPU VM pod slice, SLURM, Open MPI).")
flags.DEFINE_string("coordinator_address", None, "Several processes: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "Several processes: how many.")
flags.DEFINE_integer("process_id", None, "Several processes: this one's index, 0..N-1.")
flags.DEFINE_integer("distributed_timeout", 300, "Several processes: seconds to wait for all "
                     "of them to join before giving up.")
flags.mark_flags_as_required(["config"])


def _quiet_libraries(record):
    """Orbax logs every checkpoint step at INFO through absl; keep its warnings only."""
    return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def run(config, workdir):
    sweep_flags = [f"--{name}" for name in ("list_arms", "arm", "report_only")
                   if FLAGS[name].present]
    if not sweep.has_sweep(config):
        if sweep_flags:
            raise UserFacingError(f"{', '.join(sweep_flags)} need a config with a sweep, "
                                  "e.g. --config=configs/ablation.py.")
        return train.train_and_evaluate(config, _require(workdir))
    if FLAGS.list_arms:
        print(sweep.describe_arms(config))
        return None
    workdir = _require(workdir)
    if FLAGS.report_only:
        return _write_report(config, workdir)
    sweep.run_sweep(config, workdir, arm=FLAGS.arm)
    if FLAGS.arm is not None:
        logging.info("Ran arm %s only; when every arm is done: --report_only.", FLAGS.arm)
        return None
    return _write_report(config, workdir)


def _write_report(config, workdir):
    return report.write_report(config, workdir) if distributed.is_writer() else None


def _require(workdir):
    if not workdir:
        raise app.UsageError("--workdir is required.")
    return workdir


def _last_line_of_traceback(message):
    """ml_collections puts a config file's whole traceback in its error: keep what it says."""
    if "Traceback (most recent call last)" not in message:
        return message
    lines = [line for line in message.splitlines() if line.strip()]
    return f"{lines[0]} {lines[-1].strip()}"


def parse_flags(argv):
    """absl's parsing, but an unknown --config.a.b field is one clear line, not a traceback."""
    try:
        return FLAGS(argv)
    except (flags.Error, OSError, ValueError) as e:  # also: config file missing or failing
        message = _last_line_of_traceback(str(e))
    except (AttributeError, KeyError) as e:  # ml_collections: no such field (with a suggestion)
        words = str(e.args[0] if e.args else e).replace("\\n", " ").replace("\\'", "").split()
        message = "unknown config field " + " ".join(words).strip("'")
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(2)


def start_processes():
    """Joins a multi-process launch (before anything touches JAX's devices); the processes
    other than 0 then log warnings and errors only."""
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           FLAGS.distributed, timeout_s=FLAGS.distributed_timeout)
    logging.info("JAX: %s.", distributed.describe())
    if not distributed.is_writer():
        logging.set_verbosity(logging.WARNING)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_logger().addFilter(_quiet_libraries)
    try:
        config = FLAGS.config
        "sweep" in config  # pylint: disable=pointless-statement  (loads the file: errors now)
    except OSError as e:  # ml_collections reports a missing config file only on first use
        logging.error("%s", _last_line_of_traceback(str(e)).replace("\n", " "))
        sys.exit(2)
    try:
        start_processes()
        distributed.check_same_launch(config, FLAGS.workdir)
        run(config, FLAGS.workdir)
    except UserFacingError as e:
        logging.error("%s", e)
        sys.exit(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
