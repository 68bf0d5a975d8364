"""Choosing a ``tf.distribute`` strategy: ``--strategy auto|default|mirrored|multi_worker|tpu``.

Batch sizes: the recipes take the *global* batch size; each replica gets
``global_batch_size / num_replicas_in_sync`` examples per step (it must divide).
"""

import json
import os
import warnings

import tensorflow as tf

from mobilenet_tf._keras import keras

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Split the CPU into ``num_devices`` logical devices (so mirrored training runs
    on a machine without GPUs). Must happen before TensorFlow first touches a device."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or ()) == num_devices:
        return  # split so already (e.g. by a test suite that runs mirrored recipes in its own process)
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as error:
        raise ValueError(
            f"`num_cpu_devices={num_devices}` must be set before TensorFlow initialises its devices "
            f"(call split_cpu first in the process): {error}"
        ) from error


def _tpu_resolver():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None


def get_strategy(name="auto", num_cpu_devices=0):
    """The strategy called ``name``.

    auto: a TPU if a TPU resolver finds one, else MirroredStrategy over the GPUs
    (or over the logical CPUs when ``num_cpu_devices > 1``), else the default
    strategy. multi_worker: MultiWorkerMirroredStrategy configured by ``TF_CONFIG``.

    A lost worker (killed, or its host gone) makes the others' collectives fail with
    ``tf.errors.UnavailableError`` (measured on 127.0.0.1: about 20 s after a
    SIGKILL) rather than hang: TensorFlow's coordination service, which the
    strategy starts, checks every worker's heartbeat. ``engine.run_training``
    turns that error into a message naming the lost worker; restarting every
    worker resumes from the last completed epoch.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; got {name!r}.")
    split_cpu(num_cpu_devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "`strategy='multi_worker'` needs the TF_CONFIG environment variable, e.g. "
                + json.dumps({"cluster": {"worker": ["host1:12345", "host2:12345"]},
                              "task": {"type": "worker", "index": 0}})
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu" or name == "auto":
        resolver = _tpu_resolver() if name == "tpu" or os.environ.get("TPU_NAME") else None
        if resolver is not None:
            return tf.distribute.TPUStrategy(resolver)
        if name == "tpu":
            raise ValueError("`strategy='tpu'` but no TPU was found (TPUClusterResolver failed).")
    if name == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus]) if len(gpus) > 1 or name == "mirrored" \
            else tf.distribute.get_strategy()
    if num_cpu_devices > 1 or name == "mirrored":  # (a process may hold more logical CPUs than asked for)
        devices = cpus[:num_cpu_devices] if num_cpu_devices else cpus
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def per_replica_batch(global_batch_size, strategy):
    """``global_batch_size / replicas``; ``ValueError`` if it does not divide."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"`global_batch_size={global_batch_size}` is not divisible by the {replicas} replicas "
            f"of {type(strategy).__name__}; use a multiple of {replicas}."
        )
    return global_batch_size // replicas


def is_chief(strategy):
    """True on the worker that writes files (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)


def set_precision(mixed_precision, force_on_cpu=False):
    """Set the global Keras dtype policy; returns its name.

    mixed_float16 on GPU, mixed_bfloat16 on TPU; on a CPU (where it is slower
    than float32) only with ``force_on_cpu`` (mixed_bfloat16).
    """
    if not mixed_precision:
        return "float32"
    if tf.config.list_logical_devices("TPU"):
        policy = "mixed_bfloat16"
    elif tf.config.list_physical_devices("GPU"):
        policy = "mixed_float16"
    elif force_on_cpu:
        policy = "mixed_bfloat16"
    else:
        raise ValueError("`--mixed-precision` needs a GPU or TPU (none found); on a CPU it is slower than "
                         "float32. Pass --force-mixed-precision to use mixed_bfloat16 anyway.")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def set_seeds(seed, deterministic=False):
    """Seeds (Python, NumPy, TensorFlow); with ``deterministic`` also op determinism
    and one inter-op thread (``--deterministic``).

    Op determinism alone is not enough on a CPU: ``model.fit`` of SSDLite's preset in
    two processes side by side gave losses that first differed at step 3-16, although
    its input batches and the gradients of one step repeat bit for bit. With one
    inter-op thread (intra-op threads still parallelise each op) the first difference
    came at step 98-100 (with or without oneDNN), so short runs repeat exactly and
    longer ones drift apart (6 epochs: AP50 0.765 vs 0.774); the cause of that drift
    is not found. Call it before TensorFlow initialises its devices; later the thread
    count cannot change, and a warning says so.
    """
    keras.utils.set_random_seed(seed)
    if not deterministic:
        return
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        warnings.warn("TensorFlow was initialised before determinism was asked for, so its inter-op threads "
                      "stay parallel: two runs may differ (start a fresh process for repeatable runs).",
                      RuntimeWarning, stacklevel=2)


def setup(config):
    """What every recipe does first: pick the strategy, check the batch divides over
    its replicas, set the precision policy and the seeds. Returns (strategy, policy).

    ``config`` needs: strategy, num_cpu_devices, global_batch_size,
    mixed_precision, force_mixed_precision, seed, deterministic.
    """
    set_seeds(config.seed, config.deterministic)  # before get_strategy initialises the devices
    strategy = get_strategy(config.strategy, config.num_cpu_devices)
    per_replica_batch(config.global_batch_size, strategy)  # divisibility check
    policy = set_precision(config.mixed_precision, config.force_mixed_precision)
    return strategy, policy
