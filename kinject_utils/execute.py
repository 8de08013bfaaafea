"""Where a stage's independent jobs run: one after another in this process (``local``) or as Ray tasks.

Notebook 03's adapter trainings and notebook 05's scorings (one job per model x task x adapter: its cells
share one loaded model) are independent: each writes its own files atomically, through the same
content-hash caches, whichever executor runs it. So a Ray run, a local run and a run killed half-way
and resumed write the same ``03_adapters/`` and ``05_scores.csv``.

``EXECUTOR: local`` (the default) is the loop the notebooks always ran and needs no Ray.
``EXECUTOR: ray`` ships each job to Ray as a task that declares its resources:

* ``TASK_GPUS`` GPUs (default 1) when the cluster has GPUs and the stage's device is not ``cpu``: one
  QLoRA training per GPU; Ray sets ``CUDA_VISIBLE_DEVICES`` so the task's ``cuda`` is its own GPU.
* ``TASK_CPUS`` CPU slots (0: every CPU of the cluster, i.e. one task at a time); the task sets torch's
  threads (and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``) to exactly that many.

A task that raises or whose worker dies is retried once (``max_retries=1``); a job that fails twice is
named, with its error, in one :class:`JobsFailed` after every other job has finished (finished jobs
keep their files: the next run skips them). ``RAY_ADDRESS: auto`` starts a private Ray on
127.0.0.1 for the stage and shuts it down after; any other value (``ray://head:10001``,
``head:6379``) joins that cluster, whose nodes must have kinject installed and the same data.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any, Sequence

from .log import get_logger
from .log import progress as progress_bar
from .settings import check_choice, check_float, check_int

__all__ = ["EXECUTORS", "ExecutorSettings", "Job", "JobsFailed", "RAY_MISSING", "run_jobs", "schedule"]

log = get_logger("execute")

EXECUTORS = ("local", "ray")
RAY_MISSING = ("EXECUTOR: ray needs Ray, which is not installed here. Fix: pip install -e .[ray] (or "
               "pip install 'ray==2.60.0'), or set EXECUTOR: local")
#: environment a task needs to find the project's data, models and code (passed to Ray's workers); never a
#: token or key (Ray stores a job's runtime environment in its cluster state)
_ENV_PREFIXES = ("KINJECT_", "HF_", "TRANSFORMERS_")
_SECRET = ("TOKEN", "KEY", "SECRET", "PASSWORD")


@dataclasses.dataclass
class ExecutorSettings:
    """How a stage runs its jobs (the notebooks' ``EXECUTOR``, ``RAY_ADDRESS``, ``TASK_CPUS``, ``TASK_GPUS``).

    Attributes:
        executor: ``local`` (one after another, in this process) or ``ray``.
        ray_address: ``auto`` (a private Ray on 127.0.0.1, shut down after the stage) or an existing
            cluster's address (``ray://head:10001``, ``head:6379``).
        task_cpus: CPU slots (and torch threads) per task; 0: every CPU of the cluster (one task at a time
            on a CPU-only machine).
        task_gpus: GPUs per task when the cluster has GPUs and the device is not ``cpu`` (fractions share one).
    """

    executor: str = "local"
    ray_address: str = "auto"
    task_cpus: int = 0
    task_gpus: float = 1.0

    def __post_init__(self) -> None:
        check_choice(self, "executor", EXECUTORS, "local runs here one job at a time; ray needs "
                                                   "pip install -e .[ray]")
        if not isinstance(self.ray_address, str) or not self.ray_address.strip():
            raise ValueError(f"ExecutorSettings.ray_address must be 'auto' or a Ray address such as "
                             f"'ray://head:10001', got {self.ray_address!r}")
        check_int(self, "task_cpus", 0, hint="0 gives each task every CPU")
        check_float(self, "task_gpus", 0.0, 8.0, lo_open=True)


class Job:
    """One independent unit of work: picklable, with a ``label`` naming it in progress and errors.

    Subclasses implement :meth:`run`; it must write its results atomically and skip what is already
    written, so that a retried or resumed job does no work twice.
    """

    label: str = "job"
    gpu: bool = False  # whether the job can use a GPU (declares ``TASK_GPUS`` when the cluster has one)

    def run(self) -> Any:
        raise NotImplementedError

    def __call__(self) -> Any:
        return self.run()


class JobsFailed(RuntimeError):
    """Some jobs failed twice; ``failures`` maps each job's label to its error."""

    def __init__(self, failures: dict[str, str], done: int):
        self.failures = failures
        lines = "\n".join(f"  {label}: {err}" for label, err in failures.items())
        super().__init__(f"{len(failures)} job(s) failed after a retry ({done} finished and kept; re-run to "
                         f"resume: finished jobs are not redone):\n{lines}")


def run_jobs(jobs: Sequence[Job], settings: ExecutorSettings | None = None, desc: str = "jobs",
             progress: bool = True, device: str = "auto") -> list[Any]:
    """Run ``jobs``; their results in the same order.

    ``local``: one after another here (an error stops the run at once, as it always did). ``ray``: as
    Ray tasks (see the module's notes), with one progress bar over all jobs: pending, running (per
    worker) and done.
    """
    settings = settings or ExecutorSettings()
    if settings.executor == "local" or not jobs:
        return [job() for job in progress_bar(list(jobs), desc=desc, disable=not progress)]
    return _run_ray(list(jobs), settings, desc, progress, device)


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def _env() -> dict[str, str]:
    """``PYTHONPATH`` and the ``KINJECT_*``, ``HF_*`` and ``TRANSFORMERS_*`` variables, less any secret."""
    return {k: v for k, v in os.environ.items() if (k == "PYTHONPATH" or k.startswith(_ENV_PREFIXES))
            and not any(word in k.upper() for word in _SECRET)}


def connect(settings: ExecutorSettings, num_cpus: int | None = None) -> bool:
    """Join (or start) the Ray cluster ``settings`` names; True when this call started it (then shut it down).

    A Ray already initialised in this process (a test's, a notebook user's) is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if settings.ray_address == "auto":
        log.info("starting a local Ray on 127.0.0.1 (%s CPUs)", num_cpus or os.cpu_count())
        try:
            ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False,
                     object_store_memory=200 * 1024 ** 2, runtime_env={"env_vars": _env()},
                     configure_logging=False, log_to_driver=True)
        except Exception as exc:
            ray.shutdown()  # what did start of the failed node
            raise RuntimeError(f"a local Ray could not start here ({type(exc).__name__}: {exc}). Ray gives its "
                               "processes a fixed 30 s to start, which a heavily loaded machine can miss: retry "
                               "when the load is lower, or set EXECUTOR: local") from exc
        return True
    log.info("joining the Ray cluster at %s", settings.ray_address)
    ray.init(address=settings.ray_address, runtime_env={"env_vars": _env()}, configure_logging=False)
    return True


def _set_threads(n: int) -> None:
    """torch's intra-op threads (and the OpenMP/MKL variables of anything started later) to ``n``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def _task(job: Job, threads: int, tracker: Any) -> Any:
    """What a Ray worker runs: threads set to the task's CPUs, start and end reported, the job run."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    if threads:
        _set_threads(threads)
    tracker.start.remote(job.label, where)
    try:
        return job()
    finally:
        tracker.end.remote(job.label)


class _Tracker:
    """A Ray actor that knows which job runs on which worker (for the progress bar)."""

    def __init__(self) -> None:
        self.running: dict[str, str] = {}

    def start(self, label: str, where: str) -> None:
        self.running[label] = where

    def end(self, label: str) -> None:
        self.running.pop(label, None)

    def snapshot(self) -> dict[str, str]:
        return dict(self.running)


def _run_ray(jobs: list[Job], s: ExecutorSettings, desc: str, progress: bool, device: str) -> list[Any]:
    ray = import_ray()
    started = connect(s)
    try:
        res = ray.cluster_resources()
        cpus = s.task_cpus or max(1, int(res.get("CPU", 1)))
        if cpus > res.get("CPU", 0):
            raise ValueError(f"TASK_CPUS {cpus} is more than the Ray cluster's {res.get('CPU', 0):g} CPUs: no task "
                             "could ever start. Fix: set TASK_CPUS to at most the CPUs of one node (0: all)")
        use_gpu = res.get("GPU", 0) > 0 and str(device).lower() != "cpu"
        tracker = ray.remote(num_cpus=0)(_Tracker).remote()
        remote = ray.remote(_task)
        refs = {}
        for i, job in enumerate(jobs):
            gpus = s.task_gpus if use_gpu and job.gpu else 0
            opts = dict(num_cpus=cpus, num_gpus=gpus, max_retries=1, retry_exceptions=True, name=job.label)
            refs[remote.options(**opts).remote(job, 0 if gpus else cpus, tracker)] = i
        slots = int(res.get("GPU", 0) // s.task_gpus) if use_gpu else int(res.get("CPU", 1) // cpus)
        log.info("%s: %d Ray tasks, %g CPU(s)%s each; %d at a time on this cluster", desc, len(jobs), cpus,
                 f" and {s.task_gpus:g} GPU(s)" if use_gpu else "", max(1, slots))
        return _wait(ray, refs, jobs, tracker, desc, progress)
    finally:
        if started:
            ray.shutdown()


def _wait(ray: Any, refs: dict[Any, int], jobs: list[Job], tracker: Any, desc: str, progress: bool) -> list[Any]:
    results: list[Any] = [None] * len(jobs)
    failures: dict[str, str] = {}
    pending = list(refs)
    bar = progress_bar(total=len(jobs), desc=desc, disable=not progress)
    last = 0.0
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=2.0)
            for ref in ready:
                i = refs[ref]
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - every task error is reported with its job
                    failures[jobs[i].label] = _short(exc)
                    log.error("%s failed after a retry: %s", jobs[i].label, failures[jobs[i].label])
                bar.update(1)
            if time.monotonic() - last > 2.0 or not pending:
                last = time.monotonic()
                running = ray.get(tracker.snapshot.remote()) if pending else {}
                _show(bar, len(pending), running, len(jobs) - len(pending))
    finally:
        bar.close()
    if failures:
        raise JobsFailed(failures, len(jobs) - len(failures))
    return results


def _show(bar: Any, left: int, running: dict[str, str], done: int) -> None:
    by_worker: dict[str, list[str]] = {}
    for label, where in running.items():
        by_worker.setdefault(where, []).append(label)
    workers = "; ".join(f"{w}: {', '.join(ls)}" for w, ls in sorted(by_worker.items()))
    text = f"pending {left - len(running)}, running {len(running)}, done {done}" + (f" | {workers}" if workers else "")
    bar.set_postfix_str(text, refresh=True)
    log.debug(text)


def _short(exc: BaseException) -> str:
    """The last line of a Ray error (the original exception), not its whole remote traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def schedule(durations: dict[str, float], workers: int) -> list[list[str]]:
    """Longest job first onto the least loaded of ``workers`` (what Ray does with equal-size slots and a
    queue, up to order): each worker's jobs, in the order they would run."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    loads = [0.0] * workers
    out: list[list[str]] = [[] for _ in range(workers)]
    for label, d in sorted(durations.items(), key=lambda kv: (-kv[1], kv[0])):
        w = min(range(workers), key=lambda j: (loads[j], j))
        out[w].append(label)
        loads[w] += d
    return out

