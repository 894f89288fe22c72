"""Compiled programs: JAX's persistent compilation cache, and a counter of the programs a run compiles.

``use_compilation_cache(folder)`` is what every command line calls first: XLA executables are written
to ``folder`` and read back by the next run with the same programs (a rerun, a resume, the next job of
a worker), which then starts without compiling. The default folder is ``$JAXDISTILL_CACHE`` or, when
unset, ``$XDG_CACHE_HOME/jaxdistill/jax`` (``~/.cache/jaxdistill/jax``); ``""`` or ``"off"`` turns the
cache off. Entries are keyed by JAX on the program, the jax/jaxlib versions and the devices, so one
folder can serve many runs and machines.

``CompileCounter`` counts the programs compiled (or loaded from the persistent cache) while it is
open, and the seconds spent on them, from JAX's own monitoring events:

    counter = CompileCounter()
    with counter:
        step()
    counter.programs, counter.seconds   # programs built, seconds tracing + lowering + compiling them
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import jax
from jax import monitoring

log = logging.getLogger(__name__)

OFF = ("", "off", "none", "false")
DEFAULT = "default"  # the config value that picks default_cache_dir()

# A program pays these three in turn; only the last one is skipped by a persistent-cache hit (it then
# measures the load). jax reports each once per program it builds.
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_EVENT = "/jax/core/compile/backend_compile_duration"


def default_cache_dir() -> Path:
    """$JAXDISTILL_CACHE, else $XDG_CACHE_HOME/jaxdistill/jax, else ~/.cache/jaxdistill/jax."""
    if os.environ.get("JAXDISTILL_CACHE"):
        return Path(os.environ["JAXDISTILL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxdistill" / "jax"


def use_compilation_cache(folder: str | Path | None = DEFAULT, *, min_compile_seconds: float = 0.0) -> Path | None:
    """Point JAX's persistent compilation cache at ``folder`` (``"default"``/None: ``default_cache_dir()``;
    ``""``/``"off"``: no cache). Call it before the first compile; returns the folder used, or None.

    ``min_compile_seconds``: programs that compiled faster than this are not written (JAX's default is
    1 s, which on a CPU leaves out most of a small model's programs; 0 keeps every one)."""
    if folder is not None and str(folder).strip().lower() in OFF:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = default_cache_dir() if folder is None or str(folder) == DEFAULT else Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"compilation_cache_dir={str(folder)!r}: cannot create {path} ({err}); choose a "
                         "writable folder or set compilation_cache_dir=off") from err
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _reset_cache_handle()
    log.debug("persistent compilation cache in %s", path)
    return path


def _reset_cache_handle() -> None:
    """JAX opens its cache once, at the first compile; a later change of folder needs a reset."""
    try:
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # a JAX without it reads the new folder anyway
        pass


class CompileCounter:
    """Programs compiled while open (``programs``) and seconds spent building them (``seconds``:
    tracing, lowering and XLA compilation or persistent-cache load; ``backend_seconds``: the last
    part alone). Re-entrant: each ``with`` adds to the totals; ``take()`` reads and resets them."""

    def __init__(self):
        self.programs = 0
        self.seconds = 0.0
        self.backend_seconds = 0.0
        self._lock = threading.Lock()
        self._open = 0

    def _listen(self, event: str, duration: float, **_) -> None:
        if event not in (TRACE_EVENT, LOWER_EVENT, BACKEND_EVENT):
            return
        with self._lock:
            self.seconds += duration
            if event == BACKEND_EVENT:
                self.programs += 1
                self.backend_seconds += duration

    def __enter__(self) -> "CompileCounter":
        if self._open == 0:
            monitoring.register_event_duration_secs_listener(self._listen)
        self._open += 1
        return self

    def __exit__(self, *exc) -> None:
        self._open -= 1
        if self._open == 0:
            monitoring.unregister_event_duration_listener(self._listen)

    def take(self) -> tuple[int, float, float]:
        """(programs, seconds, backend_seconds) since the last ``take``, then zero."""
        with self._lock:
            out = (self.programs, self.seconds, self.backend_seconds)
            self.programs, self.seconds, self.backend_seconds = 0, 0.0, 0.0
        return out
