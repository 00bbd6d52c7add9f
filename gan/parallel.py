"""Where the train step runs: one device, `pmap` over local devices, or `jit` with shardings.

All three run the same pure step on the same global batch (config.train.batch_size), so with
synchronised batch norm they compute the same update; only the placement differs.

With several processes (gan.distributed) pmap and sharded span every process's devices: each
process holds the whole dataset and the whole state, and feeds only its own devices' rows of
each global batch.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan import models
from gan.train_step import make_train_call, make_train_step

PARALLELISMS = ("single", "pmap", "sharded")
REPLICA_IMPLS = ("loop", "vmap")
AXIS = "batch"


def loop_over_replicas(call):
    """Several independent runs in one program: each replica's steps traced one after another.

    States and indices are lists (one entry per replica); metrics come back stacked. The
    alternative, `jax.vmap`, batches the convolutions into grouped convolutions, which XLA's
    CPU backend runs ~5x slower than the same convolutions one replica at a time.
    """
    def looped(states, images, indices):
        outputs = [call(state, images, idx) for state, idx in zip(states, indices)]
        metrics = jax.tree.map(lambda *m: jnp.stack(m), *[m for _, m in outputs])
        return [state for state, _ in outputs], metrics

    return looped


def _first_local_copy(x):
    """This process's first device's copy of a pmapped array. Indexing the global array (x[0])
    would be a computation over every process's devices, which deadlocks unless every process
    runs it at the same point (only process 0 samples, for instance)."""
    return x.addressable_data(0)[0]


class ParallelTrainer:
    """Builds the models and the compiled call for config.parallelism.

    `place(state)` puts a host state on the devices, `unplace(state)` returns one copy of it
    that this process holds alone (for checkpoints and sampling: host numpy arrays in the
    pmap and sharded modes), `place_images(uint8 array)` puts the dataset on the devices, and
    `call(state, images, indices[n, B])` runs n train steps.
    """

    def __init__(self, config, image_size, channels, dtype, replicas=1):
        self.mode = config.parallelism
        self.replicas = replicas
        self.replicas_impl = config.replicas_impl
        if replicas > 1 and self.mode != "single":
            raise ValueError("Replicas (several seeds in one program) run with "
                             "parallelism='single' only.")
        self.devices = jax.local_devices()
        self.num_shards = jax.device_count() if self.mode != "single" else 1
        # CPU devices with collectives (pmap/sharded over several devices, in one process or
        # many): wait for each call before queueing the next. XLA's CPU all-reduce blocks a
        # pool thread per device until all arrive; with calls queued ahead, the threads of a
        # later call's all-reduce likely hold the pool while an earlier call's devices wait for
        # one (seen: 8 host devices on 2 cores, pmap, 10 calls queued: "Termination timeout
        # for all reduce" and an abort; and once with 2 processes x 4 devices). Accelerators
        # keep asynchronous dispatch; on the CPU the step's compute dominates anyway.
        self._wait_for_each_call = (self.num_shards > 1
                                    and self.devices[0].platform == "cpu")
        sync_bn = self.mode == "pmap" and config.sync_batch_norm
        self.generator, self.discriminator = models.make_models(
            config, image_size, channels, dtype, bn_axis_name=AXIS if sync_bn else None)
        if self.mode == "pmap":
            step = make_train_step(config, self.generator, self.discriminator, axis_name=AXIS,
                                   num_shards=self.num_shards)
            self._call = jax.pmap(make_train_call(step, dtype), axis_name=AXIS)
        elif self.mode == "sharded":
            mesh = Mesh(np.asarray(jax.devices()), (AXIS,))
            self._replicated = NamedSharding(mesh, P())
            self._indices_sharding = NamedSharding(mesh, P(None, AXIS))
            batch_sharding = NamedSharding(mesh, P(AXIS))
            step = make_train_step(config, self.generator, self.discriminator,
                                   batch_sharding=batch_sharding)
            call = make_train_call(step, dtype, batch_sharding=batch_sharding)
            self._call = jax.jit(call, in_shardings=(self._replicated, self._replicated,
                                                     self._indices_sharding),
                                 out_shardings=self._replicated)
        else:
            call = make_train_call(make_train_step(config, self.generator, self.discriminator),
                                   dtype)
            if replicas > 1 and self.replicas_impl == "vmap":  # state, indices: replica axis
                call = jax.vmap(call, in_axes=(0, None, 0))
            elif replicas > 1:  # state, indices: lists
                call = loop_over_replicas(call)
            self._call = jax.jit(call)

    def stack(self, trees):
        """Per-replica trees -> what the compiled call takes: the one tree if R=1, the list
        (replicas_impl='loop') or one tree with a leading replica axis ('vmap')."""
        if self.replicas == 1:
            return trees[0]
        if self.replicas_impl == "loop":
            return list(trees)
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)

    def unstack(self, tree):
        """Inverse of `stack`: a list of per-replica trees."""
        if self.replicas == 1:
            return [tree]
        if self.replicas_impl == "loop":
            return list(tree)
        return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(self.replicas)]

    def _replicate(self, tree):
        """A copy per local device along a new leading axis, the layout `pmap` expects."""
        sharding = NamedSharding(Mesh(np.asarray(self.devices), (AXIS,)), P(AXIS))
        return jax.device_put(jax.tree.map(
            lambda x: np.broadcast_to(np.asarray(x), (len(self.devices), *np.shape(x))), tree),
            sharding)

    def _replicate_globally(self, tree):
        """A copy on every device of every process, built from this process's host copy (a
        device_put of an array committed to one device would be a cross-host transfer)."""
        def replicate(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self._replicated, lambda index: x[index])
        return jax.tree.map(replicate, tree)

    def place(self, state):
        if self.mode == "pmap":
            return self._replicate(state)
        if self.mode == "sharded":
            return self._replicate_globally(state)
        return jax.device_put(state)

    def unplace(self, state):
        # Host numpy: with several processes orbax writes numpy arrays from process 0 only,
        # and sampling from it runs on this process's devices alone, never across processes.
        if self.mode == "pmap":
            return jax.device_get(jax.tree.map(_first_local_copy, state))
        if self.mode == "sharded":
            return jax.device_get(state)  # fully replicated: every process has the whole value
        return state

    def place_images(self, images):
        if self.mode == "pmap":
            return self._replicate(images)
        if self.mode == "sharded":
            return self._replicate_globally(images)
        return jax.device_put(images)

    def compiled(self, state, images, indices):
        """The compiled single/sharded program (for XLA's cost and memory analyses)."""
        if self.mode == "pmap":
            raise ValueError("compiled() covers the jit modes (single, sharded) only.")
        return self._call.lower(state, images, indices).compile()

    def call(self, state, images, indices):
        """Runs len(indices) steps; `indices` (n, global batch) are the global batch's rows."""
        outputs = self._dispatch(state, images, indices)
        if self._wait_for_each_call:
            jax.block_until_ready(outputs)
        return outputs

    def _dispatch(self, state, images, indices):
        if self.mode == "pmap":
            # Process p's devices take rows [p * local, (p + 1) * local) * per_device of the
            # global batch: `pmap` numbers its devices (axis_index, which picks their latents)
            # process by process, and every process has the same number of local devices.
            n, batch = indices.shape
            local = len(self.devices)
            first = jax.process_index() * local
            per_device = batch // self.num_shards
            indices = indices[:, first * per_device:(first + local) * per_device]
            indices = indices.reshape(n, local, per_device).transpose(1, 0, 2)
            state, metrics = self._call(state, images, indices)
            return state, jax.tree.map(_first_local_copy, metrics)  # pmean'ed: equal everywhere
        if self.mode == "sharded":
            # A global array of which this process materialises only its own devices' columns.
            indices = jax.make_array_from_callback(indices.shape, self._indices_sharding,
                                                   lambda index: indices[index])
        return self._call(state, images, indices)
