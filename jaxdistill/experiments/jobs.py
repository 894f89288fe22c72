"""A graph of independent runs (trainings, calibrations, evaluations) executed on worker processes.

    jobs = [Job("teacher", train, {...}, cost=500),
            Job("calibrate", calibrate_one, {...}, after=("teacher",), cost=90), ...]
    results = run_jobs(jobs, workers=2)          # {name: what its fn returned}

Why: XLA runs the programs of a tiny model on about one CPU core (a second core speeds one training step
up by ~15%), so the tiny world's default run keeps every core busy by running independent stages at
once: the teacher's SFT next to the proxy's and the students' warm-ups, calibrations next to the
scorecard arms of the original teacher, and so on. On an accelerator a run wants the whole device:
``workers=1`` runs the jobs one after another in this process.

Scheduling: a job starts once every job in ``after`` has finished; among the ready jobs the one with
the longest chain of remaining work (its ``cost`` plus the costliest chain that waits on it) starts
first, so the critical path is never left waiting, unless a job of another kind than those running
is nearly as long (``next_job``). Workers are fresh ``spawn`` processes (JAX is not
fork-safe). Every job is expected to skip work it already finished (a finished run folder is reused),
so an interrupted graph resumes by running it again. A failing job stops the graph: no new job starts,
and its error is raised with its name.

CPU workers (Linux) are set up for throughput, measured on 2 cores with the tiny teacher's SFT:
- Each is pinned to its own equal share of the cores (``worker_cores``). Unpinned, every worker's XLA
  thread pools span all cores and spin against each other: two unpinned workers ran 120 steps in
  ~70 s each, two pinned ones in ~58-62 s. XLA splits reductions by the threads it may use, so the low
  bits of a result depend on the cores per worker (the same on every worker, so not on which worker
  ran a job), and differ from a run in this process by float rounding.
- They back large allocations with transparent huge pages (``glibc.malloc.hugetlb=1``): a training
  step's ~165 MB of temporaries is a fresh ``mmap`` each step, first touched page by page (5.4 M page
  faults in 120 steps); with huge pages, 0.2 M, and a step alone ~17% faster. Results are bit-identical.
Whole default runs (README) vary by +-20% with this machine's speed, so their times do not separate
these effects; dropping compiled programs between kinds of job (``Job.kind``) took the run's peak
memory from 4.0-4.2 GiB to 2.7-3.0 GiB.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from jaxdistill.config import configure_logging

log = logging.getLogger("jaxdistill.jobs")


# What a job costs beyond its training steps (starting up, loading its models, compiling), in seconds on
# one core; job costs include it, so that the quick profile's jobs of two steps do not look free to the ETA.
JOB_OVERHEAD_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work.

    name:   unique; other jobs name it in ``after``, and ``run_jobs`` returns its result under it.
    fn:     a module-level function (workers import it by reference); called as ``fn(**kwargs)``.
    kwargs: its arguments (picklable: configs, paths, numbers).
    after:  names of the jobs whose outputs it reads.
    cost:   its expected duration in seconds on one core (orders the ready jobs, and the ETA).
    kind:   jobs of one kind compile the same programs (e.g. "gkd" arms). A worker that takes a job of
            another kind first drops the compiled programs it holds (``jax.clear_caches``), so its
            memory is that of one kind of job, not of all it ran; "" never drops anything.
    """

    name: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    after: tuple[str, ...] = ()
    cost: float = 1.0
    kind: str = ""


class JobFailed(RuntimeError):
    """A job raised; ``__cause__`` is its error."""


def chain_costs(jobs: Sequence[Job]) -> dict[str, float]:
    """Per job: its cost plus the largest chain cost among the jobs that wait on it (critical path)."""
    by_name = {j.name: j for j in jobs}
    waiting: dict[str, list[str]] = {j.name: [] for j in jobs}
    for j in jobs:
        for dep in j.after:
            waiting[dep].append(j.name)
    memo: dict[str, float] = {}

    def chain(name: str) -> float:
        if name not in memo:
            memo[name] = by_name[name].cost + max((chain(n) for n in waiting[name]), default=0.0)
        return memo[name]

    return {j.name: chain(j.name) for j in jobs}


# A job of a kind no worker is running may start ahead of a costlier one whose chain is at most
# 1 / KIND_SPREAD times longer (see ``next_job``).
KIND_SPREAD = 0.75


def next_job(ready: Sequence[str], chain: Mapping[str, float], kinds: Mapping[str, str],
             running_kinds: set[str]) -> str:
    """The ready job to start: the longest chain (``ready`` is sorted by it, longest first), unless that
    job's kind is already running and a job of another kind has a chain within ``KIND_SPREAD`` of it;
    then the first such job. Two workers then compile one kind of program each (the first gkd and the
    first seqkd arm side by side) instead of both compiling the same kind at once, then both the next;
    later jobs of a kind tend to reach the worker that holds its programs."""
    best = ready[0]
    if kinds[best] not in running_kinds:
        return best
    for name in ready[1:]:
        if chain[name] < KIND_SPREAD * chain[best]:
            break
        if kinds[name] not in running_kinds:
            return name
    return best


def check_graph(jobs: Sequence[Job]) -> None:
    """Unique names, known dependencies, no cycle; raises ValueError naming the problem."""
    names = [j.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"job names must be unique; repeated: {duplicates}")
    known = set(names)
    for j in jobs:
        missing = [d for d in j.after if d not in known]
        if missing:
            raise ValueError(f"job {j.name!r} waits on unknown jobs {missing}")
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    by_name = {j.name: j for j in jobs}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ValueError(f"jobs wait on each other in a cycle: {' -> '.join(path + (name,))}")
        state[name] = 1
        for dep in by_name[name].after:
            visit(dep, path + (name,))
        state[name] = 2

    for j in jobs:
        visit(j.name, ())


WORKER_MEMORY_GIB = 2  # a tiny-world worker holds up to ~1.7 GiB (models, compiled programs, caches)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """On a CPU host, one worker per core, at most 8 and at most one per ``WORKER_MEMORY_GIB`` of
    physical memory; 1 on an accelerator (one run fills it)."""
    import jax

    if jax.default_backend() != "cpu":
        return 1
    cores = available_cores()
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        memory_gib = 2.0 * WORKER_MEMORY_GIB
    return max(1, min(cores, 8, int(memory_gib // WORKER_MEMORY_GIB)))


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the process that started it dies (no orphans left training
    after the parent is killed); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def worker_cores(workers: int) -> list[list[int]] | None:
    """Equal, disjoint shares of this process's cores, one per worker (leftover cores stay idle, so every
    job computes with the same number of threads); None where there is no core per worker or no
    affinity control (not Linux), and on an accelerator host (its workers drive devices, not cores)."""
    import jax

    if not hasattr(os, "sched_setaffinity") or jax.default_backend() != "cpu":
        return None
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // workers
    if share < 1:
        return None
    return [cores[i * share:(i + 1) * share] for i in range(workers)]


HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb=1"  # glibc >= 2.35; other C libraries ignore the variable


@contextlib.contextmanager
def _worker_environment():
    """Sets ``GLIBC_TUNABLES`` for the workers started inside (glibc reads it at process start), then
    restores this process's environment. A user's own malloc tunables are kept and take precedence."""
    old = os.environ.get("GLIBC_TUNABLES")
    if sys.platform.startswith("linux") and "glibc.malloc.hugetlb" not in (old or ""):
        os.environ["GLIBC_TUNABLES"] = f"{old}:{HUGE_PAGE_TUNABLE}" if old else HUGE_PAGE_TUNABLE
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GLIBC_TUNABLES", None)
        else:
            os.environ["GLIBC_TUNABLES"] = old


def _init_worker(compilation_cache: str | None, cores: Any) -> None:
    """Dies with the parent, takes its share of the cores (``cores``: a queue of core lists, or None)
    before JAX starts, quiet logs, and compiled programs shared through JAX's persistent cache."""
    _die_with_parent()
    if cores is not None:
        os.sched_setaffinity(0, cores.get())
    configure_logging()
    if compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", compilation_cache)


_worker_kind = ""  # the kind of the last job this worker ran


def _run_in_worker(fn: Callable[..., Any], kwargs: Mapping[str, Any], kind: str) -> Any:
    """Runs one job in a worker; first drops the compiled programs of another kind of job, and returns
    the freed memory to the system (measured after a calibration: 1.15 GiB -> 0.40 GiB; the gkd arm
    that followed peaked at 1.07 GiB instead of 1.50 GiB)."""
    global _worker_kind
    if kind and _worker_kind and kind != _worker_kind:
        import gc

        import jax

        jax.clear_caches()
        gc.collect()
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                ctypes.CDLL(None).malloc_trim(0)  # glibc: give freed heap pages back
            except (OSError, AttributeError):
                pass
    _worker_kind = kind or _worker_kind
    return fn(**kwargs)


class _Progress:
    """One line per finished job: elapsed time and an ETA of the remaining jobs' cost, converted to
    seconds at the rate the finished jobs ran (seconds per unit of cost) and shared by the workers."""

    def __init__(self, jobs: Sequence[Job], workers: int, label: str):
        self.total, self.workers, self.label = len(jobs), workers, label
        self.remaining_cost = sum(j.cost for j in jobs)
        self.done, self.done_cost, self.spent = 0, 0.0, 0.0
        self.started = time.perf_counter()

    def finished(self, job: Job, seconds: float) -> None:
        self.done += 1
        self.done_cost += job.cost
        self.remaining_cost -= job.cost
        self.spent += seconds
        elapsed = time.perf_counter() - self.started
        eta = max(self.remaining_cost, 0.0) * self.spent / max(self.done_cost, 1e-9) / self.workers
        print(f"[{self.label} {self.done}/{self.total}] {job.name} done in {seconds:.0f} s; elapsed "
              f"{elapsed / 60:.1f} min, eta {eta / 60:.1f} min", flush=True)


def run_jobs(jobs: Sequence[Job], *, workers: int = 1, label: str = "jobs",
             compilation_cache: str | None = None) -> dict[str, Any]:
    """Run ``jobs`` respecting ``after``; returns {name: result}. ``workers=1`` runs them in this process.

    ``compilation_cache``: a folder for JAX's persistent compilation cache, shared by the workers so
    a program compiled by one is loaded by the others (workers > 1 only).
    Raises ``JobFailed`` (from the job's error) when a job raises; jobs already running finish first.
    """
    check_graph(jobs)
    chain = chain_costs(jobs)
    by_name = {j.name: j for j in jobs}
    pending = sorted(by_name, key=lambda n: -chain[n])  # ready jobs start in this order (see next_job)
    kinds = {j.name: j.kind for j in jobs}
    finished: dict[str, Any] = {}
    progress = _Progress(jobs, max(workers, 1), label)

    def ready() -> list[str]:
        return [n for n in pending if all(d in finished for d in by_name[n].after)]

    if workers <= 1:
        while pending:
            name = ready()[0]
            pending.remove(name)
            t = time.perf_counter()
            try:
                finished[name] = by_name[name].fn(**by_name[name].kwargs)
            except Exception as e:
                raise JobFailed(f"job {name!r} failed: {e}") from e
            progress.finished(by_name[name], time.perf_counter() - t)
        return finished

    context = multiprocessing.get_context("spawn")
    shares = worker_cores(workers)
    cores = None
    if shares is not None:
        cores = context.Queue()
        for share in shares:
            cores.put(share)
        log.info("%d workers, each pinned to %d core(s)", workers, len(shares[0]))
    running: dict[cf.Future, tuple[str, float]] = {}
    failure: tuple[str, BaseException] | None = None
    with _worker_environment(), cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                        initargs=(compilation_cache, cores)) as pool:
        while pending or running:
            while failure is None and len(running) < workers and ready():
                name = next_job(ready(), chain, kinds, {by_name[n].kind for n, _ in running.values()})
                pending.remove(name)
                log.info("starting %s", name)
                job = by_name[name]
                running[pool.submit(_run_in_worker, job.fn, job.kwargs, job.kind)] = (name, time.perf_counter())
            if not running:
                break
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                name, t = running.pop(future)
                error = future.exception()
                if error is not None:
                    print(f"[{label}] {name} failed: {error!r}", file=sys.stderr, flush=True)
                    failure = failure or (name, error)
                    continue
                finished[name] = future.result()
                progress.finished(by_name[name], time.perf_counter() - t)
    if failure is not None:
        raise JobFailed(f"job {failure[0]!r} failed: {failure[1]}") from failure[1]
    return finished
