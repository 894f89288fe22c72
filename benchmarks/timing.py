"""Shared timing helper of the benchmark scripts (run them as ``python benchmarks/<name>.py``)."""
import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (call it once beforehand to exclude compilation)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
