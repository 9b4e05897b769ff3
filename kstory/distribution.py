"""Data-parallel training on Keras's engine for each backend.

`distribution=data_parallel` in a config picks:
- JAX: `keras.distribution.DataParallel` over all devices. On several hosts,
  `keras.distribution.initialize` first (which runs `jax.distributed`), from
  the coordinator address, process count and process id given as arguments
  (`kstory train --coordinator-address ...`) or in the environment
  (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES`,
  `KERAS_DISTRIBUTION_PROCESS_ID`).
- TensorFlow: `tf.distribute.MirroredStrategy` on one host. A `TF_CONFIG`
  of several workers is refused with a clear error: Keras 3.15's TensorFlow
  trainer fails under `MultiWorkerMirroredStrategy` (see
  `_check_tensorflow_workers`); several hosts train on JAX.
- torch: Keras 3 has no data-parallel engine for the torch backend; kstory
  says so and names the alternatives rather than wrapping DDP itself.

`data.batch_size` is the global batch, split evenly across replicas. The
contrastive loss sees the whole global batch as negatives on both engines:
under JAX the step is one program over the sharded global batch; under
TensorFlow each replica gathers the other replicas' embeddings
(`replica_gather`). The text loss is averaged over the global batch's tokens.
So a data-parallel step computes the loss of the single-device step on the
same global batch, with two exceptions under TensorFlow: each replica draws
its own dropout masks, and a trainable image encoder's batch normalisation
uses each replica's slice of the batch (a frozen encoder, the default, uses
its moving statistics). Under JAX both match the single-device step.

On several JAX hosts each process reads its own shard of every global batch
(`make_dataset(num_shards=..., shard_index=...)`).
"""

import contextlib
import dataclasses
import json
import os

import keras

DISTRIBUTIONS = ("none", "data_parallel")

TORCH_UNSUPPORTED = (
    "distribution=data_parallel is not available on the torch backend: Keras 3 "
    "distributes training with keras.distribution on JAX and tf.distribute on "
    "TensorFlow, and has no torch engine. Train with KERAS_BACKEND=jax or "
    "KERAS_BACKEND=tensorflow (the .keras file then loads on torch), or train on "
    "one device."
)


@dataclasses.dataclass
class DataParallelSetup:
    """What `data_parallel` switched on.

    Args:
        scope: callable returning a context manager in which the model is
            built and compiled.
        num_replicas: int. Replicas that each take a slice of the batch.
        engine: str. The engine, for logs.
        num_processes: int. Processes that each read a shard of every batch
            (JAX multi-host; TensorFlow's multi-worker strategy shards the
            dataset itself).
        process_index: int. This process's shard.
    """

    scope: object
    num_replicas: int
    engine: str
    num_processes: int = 1
    process_index: int = 0


def _check_tensorflow_workers(tf_config):
    """Refuses a TensorFlow cluster of several workers, which Keras cannot train.

    Keras 3.15's TensorFlow trainer fails under `MultiWorkerMirroredStrategy`
    with more than one worker: it reduces the first batch (a dict of inputs)
    in one `strategy.reduce`, which the collective ops refuse, and then each
    step's scalar logs over `axis=0`. Measured with two local workers on
    loopback (docs/reliability.md).
    """
    try:
        cluster = json.loads(tf_config).get("cluster", {})
    except ValueError:
        raise ValueError(f"TF_CONFIG is not valid JSON: {tf_config!r}.") from None
    workers = sum(len(cluster.get(role, [])) for role in ("chief", "worker"))
    if workers > 1:
        raise ValueError(
            f"TF_CONFIG describes {workers} TensorFlow workers, and Keras "
            f"{keras.version()} cannot train data-parallel across TensorFlow workers "
            "(its trainer's reductions fail under MultiWorkerMirroredStrategy; see "
            "docs/reliability.md). Train on several hosts with KERAS_BACKEND=jax "
            "(kstory train --coordinator-address ...), or on one TensorFlow host."
        )


def data_parallel(coordinator_address=None, num_processes=None, process_id=None):
    """Switches on data-parallel training for the active backend.

    Args:
        coordinator_address: str. JAX multi-host: `host:port` of process 0
            (or all processes' addresses, comma-separated).
        num_processes: int. JAX multi-host: number of processes.
        process_id: int. JAX multi-host: this process's index.

    Returns:
        `DataParallelSetup`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        multi_host = coordinator_address or "KERAS_DISTRIBUTION_JOB_ADDRESSES" in os.environ
        if multi_host:
            keras.distribution.initialize(coordinator_address, num_processes, process_id)
        import jax

        devices = keras.distribution.list_devices()
        # Each process reads its own shard of every batch (make_dataset's
        # num_shards): Keras cannot infer the batch size of kstory's pipeline
        # to shard it.
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
        )
        processes = f", {jax.process_count()} processes" if multi_host else ""
        return DataParallelSetup(
            contextlib.nullcontext,
            len(devices),
            f"keras.distribution.DataParallel{processes}",
            jax.process_count(),
            jax.process_index(),
        )
    if backend == "tensorflow":
        import tensorflow as tf

        if "TF_CONFIG" in os.environ:
            _check_tensorflow_workers(os.environ["TF_CONFIG"])
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            # All GPUs, or else all (logical) CPU devices: MirroredStrategy's
            # default would take one CPU only.
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
        return DataParallelSetup(
            strategy.scope, strategy.num_replicas_in_sync, type(strategy).__name__
        )
    raise ValueError(TORCH_UNSUPPORTED)


def single_device():
    """Clears a JAX distribution set by `data_parallel` (for tests and notebooks)."""
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)


def _replica_context():
    """The TensorFlow replica context when more than one replica runs, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas_in_sync():
    """Replicas whose gradients are summed (TensorFlow's strategies); else 1."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_sum(value):
    """`value` summed over the replicas of a TensorFlow strategy; else itself."""
    context = _replica_context()
    return value if context is None else context.all_reduce("sum", value)


def replica_gather(value):
    """All replicas' `value`s concatenated on axis 0, and this replica's offset.

    Returns `(value, 0)` outside a multi-replica TensorFlow step. The gather
    is differentiable: gradients flow back to the replica that computed each
    row.
    """
    context = _replica_context()
    if context is None:
        return value, 0
    gathered = context.all_gather(value, axis=0)
    return gathered, context.replica_id_in_sync_group * keras.ops.shape(value)[0]
