"""Multi-process (multi-host) runs: starting the JAX distributed runtime, and moving data to the host.

One JAX process runs per host (TPU VM worker, GPU node) or per GPU. Every process runs the same
program; arrays on the mesh are *global* (each process holds only its own devices' shards). The
calibration loop keeps every process in lockstep on the *same* global batch:

- every process reads the same prompts (same data pipeline, same seed);
- generation and the training forward are sharded over the mesh's batch axis, so each device
  computes only its rows;
- whatever host code needs (completion ids for the verifier and the proxy's re-tokenization,
  per-row log-probs for the rewards) is gathered from every process with ``to_host``, so every
  process sees the full batch and computes identical rewards and advantages;
- process 0 alone writes metrics and the exported model; orbax writes checkpoints cooperatively.

``initialize(mode)`` starts the runtime before any JAX computation:

- ``off``: a single process; nothing to start.
- ``explicit``: ``coordinator_address`` ("host:port" of process 0), ``num_processes`` and
  ``process_id`` are given (config fields, or the ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
  and ``JAX_PROCESS_ID`` environment variables). CPU processes talk through gloo collectives.
- ``auto`` (default): ``explicit`` when those three values are set; otherwise JAX's own cluster
  detection when a cluster is visible (a Cloud TPU VM, a SLURM job with several tasks, an Open MPI
  launch); otherwise a single process.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
from typing import Any

import jax
import numpy as np

from jaxdistill.config import ConfigError, option

log = logging.getLogger(__name__)

MODES = ("auto", "off", "explicit")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass
class DistributedConfig:
    """How this process joins a multi-process run (see ``jaxdistill.distributed``)."""

    mode: str = option("auto", "auto (detect TPU pod / SLURM / Open MPI, or use the explicit fields when set), "
                               "off (single process) or explicit (coordinator_address, num_processes, process_id)")
    coordinator_address: str | None = option(None, "host:port of process 0 (env JAX_COORDINATOR_ADDRESS)")
    num_processes: int | None = option(None, "number of processes in the run (env JAX_NUM_PROCESSES)", ge=1)
    process_id: int | None = option(None, "this process's rank, 0 .. num_processes - 1 (env JAX_PROCESS_ID)", ge=0)
    local_device_ids: tuple[int, ...] | None = option(
        None, "accelerators this process drives (default: JAX's; SLURM on GPUs: one per task, so a "
              "one-process-per-node launch lists them all, e.g. [0,1,2,3,4,5,6,7])")
    initialization_timeout: int = option(300, "seconds to wait for every process to join", gt=0)

    def __post_init__(self):
        # YAML 1.1 reads a bare `off` as false, which the config loader then turns into "False".
        if str(self.mode).lower() in ("false", "no"):
            self.mode = "off"
        if self.mode not in MODES:
            raise ConfigError(f"distributed.mode must be one of {MODES}, got {self.mode!r}")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def detect_cluster() -> str | None:
    """The multi-process environment JAX can configure itself from, or None.

    Only cheap local checks (environment variables, device files); nothing is contacted."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in os.environ for v in slurm) and (_env_int("SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in os.environ and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    tpu_devices = glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
    if tpu_devices and importlib.util.find_spec("libtpu") is not None:
        return "tpu"
    return None


def initialize(mode: str = "auto", coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: tuple[int, ...] | None = None,
               initialization_timeout: int = 300) -> str:
    """Start the JAX distributed runtime (call before any JAX computation). Returns what was done:
    "off", "already", "single", "explicit" or the detected cluster ("tpu", "slurm", "ompi")."""
    if mode not in MODES:
        raise ValueError(f"distributed.mode must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return "off"
    if jax.distributed.is_initialized():
        return "already"
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    given = [k for k, v in explicit.items() if v is not None]
    kwargs: dict[str, Any] = {"initialization_timeout": initialization_timeout}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)

    if mode == "explicit" or (mode == "auto" and len(given) == 3):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise ValueError(f"distributed.mode=explicit needs {', '.join('distributed.' + k for k in missing)} "
                             "(or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment "
                             "variables); the coordinator address is host:port of process 0")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"distributed.process_id={process_id} must be in [0, num_processes={num_processes})")
        # CPU devices of different processes exchange data through gloo over TCP (JAX's default since
        # 0.5; set here for older versions). GPU and TPU devices use NCCL / ICI and ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        host = coordinator_address.rsplit(":", 1)[0].strip("[]")
        if host in LOOPBACK_HOSTS:  # one machine: keep the coordinator off the network interfaces too
            kwargs["coordinator_bind_address"] = coordinator_address
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   cluster_detection_method="deactivate", **kwargs)
        if host in LOOPBACK_HOSTS:
            _cpu_collectives_on_loopback()
        _log_started("explicit")
        return "explicit"

    if given:
        raise ValueError(f"distributed: only {', '.join(given)} set; set all of coordinator_address, "
                         "num_processes and process_id for an explicit launch, or none of them to auto-detect")
    cluster = detect_cluster()
    if cluster is None:
        log.debug("no multi-process cluster detected: running as a single process")
        return "single"
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as err:
        if cluster != "tpu":
            raise RuntimeError(f"jax.distributed.initialize() failed in the detected {cluster} job: {err}. "
                               "Set distributed.mode=explicit with coordinator_address, num_processes and "
                               "process_id, or distributed.mode=off for one process") from err
        # A single TPU VM (a Colab TPU, a v5e-8) may not describe itself as a slice, or JAX may already
        # be running in this notebook: one process is then the right answer.
        log.warning("jax.distributed was not started on this TPU VM (%s); continuing as one process. On a "
                    "multi-host slice every worker must start it: see launch/README.md", err)
        return "single"
    _log_started(cluster)
    return cluster


def _cpu_collectives_on_loopback() -> None:
    """Bind the gloo CPU collectives to 127.0.0.1 (gloo otherwise binds to the address of the machine's
    hostname). Uses JAX internals; if they moved, gloo keeps its default address and a warning says so."""
    try:
        from jax._src import distributed as jax_distributed, xla_bridge
        from jax._src.lib import _jax

        def make_client():
            collectives = _jax.make_gloo_tcp_collectives(
                distributed_client=jax_distributed.global_state.client, hostname="127.0.0.1")
            return xla_bridge.make_cpu_client(collectives=collectives)

        xla_bridge.register_backend_factory("cpu", make_client, priority=0, fail_quietly=False)
    except (ImportError, AttributeError, TypeError, RuntimeError) as err:
        log.warning("could not bind the CPU collectives to 127.0.0.1 (%s); gloo uses its default address", err)


def initialize_from_config(config: DistributedConfig) -> str:
    """``initialize`` with the fields of a ``DistributedConfig``."""
    return initialize(config.mode, config.coordinator_address, config.num_processes, config.process_id,
                      local_device_ids=config.local_device_ids,
                      initialization_timeout=config.initialization_timeout)


def _log_started(how: str) -> None:
    log.info("jax.distributed (%s): process %d of %d, %d local / %d global devices", how, jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
    """True on process 0 (the one that writes metrics, exports and prints)."""
    return jax.process_index() == 0


def to_host(x) -> np.ndarray:
    """The full value of an array as numpy, on every process.

    A global array whose shards live on other processes is gathered (a collective: every process
    must call this together, in the same order); a local array is simply copied to the host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
