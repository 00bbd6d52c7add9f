"""Orbax checkpoints of the whole train state plus the data position, in DIR/checkpoints."""
import os

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    def __init__(self, workdir, keep):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "data"))

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
        logging.info("Restored checkpoint of step %d from %s", step, self.directory)
        return restored.state, restored.data

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()
