"""Shared test set-up.

Eight host CPU devices are forced before JAX is imported, so the same process tests both the
1-device path (arrays default to device 0) and 8-device meshes.

The suite runs on pytest-xdist workers (``-n auto --dist loadfile --no-loadscope-reorder`` in
pyproject.toml): one per core (at most 4, and one per 4 GiB of memory), each taking whole files (so a
module's fixtures are built once), in the order set below: the slowest files first, so that none of
them is left running alone at the end (xdist's own order, most tests first, started them last).
``-n 0`` runs everything in one process.

Tests that read the real data sets or tokenizers take the ``shared_dir`` fixture: without that folder
(``$JAXDISTILL_SHARED``, else ``../shared``) they skip with the reason; everything else runs anywhere.
The tiny models and worlds the tests build come from one module, ``tests/helpers.py``.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """Where the data and real tokenizers are: ``$JAXDISTILL_SHARED``, else ``shared/`` beside the checkout."""
    env = os.environ.get("JAXDISTILL_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only data and real tokenizers; a test that needs them skips, saying so, when they are absent."""
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"needs the data and real tokenizers (no folder at {path}; set JAXDISTILL_SHARED)")
    return path


# The files that take longest (measured on a loaded 2-core machine, 2026-12-06: the distillation smoke ~11
# worker-minutes, the notebooks ~8, the multi-process runs ~5, the crash test ~3, the calibration and
# scorecard tests ~3 each, the compile-once test and the bad-input suite ~1 each).
SLOW_FIRST = ("test_distill_smoke.py", "test_notebooks.py", "test_distributed.py", "test_crash_resume.py",
              "test_calibrate.py", "test_evaluate.py", "test_compile_once.py", "test_bad_inputs.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: file order kept otherwise


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 and at most one per 4 GiB of memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 8.0
    return max(1, min(cores, 4, int(memory_gib // 4)))
