"""Where training runs (``train.strategy``): one device, every local device, or several machines,
with TensorFlow's own ``tf.distribute``.

* ``default``: one device (the first GPU if TensorFlow sees one, else the CPU).
* ``mirrored``: ``MirroredStrategy`` over the local GPUs, or, without a GPU, over
  ``train.cpu_replicas`` logical CPU devices (so that it can be tried and tested anywhere).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the machines named in the standard
  ``TF_CONFIG`` environment variable. The chief (task ``chief``, or ``worker`` 0 when the
  cluster has no chief) runs the train stage and alone writes the model, metrics, plots and
  checkpoints; every other task runs ``python -m movierec worker`` on the same params.yaml and
  prepared data, and writes nothing.

``train.batch_size`` is the global batch: each replica takes a disjoint share of every batch
(``steps.TrainLoop``). Every task runs the same program on the same data, so the tasks take
the same steps and, from identical weights, make the same early-stopping decisions; the
chief's checkpoint (a resumed run) and its data fingerprint are sent to the workers at the
start, so a worker never trains on other data or from other weights than the chief's.

A worker that is missing at the start, or that dies, makes every other task stop with one
line within ``train.collective_timeout`` seconds: a watchdog process bounds the cluster's start,
and one watchdog thread per task (``bounded``) bounds every wait on the others after it. A
task that dies or freezes stops sending the coordination service's heartbeats, which fails
every other task's exchanges sooner (once the service's heartbeat timeout passes). The chief
writes nothing on the way out, and the next run resumes from its last checkpoint.

Not TensorFlow's own ``CommunicationOptions(timeout_seconds=...)``: each collective op run with
it starts an OS thread that sleeps out the whole timeout (two per all-reduce: one to resolve
its parameters, one to run it; tensorflow/tensorflow#62466), so every training step would leave
two threads asleep for ``train.collective_timeout`` seconds, thousands of them, until the
process can start no more (``std::system_error: Resource temporarily unavailable``).

Everything here must run before TensorFlow executes its first op: thread counts, logical
devices and the cluster are fixed when its runtime starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context as tf_context  # abort_collective_ops: no public API

from movierec.core import quiet
from movierec.core.config import TrainParams
from movierec.core.errors import MovieRecError, ParamsError
from movierec.train.tf_config import task_config


class ClusterError(MovieRecError):
    """A worker is missing, died, or does not train on what the chief trains on."""


@dataclass(frozen=True)
class Placement:
    """The strategy training runs under, and whether this process is the chief."""

    strategy: tf.distribute.Strategy
    kind: str  # train.strategy
    is_chief: bool
    description: str  # for the log: the devices, or the task and the cluster

    @property
    def multi_worker(self) -> bool:
        return self.kind == "multi_worker"


def device_line(stage: str, work: str) -> str | None:
    """The project's one line about devices when no GPU is visible (None when there is one)."""
    if tf.config.list_physical_devices("GPU"):
        return None
    return f"{stage}: no GPU found, {work} on the CPU"


def set_intra_op_threads(n: int) -> None:
    """Threads TensorFlow may use inside one op; 0 keeps TensorFlow's default (all cores).

    At batch 128 every op is tiny, and handing it to a thread pool costs more than splitting it
    saves (docs/benchmarks.md has the step times). It can only be set before TensorFlow starts
    its runtime, so a process that has already run TensorFlow ops (a test session) keeps the
    setting it started with, and is told so.
    """
    if n == 0 or tf.config.threading.get_intra_op_parallelism_threads() == n:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
    except RuntimeError:
        print(f"train: TensorFlow was already running; intra-op threads stay at "
              f"{tf.config.threading.get_intra_op_parallelism_threads()} (0 = all cores), "
              f"not {n}", file=sys.stderr)


def split_cpu(n: int) -> None:
    """Splits the CPU into ``n`` logical devices (``train.cpu_replicas``); 0 leaves it whole."""
    if n == 0:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise ParamsError(f"train.cpu_replicas={n} needs a fresh process: TensorFlow had "
                              f"already started with {have} CPU device(s)") from None


# Run in a separate Python: it waits for its stdin to close (the block finished, or the
# parent died) and otherwise, after the deadline, prints the error and kills the parent.
_WATCHDOG = """
import os, select, signal, sys
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:
    print(message, file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def _watchdog(seconds: float, what: str) -> Iterator[None]:
    """Ends the process with one line if the block takes longer than ``seconds``.

    TensorFlow's cluster start waits for every task with no deadline of its own, inside a
    call that holds Python's interpreter lock, so neither a thread nor a signal handler of this
    process could act: a small watchdog process does (nothing has been written yet).
    """
    message = f"error: {what.format(seconds=f'{seconds:g}')}"
    guard = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds),
                              message], stdin=subprocess.PIPE,
                             # Straight to the real stderr: this process may be gone (killed)
                             # before its stderr filter could forward the line.
                             stderr=quiet.original_stderr())
    try:
        yield
    finally:
        guard.stdin.close()
        guard.wait()


def start(params: TrainParams, role: str = "chief") -> Placement:
    """Configures TensorFlow for ``params`` and returns where training runs.

    ``role``: ``chief`` for the train stage, ``worker`` for ``python -m movierec worker``;
    with ``multi_worker`` it must match this task's entry in TF_CONFIG.
    """
    set_intra_op_threads(params.intra_op_threads)
    split_cpu(params.cpu_replicas)
    if params.strategy == "default":
        return Placement(tf.distribute.get_strategy(), "default", True, "one device")
    if params.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Placement(strategy, "mirrored", True,
                         f"mirrored over {len(devices)} device(s): {', '.join(devices)}")
    config = task_config(role)
    chief = role == "chief"
    name = f"{config['task']['type']} {config['task']['index']}"
    hosts = sum(len(v) for k, v in config["cluster"].items() if k in ("chief", "worker"))
    prefix = "train" if role == "chief" else role
    with _watchdog(params.collective_timeout,
                   f"{prefix}: the cluster in TF_CONFIG ({hosts} tasks) did not form within "
                   "{seconds} s (train.collective_timeout): a task is missing or unreachable"):
        # No timeout_seconds in its CommunicationOptions: see the module's docstring.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _CLUSTERS[strategy] = _Exchanges(strategy, params.collective_timeout)
        # The first exchange is the moment every task has joined.
        broadcast_bytes(Placement(strategy, "multi_worker", chief, ""), b"")
    return Placement(strategy, "multi_worker", chief,
                     f"multi_worker, {name} of {hosts} tasks, "
                     f"{strategy.num_replicas_in_sync} replica(s)")


class _Exchanges:
    """A ``multi_worker`` task's bound on waiting for the other tasks, and its broadcast.

    One daemon thread, started at the first call, watches the calls into TensorFlow that
    exchange with the other tasks (``waiting``): when one has made no progress for ``seconds``
    (its progress variable, the training step, has not moved; or, without one, since the call
    began), it aborts this process's collective ops, and the call raises
    ``DeadlineExceededError`` (``cluster_errors`` makes it one line). Aborted collectives stay
    aborted: the process is meant to stop.
    """

    def __init__(self, strategy: tf.distribute.Strategy, seconds: float):
        self.seconds = float(seconds)
        self.message = (f"no exchange with the other tasks completed within {self.seconds:g} s "
                        "(train.collective_timeout)")
        self._poll = min(1.0, self.seconds / 10)
        self._cond = threading.Condition()
        self._call: tuple[int, tf.Variable | None] | None = None  # (serial, progress)
        self._serial = 0
        self._thread: threading.Thread | None = None
        self.strategy = strategy
        # Replica 0's int64 vector on every replica, compiled (strategy.run outside a
        # tf.function runs replica by replica, eagerly: TensorFlow warns of the overhead).
        self.from_first_replica = self.bounded(tf.function(
            self._from_first_replica, input_signature=[tf.TensorSpec([None], tf.int64)]))

    def _from_first_replica(self, value: tf.Tensor) -> tf.Tensor:
        """A sum over the replicas to which only replica 0 (the chief's first) contributes;
        integers, so the sum is exact."""
        def send(mine: tf.Tensor) -> tf.Tensor:
            ctx = tf.distribute.get_replica_context()
            mine = tf.where(ctx.replica_id_in_sync_group == 0, mine, tf.zeros_like(mine))
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, mine)
        return self.strategy.experimental_local_results(self.strategy.run(send, (value,)))[0]

    def bounded(self, fn: Callable, progress: tf.Variable | None = None) -> Callable:
        """``fn`` (a ``tf.function``), each call under the deadline; traced before the first
        (tracing is not waiting for the others)."""
        traced = False

        def call(*args):
            nonlocal traced
            if not traced:
                fn.get_concrete_function(*args)
                traced = True
            with self.waiting(progress):
                return fn(*args)
        return call

    @contextlib.contextmanager
    def waiting(self, progress: tf.Variable | None = None) -> Iterator[None]:
        with self._cond:
            self._serial += 1
            self._call = (self._serial, progress)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="movierec-exchange-deadline")
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._call = None

    def _watch(self) -> None:
        seen, since = None, 0.0
        while True:
            with self._cond:
                while self._call is None:
                    self._cond.wait()
                call = self._call
            mark = (call[0], _read(call[1]))
            now = time.monotonic()
            if mark != seen:
                seen, since = mark, now
            elif now - since >= self.seconds:
                with self._cond:
                    if self._call is call:  # still that call, still stuck
                        tf_context.context().abort_collective_ops(
                            tf.errors.DEADLINE_EXCEEDED, self.message)
                        return
            time.sleep(self._poll)


def _read(progress: tf.Variable | None) -> int | None:
    """This task's value of a (possibly mirrored) integer variable; None if unreadable."""
    if progress is None:
        return None
    try:
        return int(getattr(progress, "values", (progress,))[0].numpy())
    except Exception:  # shutting down: then only the call's start counts
        return None


# The multi_worker strategy start() made (a process joins one cluster), with its bound.
_CLUSTERS: dict[tf.distribute.Strategy, _Exchanges] = {}


def bounded(strategy: tf.distribute.Strategy, fn: Callable,
            progress: tf.Variable | None = None) -> Callable:
    """``fn``, a ``tf.function`` whose calls exchange with the other tasks, with every call
    bounded by ``train.collective_timeout``: no progress of the integer variable ``progress``
    (a step counter) for that long, or none given and the call lasting that long, and the call
    fails (``DeadlineExceededError``). ``fn`` itself for a strategy ``start`` did not make
    for ``multi_worker``."""
    exchanges = _CLUSTERS.get(strategy)
    return fn if exchanges is None else exchanges.bounded(fn, progress)


def broadcast_bytes(place: Placement, data: bytes) -> bytes:
    """The chief's ``data`` on every task (``multi_worker``; elsewhere ``data`` itself)."""
    if not place.multi_worker:
        return data
    send = _CLUSTERS[place.strategy].from_first_replica
    n = int(send(tf.constant([len(data)], tf.int64)).numpy()[0])
    if n == 0:  # nothing to send (and a compiled all-reduce of nothing crashes TF 2.21)
        return b""
    words = np.zeros(-(-n // 8), np.int64)
    if place.is_chief:
        words.view(np.uint8)[:n] = np.frombuffer(data, np.uint8)
    return send(tf.constant(words)).numpy().view(np.uint8)[:n].tobytes()


def is_cluster_failure(exc: BaseException) -> bool:
    """A failed exchange between tasks: a peer gone, unreachable, or too slow."""
    return isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                            tf.errors.CancelledError, tf.errors.AbortedError))


@contextlib.contextmanager
def cluster_errors(place: Placement, role: str) -> Iterator[None]:
    """Turns a failed exchange into one line (``ClusterError``) under ``multi_worker``."""
    try:
        yield
    except tf.errors.OpError as exc:
        if not (place.multi_worker and is_cluster_failure(exc)):
            raise
        found = re.search(r"aborted by: ([^\n]+)", exc.message or "")
        lines = (exc.message or "").strip().splitlines()
        cause = found.group(1) if found else (lines[-1] if lines else "")
        raise ClusterError(f"{role}: lost the cluster ({type(exc).__name__}: "
                           f"{cause[:120]}); a task "
                           "is missing, died or stalled past train.collective_timeout; nothing "
                           "was written, and the next run resumes from the last checkpoint"
                           ) from None
