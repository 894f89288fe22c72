"""The job graph runner: dependency order, critical-path priority, failures, and worker processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jaxdistill.experiments.jobs import Job, JobFailed, chain_costs, check_graph, default_workers, run_jobs, worker_cores


# Module-level job functions: worker processes import them by reference.

def write_after(folder: str, name: str, reads: tuple[str, ...] = ()) -> str:
    """Append ``name`` to order.txt; fails unless every file in ``reads`` was already written."""
    for other in reads:
        if not (Path(folder) / other).exists():
            raise RuntimeError(f"{name} ran before {other}")
    time.sleep(0.05)
    (Path(folder) / name).write_text(name)
    with open(Path(folder) / "order.txt", "a") as f:
        f.write(name + "\n")
    return name.upper()


def explode(message: str) -> None:
    raise ValueError(message)


def where_am_i(seconds: float) -> tuple[list[int], str | None, int]:
    """The cores this worker may use, its malloc tunables and its pid (after ``seconds``, so that two
    such jobs overlap and run on two workers)."""
    import os

    time.sleep(seconds)
    return sorted(os.sched_getaffinity(0)), os.environ.get("GLIBC_TUNABLES"), os.getpid()


def programs_held() -> tuple[int, int]:
    """(this worker's pid, how many compiled versions of a jitted function it held before this job)."""
    import os

    import jax
    import jax.numpy as jnp

    global _double
    if "_double" not in globals():
        _double = jax.jit(lambda x: 2 * x)
    held = _double._cache_size()
    _double(jnp.ones(3))
    return os.getpid(), held


def diamond(folder: Path) -> list[Job]:
    """a -> (b, c) -> d, plus an independent cheap e."""
    f = str(folder)
    return [Job("d", write_after, dict(folder=f, name="d", reads=("b", "c")), after=("b", "c"), cost=1),
            Job("b", write_after, dict(folder=f, name="b", reads=("a",)), after=("a",), cost=5),
            Job("c", write_after, dict(folder=f, name="c", reads=("a",)), after=("a",), cost=1),
            Job("a", write_after, dict(folder=f, name="a"), cost=1),
            Job("e", write_after, dict(folder=f, name="e"), cost=0.5)]


def test_chain_costs_are_the_longest_path_to_the_end():
    costs = chain_costs(diamond(Path("/unused")))
    assert costs == {"a": 1 + 5 + 1, "b": 5 + 1, "c": 1 + 1, "d": 1, "e": 0.5}


def test_one_worker_runs_in_dependency_order_longest_chain_first(tmp_path):
    results = run_jobs(diamond(tmp_path), workers=1)
    assert results == {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}
    # a (chain 7) before e (0.5); among b and c, b (chain 6) first; d waits on both.
    assert (tmp_path / "order.txt").read_text().split() == ["a", "b", "c", "d", "e"]


def test_two_workers_run_every_job_after_its_dependencies(tmp_path):
    results = run_jobs(diamond(tmp_path), workers=2)
    assert results == {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}
    order = (tmp_path / "order.txt").read_text().split()
    assert sorted(order) == ["a", "b", "c", "d", "e"]
    assert order.index("a") < order.index("b") < order.index("d") and order.index("c") < order.index("d")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_names_itself_and_its_dependents_never_start(tmp_path, workers):
    f = str(tmp_path)
    jobs = [Job("bad", explode, dict(message="no such column 'answer'"), cost=2),
            Job("after bad", write_after, dict(folder=f, name="after"), after=("bad",))]
    with pytest.raises(JobFailed, match="'bad' failed: no such column 'answer'") as info:
        run_jobs(jobs, workers=workers)
    assert isinstance(info.value.__cause__, ValueError)
    assert not (tmp_path / "after").exists()


def test_next_job_spreads_kinds_only_among_nearly_equal_chains():
    from jaxdistill.experiments.jobs import next_job

    ready = ["gkd1", "gkd2", "seqkd1", "sft1"]
    chain = {"gkd1": 74.0, "gkd2": 74.0, "seqkd1": 59.0, "sft1": 20.0}
    kinds = {"gkd1": "gkd", "gkd2": "gkd", "seqkd1": "seqkd", "sft1": "sft"}
    assert next_job(ready, chain, kinds, set()) == "gkd1"  # nothing running: the longest chain
    assert next_job(ready, chain, kinds, {"calibrate"}) == "gkd1"
    assert next_job(ready, chain, kinds, {"gkd"}) == "seqkd1"  # 59 >= 0.75 x 74: another kind
    assert next_job(ready, chain, kinds, {"gkd", "seqkd"}) == "gkd1"  # sft's 20 is too short
    assert next_job(["gkd1", "sft1"], chain, kinds, {"gkd"}) == "gkd1"


def test_bad_graphs_are_clear_errors():
    job = lambda name, after=(): Job(name, write_after, {}, after=after)  # noqa: E731
    with pytest.raises(ValueError, match=r"unique; repeated: \['a'\]"):
        check_graph([job("a"), job("a")])
    with pytest.raises(ValueError, match=r"'b' waits on unknown jobs \['z'\]"):
        check_graph([job("a"), job("b", ("z",))])
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        check_graph([job("a", ("b",)), job("b", ("a",))])


def test_default_workers_is_one_per_core_on_a_cpu_host_within_memory(monkeypatch):
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert default_workers() == max(1, min(cores, 8, int(memory / 2**30 // 2)))
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 3 * 2**30 // 4096}[name])
    assert default_workers() == 1  # 3 GiB of memory: one worker, whatever the cores


def test_a_killed_parent_takes_its_workers_with_it(tmp_path):
    """A graph whose parent is killed (SIGKILL) leaves no worker running its job to the end."""
    import signal
    import subprocess
    import sys

    script = (f"from jaxdistill.experiments.jobs import Job, run_jobs\nimport test_jobs\n"
              f"run_jobs([Job('slow', test_jobs.sleep_then_write, dict(path={str(tmp_path / 'done')!r}))], "
              f"workers=2)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent)
    deadline = time.time() + 60
    while not (tmp_path / "done.started").exists():
        assert time.time() < deadline and parent.poll() is None, "the worker never started"
        time.sleep(0.1)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    time.sleep(4)  # the job would write done after 3 s
    assert not (tmp_path / "done").exists()


def sleep_then_write(path: str) -> None:
    Path(path + ".started").write_text("")
    time.sleep(3)
    Path(path).write_text("finished")


def test_worker_cores_are_equal_disjoint_shares(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 0, 2, 6, 5})
    assert worker_cores(2) == [[0, 2], [4, 5]]  # the fifth core stays idle: every share has two
    assert worker_cores(5) == [[0], [2], [4], [5], [6]]
    assert worker_cores(6) is None  # fewer cores than workers: nobody is pinned


def test_workers_are_pinned_to_their_share_and_use_huge_pages(tmp_path):
    import os
    import sys

    before = os.environ.get("GLIBC_TUNABLES")
    jobs = [Job(name, where_am_i, dict(seconds=1.0)) for name in ("a", "b")]
    results = run_jobs(jobs, workers=2)
    (cores_a, tunables_a, pid_a), (cores_b, tunables_b, pid_b) = results["a"], results["b"]
    assert pid_a != pid_b and pid_a != os.getpid()
    shares = worker_cores(2)
    if shares is None:  # one core here (or no affinity control): workers share everything
        assert cores_a == cores_b
    else:
        assert sorted([cores_a, cores_b]) == sorted(shares) and not set(cores_a) & set(cores_b)
    if sys.platform.startswith("linux"):
        assert "glibc.malloc.hugetlb=1" in tunables_a and "glibc.malloc.hugetlb=1" in tunables_b
    assert os.environ.get("GLIBC_TUNABLES") == before  # this process's environment is restored


def test_a_worker_drops_its_compiled_programs_when_the_kind_of_job_changes():
    kinds = ["sft", "sft", "gkd", "", "gkd", "sft"]
    names = [f"job{i}" for i in range(len(kinds))]
    jobs = [Job(name, programs_held, after=tuple(names[:i]), kind=kind) for i, (name, kind) in enumerate(zip(names, kinds))]
    results = run_jobs(jobs, workers=2)  # one job at a time (each waits on the previous), either worker
    last_kind: dict[int, str] = {}  # per worker pid: the kind of the last job with a kind
    for name, kind in zip(names, kinds):
        pid, held = results[name]
        if pid not in last_kind:
            expected = 0  # a fresh worker
        elif kind and last_kind[pid] and kind != last_kind[pid]:
            expected = 0  # dropped
        else:
            expected = 1  # kept: same kind, or a job without a kind
        assert held == expected, (name, kind, pid, last_kind)
        last_kind[pid] = kind or last_kind.get(pid, "")
