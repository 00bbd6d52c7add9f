"""Scalars to `metrics.jsonl` (readable without TensorBoard) and to TensorBoard events."""
import json
import math
import os

from absl import logging


class MetricsWriter:
    def __init__(self, workdir, enabled=True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter  # Import here: only the writing process needs it.
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step):
        """Drops rows past `step`: a resumed run rewrites them from its checkpoint on."""
        if not (self.enabled and os.path.exists(self.path)):
            return
        with open(self.path) as f:
            rows = [line for line in f if line.strip()]
        kept = [line for line in rows if 0 <= _row_step(line) <= step]
        if len(kept) != len(rows):
            logging.info("metrics.jsonl: dropping %d rows after step %d (resuming there).",
                         len(rows) - len(kept), step)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)

    def write(self, step, scalars):
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({k: v if isinstance(v, bool) else float(v) for k, v in scalars.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        for k, v in row.items():
            if k != "step" and isinstance(v, float) and math.isfinite(v):
                self._tb.add_scalar(k, v, int(step))
        self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()


def _row_step(line):
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1  # A torn line from a killed run.


def read_metrics(workdir):
    """All rows of a run's metrics.jsonl, skipping a torn last line."""
    path = os.path.join(workdir, "metrics.jsonl")
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows
