"""`train.distribute`: data-parallel training with TensorFlow's own engine.

`mirrored` is `tf.distribute.MirroredStrategy` (one machine, several devices); `multi_worker`
is `tf.distribute.MultiWorkerMirroredStrategy` (several machines, the cluster in `TF_CONFIG`).
Every replica holds all weights; the global batch (`train.batch_size`) is cut into one equal
slice per replica.

How a step runs (`train_step`): each replica runs `TrainStep.gradients` on its slice, which
sums the loss, the token count and the gradients over all replicas (dense gradients by
all-reduce; row gradients of the embedding and of the targets' output rows, which are
`IndexedSlices`, by all-gather; the negatives' rows, shared by every replica, densely), clips
by the global norm and decides whether the step is finite. The update is then applied from
the cross-replica context inside a `tf.cond` on that decision: TensorFlow cannot run a
synchronisation point (the optimizer's update) in a branch of a `cond` taken inside a
replica. So every replica ends each step with the weights one device would have.

Input: every worker reads the same global batches from the same seeded pipeline and each
replica keeps its slice, so the batches, the data position in checkpoints and a resumed run
are those of a one-device run. Reading is a small share of a step; the cost is that each
worker reads the whole corpus.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import tensorflow as tf

from lmtrain.config.schema import TrainConfig
from lmtrain.errors import LmtrainError, first_line
from lmtrain.fit.step import TrainStep


@dataclass
class Distribution:
    """The strategy a run trains under, and this process's part in it."""

    strategy: tf.distribute.Strategy
    kind: str  # train.distribute
    replicas: int
    is_chief: bool  # the process that writes the run directory (always true unless multi_worker)
    workers: int = 1
    _gather: Any = field(default=None, init=False, repr=False)  # compiled `gathered`, built on first use

    def gathered(self, value: int) -> list[int]:
        """`value` as every replica of every worker has it (a collective: every worker must
        call it). ReduceOp has no MIN or MAX, and these checks need them."""
        if self._gather is None:
            strategy = self.strategy

            @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
            def gather(v: tf.Tensor) -> tf.Tensor:
                # tf.identity puts the value on the replica's device, where the collective runs.
                out = strategy.run(lambda x: tf.distribute.get_replica_context().all_gather(
                    tf.identity(x)[None], axis=0), args=(v,))
                return strategy.experimental_local_results(out)[0]

            self._gather = gather
        return [int(x) for x in self._gather(tf.constant(value, tf.int64)).numpy()]

    def any_worker(self, flag: bool) -> bool:
        """True if `flag` is true on any worker (a collective: every worker must call it)."""
        return max(self.gathered(int(flag))) > 0

    def describe(self) -> str:
        if self.kind == "none":
            return "one device"
        devices = ", ".join(self.strategy.extended.worker_devices)
        if self.kind == "mirrored":
            return f"MirroredStrategy, {self.replicas} replicas ({devices})"
        return f"MultiWorkerMirroredStrategy, {self.workers} workers, {self.replicas} replicas in all"


def create_distribution(config: TrainConfig) -> Distribution:
    """Build the strategy `train.distribute` names. Must run before any other TensorFlow work
    in the process: logical CPU devices and the multi-worker runtime can only be set up then."""
    if config.distribute == "none":
        return Distribution(tf.distribute.get_strategy(), "none", 1, True)
    if config.distribute == "mirrored":
        devices = list(config.devices) if config.devices else None
        if devices:
            _logical_cpus(devices)
            _check_devices(devices)
        elif not tf.config.list_physical_devices("GPU"):
            raise LmtrainError("train.distribute: mirrored with train.devices null uses every GPU, and this "
                               "machine has none; list devices (e.g. train.devices=[/cpu:0,/cpu:1]) or use none")
        try:
            strategy = tf.distribute.MirroredStrategy(devices)
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            raise LmtrainError(f"train.devices: {devices}: {first_line(exc)}") from None
        replicas = strategy.num_replicas_in_sync
        _check_batch(config, replicas)
        return Distribution(strategy, "mirrored", replicas, True)
    # multi_worker
    cluster = _tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    replicas = strategy.num_replicas_in_sync
    _check_batch(config, replicas)
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    return Distribution(strategy, "multi_worker", replicas, _is_chief(resolver.task_type, resolver.task_id, cluster),
                        workers)


def train_step(distribution: Distribution, train: TrainStep) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """The step `fit` compiles: `train.train_step` on one device, else its two halves spread
    over the replicas. Takes and returns global values (the batch, the carried LSTM state)."""
    if distribution.kind == "none":
        return train.train_step
    strategy = distribution.strategy

    def step(batch: tuple[Any, ...]) -> dict[str, Any]:
        local = strategy.experimental_distribute_values_from_function(lambda ctx: _slice(batch, ctx))
        grads, out = strategy.run(train.gradients, args=(local,))
        # Summed over replicas, so the same on each: take the first replica's copy.
        first = {k: strategy.experimental_local_results(v)[0] for k, v in out.items() if k != "state"}

        def update() -> tf.Tensor:
            strategy.run(train.apply_update, args=(grads,))
            return tf.constant(True)

        applied = tf.cond(first["finite"], update, lambda: tf.constant(False))
        logs = train.step_logs(first, applied)
        if "state" in out:  # each replica's rows of the state, put back in global batch order
            logs["state"] = tuple(strategy.gather(s, axis=1) for s in out["state"])
        return logs

    return step


def _slice(batch: tuple[Any, ...], ctx: tf.distribute.experimental.ValueContext) -> tuple[Any, ...]:
    """This replica's rows of a global batch: (tokens, targets, mask[, (h, c)])."""
    n, i = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
    rows = tf.shape(batch[0])[0] // n
    parts = [x[i * rows:(i + 1) * rows] for x in batch[:3]]
    if len(batch) > 3:  # the state is [layers, B, H]: batch rows on axis 1
        parts.append(tuple(s[:, i * rows:(i + 1) * rows] for s in batch[3]))
    return tuple(parts)


def _check_batch(config: TrainConfig, replicas: int) -> None:
    if config.batch_size % replicas:
        raise LmtrainError(
            f"train.batch_size: {config.batch_size} is the global batch and must divide evenly over the "
            f"{replicas} replicas of train.distribute={config.distribute}"
        )


def _logical_cpus(devices: list[str]) -> None:
    """Split the CPU into as many logical devices as `devices` names (/cpu:1 needs two)."""
    highest = -1
    for name in devices:
        spec = _spec(name)
        if (spec.device_type or "").upper() == "CPU":
            highest = max(highest, spec.device_index or 0)
    if highest < 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration()] * (highest + 1)
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == len(wanted):
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        raise LmtrainError(
            f"train.devices: {devices} needs {highest + 1} logical CPU devices, which can only be set up "
            f"before TensorFlow starts; run it in a fresh process (the lmtrain CLI does)"
        ) from None


def _spec(name: str) -> tf.DeviceSpec:
    try:
        spec = tf.DeviceSpec.from_string(name)
    except (ValueError, TypeError):
        spec = None
    if spec is None or not spec.device_type:
        raise LmtrainError(f"train.devices: {name!r} is not a device name (e.g. /gpu:0 or /cpu:1)")
    return spec


def _check_devices(devices: list[str]) -> None:
    """Every listed device must exist: MirroredStrategy accepts a missing GPU and then hangs."""
    present = {}
    for d in tf.config.list_logical_devices():
        spec = tf.DeviceSpec.from_string(d.name)
        present[(spec.device_type.upper(), spec.device_index)] = f"/{spec.device_type.lower()}:{spec.device_index}"
    for name in devices:
        spec = _spec(name)
        if (str(spec.device_type or "").upper(), spec.device_index or 0) not in present:
            raise LmtrainError(f"train.devices: {name} is not a device of this machine "
                               f"(it has {', '.join(sorted(present.values()))})")


def _tf_config() -> dict[str, Any]:
    """The cluster of TF_CONFIG, checked enough to give a clear error instead of a hang."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise LmtrainError("train.distribute: multi_worker needs the cluster in the TF_CONFIG environment variable, "
                           'e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                           '"task": {"type": "worker", "index": 0}}')
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], int(task["index"])
        if kind not in ("chief", "worker") or not 0 <= index < len(cluster[kind]):
            raise ValueError(f"task {kind}:{index} is not in the cluster")
    except (ValueError, KeyError, TypeError) as exc:
        raise LmtrainError(f"TF_CONFIG: not a valid cluster spec ({first_line(exc)})") from None
    return cluster


def _is_chief(task_type: str | None, task_id: int | None, cluster: dict[str, Any]) -> bool:
    """TensorFlow's convention: the "chief" task, or worker 0 when the cluster names no chief."""
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and not cluster.get("chief")

