"""Orbax checkpoints of the whole train state plus the data position, in DIR/checkpoints.

A checkpoint that cannot be read (truncated files, missing metadata) is moved aside to
DIR/corrupt_checkpoints/ and the previous good one is used instead; nothing is deleted.

With several processes every one of them calls save, restore and wait (orbax coordinates the
writes: numpy arrays and the JSON item come from process 0); they agree on whether a checkpoint
was readable, and only process 0 moves a bad one aside.
"""
import os
import shutil

import flax
import jax
import orbax.checkpoint as ocp
from absl import logging

from gan import distributed
from gan.errors import UserFacingError


class CheckpointError(UserFacingError, RuntimeError):
    """No usable checkpoint although some exist."""


class Checkpointer:
    def __init__(self, workdir, keep):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.corrupt_directory = os.path.abspath(os.path.join(workdir, "corrupt_checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()})

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step, state, data_position):
        """Asynchronous: training goes on while the files are written."""
        self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)))

    def restore(self, step, abstract_state):
        """(state, data_position) of `step`, shaped and typed like `abstract_state`."""
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self.manager.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        if restored.data is None or "epoch" not in restored.data:
            raise ValueError("the data position (data/) is missing")
        return restored.state, restored.data

    def check_layout(self, step, abstract_state):
        """Raises CheckpointError if the checkpoint's arrays differ in names or shapes from the
        state the current code builds: that is a code/config change, not damage."""
        saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(
            self.manager.item_metadata(step)["state"])}
        expected = {name: tuple(x.shape) for name, x in flax.traverse_util.flatten_dict(
            flax.serialization.to_state_dict(abstract_state), sep=".").items()}
        differing = sorted(f"{name}: checkpoint {saved.get(name)}, model {expected.get(name)}"
                           for name in set(saved) | set(expected)
                           if saved.get(name) != expected.get(name))
        if differing:
            raise CheckpointError(
                f"The checkpoint of step {step} in {self.directory} does not fit the model the "
                f"current code and config build ({len(differing)} arrays differ, e.g.\n  "
                + "\n  ".join(differing[:5]) + "\n). Resume with the code and config that "
                "wrote it, or use another --workdir.")

    def restore_latest(self, abstract_state):
        """(step, state, data_position) of the newest readable checkpoint, or None if none exist."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            try:
                metadata_ok = self.manager.item_metadata(step)["state"] is not None
            except Exception:  # Unreadable metadata is damage; handled like a failed restore.
                metadata_ok = False
            if metadata_ok:
                self.check_layout(step, abstract_state)
            error = None
            try:
                state, position = self.restore(step, abstract_state)
            except Exception as e:  # Orbax/tensorstore raise many types for unreadable files.
                error = e
            if distributed.any_process(error is not None):  # all go on from the same step
                self._move_aside(step, error)
                continue
            logging.info("Restored checkpoint of step %d from %s", step, self.directory)
            return step, state, position
        if steps:
            raise CheckpointError(
                f"None of the checkpoints {steps} in {self.directory} could be read; they were "
                f"moved to {self.corrupt_directory}. Remove {self.directory} (and the run's other "
                "files) to start the run afresh.")
        return None

    def _move_aside(self, step, error):
        """Process 0 moves the checkpoint (the others wait for it), then all forget it."""
        target = os.path.join(self.corrupt_directory, str(step))
        if distributed.is_writer():
            os.makedirs(self.corrupt_directory, exist_ok=True)
            if os.path.exists(target):
                shutil.rmtree(target)
            shutil.move(os.path.join(self.directory, str(step)), target)
        distributed.barrier(f"checkpoint {step} moved aside")
        self.manager.reload()
        reason = (f"{type(error).__name__}: {str(error)[:300]}" if error is not None
                  else "another process could not read it")
        logging.warning("Checkpoint of step %d is unreadable (%s); moved it to %s and falling "
                        "back to the previous one.", step, reason, target)

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
