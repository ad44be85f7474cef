"""Many independent jobs (the runs of a sweep, the shards of a benchmark) as Ray tasks, on this machine or a cluster.

Ray is an optional extra (``pip install 'amortize[ray]'``). Without an address, ``ray.init`` starts a local
cluster of this machine's cores (no dashboard, a small object store: the jobs pass file paths and small
records, never tensors); with ``--address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:10001``) the jobs go to
an existing cluster. Each job asks for ``cpus`` CPUs (and ``gpus`` GPUs); Ray sets the job's thread count
from it. One job's failure is recorded as its outcome; the others go on.

``run_jobs(..., executor="serial")`` runs the same jobs one after another in this process (no Ray): the
baseline the parallel wall-clock is measured against, and a way to run a sweep where Ray is not installed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

#: the local cluster's object store: jobs exchange small records only (Ray's minimum is 75 MB)
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
EXECUTORS = ("ray", "serial")
#: after a Ctrl-C, how long the cancelled jobs get to checkpoint before the cluster is shut down
CANCEL_WAIT_S = 120
INSTALL_HINT = "pip install 'amortize[ray]' (or: pip install ray)"


class RayMissingError(ValueError):
    """Ray is not installed; the message says how to install it."""


def require_ray(what: str) -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError(f"{what} needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


class JobsFailedError(RuntimeError):
    """Jobs whose results are all needed (a sharded benchmark's) did not all finish."""


@dataclass
class Outcome:
    """What became of one job: its result, or the error that ended it (a Python traceback or Ray's word)."""

    index: int
    label: str
    result: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 0

    def __post_init__(self) -> None:
        if not (self.cpus > 0):
            raise ValueError(f"CPUs per job (--cpus-per-run, --threads-per-worker) must be > 0, got {self.cpus}")
        if self.gpus < 0:
            raise ValueError(f"--gpus-per-run must be >= 0, got {self.gpus}")
        if self.retries < 0:
            raise ValueError(f"--retries must be >= 0, got {self.retries}")


def local_cluster_options(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` options of a local cluster: this machine's cores, a small object store, and workers at the
    priority of any other process. Ray starts workers at nice 15 by default; beside one busy process a run then
    starved (measured on 2 cores: importing torch took 36 s in a worker, 1.7 s at nice 0). A sweep's runs are
    the work itself. ``RAY_worker_niceness`` in the environment still decides where it is set."""
    options: dict[str, Any] = {"object_store_memory": LOCAL_OBJECT_STORE_BYTES, "num_cpus": num_cpus or os.cpu_count() or 1}
    if "RAY_worker_niceness" not in os.environ:
        options["_system_config"] = {"worker_niceness": 0}
    return options


@contextmanager
def ray_cluster(address: str | None, what: str, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray connected to ``address`` (None: a new local cluster of this machine's cores), shut down after."""
    ray = require_ray(what)
    if ray.is_initialized():  # a caller (a notebook, a test) already connected: use that cluster as it is
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                              "logging_level": "warning"}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(local_cluster_options(num_cpus))
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private local cluster reports nothing anywhere
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ValueError(f"--address {address!r}: could not connect ({err}). Start a cluster with `ray start --head` "
                         "on its head node (then --address auto there, or HEAD_IP:6379 from a node of it); a cluster "
                         "with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token "
                         "(~/.ray/auth_token or RAY_AUTH_TOKEN); or leave --address out for a local cluster") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_jobs(
    fn: Callable[[Any], Any],
    args: Sequence[Any],
    labels: Sequence[str],
    executor: str = "ray",
    address: str | None = None,
    resources: Resources | None = None,
    max_parallel: int | None = None,
    on_done: Callable[[Outcome, dict[str, int]], None] | None = None,
    on_wait: Callable[[list[int]], None] | None = None,
    wait_s: float = 10.0,
    what: str = "this command",
) -> list[Outcome]:
    """``fn(args[i])`` for every i, as Ray tasks (or one after another with ``executor="serial"``).

    ``fn`` must be importable by its module path (Ray's workers import it). At most ``max_parallel`` jobs run at
    once (default: as many as the cluster's resources allow). ``on_done(outcome, counts)`` hears of each job as it
    ends; ``on_wait(running)`` is called every ``wait_s`` seconds while jobs run. A Ctrl-C cancels the running
    jobs (each gets a KeyboardInterrupt, which a training run turns into a checkpoint) and re-raises."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: allowed: {', '.join(EXECUTORS)}")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"--max-parallel must be >= 1, got {max_parallel}")
    resources = resources or Resources()
    outcomes: list[Outcome | None] = [None] * len(args)
    counts = {"done": 0, "failed": 0, "total": len(args)}

    def finish(outcome: Outcome) -> None:
        outcomes[outcome.index] = outcome
        counts["done" if outcome.ok else "failed"] += 1
        if on_done is not None:
            on_done(outcome, dict(counts))

    if executor == "serial":
        for i, a in enumerate(args):
            start = time.perf_counter()
            try:
                result, error = fn(a), None
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # one job's failure (a SystemExit included) leaves the others to run
                result, error = None, _describe(err)
            finish(Outcome(i, labels[i], result, error, time.perf_counter() - start))
        return [o for o in outcomes if o is not None]

    with ray_cluster(address, what) as ray, _sigterm_as_interrupt():
        remote = ray.remote(fn).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                        max_retries=resources.retries, retry_exceptions=False)
        pending = list(range(len(args)))
        running: dict[Any, tuple[int, float]] = {}
        limit = max_parallel or len(args)
        try:
            while pending or running:
                while pending and len(running) < limit:
                    i = pending.pop(0)
                    running[remote.remote(args[i])] = (i, time.perf_counter())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
                if not ready:
                    if on_wait is not None:
                        on_wait(sorted(i for i, _ in running.values()))
                    continue
                for ref in ready:
                    i, start = running.pop(ref)
                    try:
                        result, error = ray.get(ref), None
                    except Exception as err:  # the task raised, its worker died, or the node was lost
                        result, error = None, _describe(err)
                    finish(Outcome(i, labels[i], result, error, time.perf_counter() - start))
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref)  # a KeyboardInterrupt inside each task: training runs checkpoint and stop
            if running:
                ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT_S)
            raise
    return [o for o in outcomes if o is not None]


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A SIGTERM to the driver (a scheduler's stop, ``kill``) cancels the jobs as Ctrl-C does, instead of
    leaving them to die with it before their next checkpoint. Only the main thread can install a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(err: BaseException) -> str:
    """One error as a user reads it: a task's own exception (its last line), or Ray's account of a lost worker."""
    cause = getattr(err, "cause", None)  # a RayTaskError wraps the task's own exception
    if isinstance(cause, BaseException):
        err = cause
    name = type(err).__name__
    if name in ("WorkerCrashedError", "NodeDiedError", "ActorDiedError", "OutOfMemoryError", "TaskCancelledError"):
        return f"{name}: " + (str(err).strip().splitlines() or [""])[0][:300]
    text = str(err).strip() or "".join(traceback.format_exception_only(type(err), err)).strip()
    return f"{name}: {text.splitlines()[-1][:500] if text else ''}"


@dataclass
class Shards:
    """A list of items dealt round-robin into at most ``k`` shards (item i to shard i mod k, which spreads the
    costly items of a sorted list); ``merge`` puts the shards' results back in the items' order."""

    items: list[Any]
    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"--workers must be >= 1, got {self.k}")
        self.k = min(self.k, max(len(self.items), 1))

    def parts(self) -> list[list[Any]]:
        return [self.items[j::self.k] for j in range(self.k)]

    def merge(self, results: list[list[Any]]) -> list[Any]:
        """Each shard's list of per-item results (one per item, in the shard's order) -> one list in item order."""
        out: list[Any] = [None] * len(self.items)
        for j, part in enumerate(results):
            if len(part) != len(self.items[j::self.k]):
                raise ValueError(f"shard {j} returned {len(part)} results for {len(self.items[j::self.k])} items")
            out[j::self.k] = part
        return out


def merge_shards(shards: Shards, outcomes: list[Outcome]) -> list[Any]:
    """The per-item results of every shard, in the items' order; a named error where a shard failed (a sharded
    benchmark's table is only whole with every shard)."""
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise JobsFailedError(f"{len(failed)} of {len(outcomes)} shard(s) failed ({failed[0].label}: "
                              f"{failed[0].error}); the table would be incomplete")
    return shards.merge([o.result for o in sorted(outcomes, key=lambda o: o.index)])
