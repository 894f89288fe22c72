"""Device mesh, logical axis rules and model sharding.

The mesh has three named axes:

- ``data``:   pure data parallelism (batch rows; parameters replicated),
- ``fsdp``:   batch rows *and* parameter shards (ZeRO-3 style: weights gathered per layer by XLA),
- ``tensor``: tensor parallelism (attention heads, MLP width, vocabulary).

Parameters carry logical axis names (``logical_axes`` metadata, set where each module creates
them); ``LOGICAL_RULES`` maps those names onto mesh axes. A dimension that a mesh axis does not
divide evenly stays replicated along that axis (for example 2 KV heads on ``tensor=4``), so any model
runs on any mesh; ``describe_sharding`` shows what was split.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdistill.config import option

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None = replicated)
LOGICAL_RULES: dict[str, Any] = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "norm": None,
    "lora_rank": None,
    "length": None,
    "head_dim": None,
}


@dataclasses.dataclass
class MeshConfig:
    """Shape of the device mesh; one axis may be -1 to take all remaining devices."""

    data: int = option(1, "data-parallel replicas (batch rows; parameters replicated)", ge=-1)
    fsdp: int = option(-1, "parameter + batch sharding (-1: all devices not used by data and tensor)", ge=-1)
    tensor: int = option(1, "tensor-parallel width (attention heads, MLP width, vocabulary)", ge=-1)
    num_devices: int = option(-1, "use the first N devices (-1: all)", ge=-1)


def mesh_axis_sizes(config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes of ``config`` on ``num_devices`` devices (resolving the -1 axis)."""
    sizes = [config.data, config.fsdp, config.tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices do not divide into mesh axes {sizes}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs {math.prod(sizes)} devices, "
            f"but {num_devices} are available; set the axes so their product is {num_devices} (or use -1)"
        )
    return sizes[0], sizes[1], sizes[2]


def mesh_devices(config: MeshConfig) -> list:
    """The devices a mesh of ``config`` spans (all, or the first ``num_devices``); ValueError naming the field
    when it asks for more devices than are present or its axes do not fit them. Cheap: a run calls it before
    loading anything (after ``jax.distributed`` is initialised)."""
    present = jax.devices()
    if config.num_devices > len(present) or config.num_devices == 0 or config.num_devices < -1:
        raise ValueError(f"mesh.num_devices={config.num_devices}, but {len(present)} device(s) are present: "
                         f"use 1 .. {len(present)}, or -1 for all")
    devices = present if config.num_devices == -1 else present[:config.num_devices]
    mesh_axis_sizes(config, len(devices))
    return devices


def make_mesh(config: MeshConfig | None = None, devices=None) -> Mesh:
    """A ``Mesh`` with axes (data, fsdp, tensor) over ``devices`` (default: ``mesh_devices(config)``)."""
    config = config or MeshConfig()
    devices = np.asarray(mesh_devices(config) if devices is None else devices)
    return Mesh(devices.reshape(mesh_axis_sizes(config, devices.size)), MESH_AXES)


def _axis_size(mesh: Mesh, mesh_axes) -> int:
    if mesh_axes is None:
        return 1
    if isinstance(mesh_axes, str):
        mesh_axes = (mesh_axes,)
    return math.prod(mesh.shape[a] for a in mesh_axes)


def logical_to_spec(logical_axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh,
                    rules: dict[str, Any] = LOGICAL_RULES) -> P:
    """Logical axis names + array shape -> ``PartitionSpec``; non-dividing axes stay replicated."""
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {logical_axes} do not match shape {shape}")
    spec = []
    for name, size in zip(logical_axes, shape):
        mesh_axes = rules.get(name) if name is not None else None
        if mesh_axes is not None and size % _axis_size(mesh, mesh_axes) == 0 and _axis_size(mesh, mesh_axes) > 1:
            spec.append(mesh_axes)
        else:
            spec.append(None)
    return P(*spec)


def variable_sharding(variable: nnx.Variable, mesh: Mesh) -> NamedSharding:
    """The ``NamedSharding`` of one parameter (abstract or concrete) from its ``logical_axes``."""
    value = variable.get_value()
    axes = variable.get_metadata().get("logical_axes")
    if axes is None:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, logical_to_spec(tuple(axes), tuple(value.shape), mesh))


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """A state of ``NamedSharding`` leaves matching ``state``'s variables."""
    return jax.tree.map(lambda v: v.replace(variable_sharding(v, mesh)), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Move every parameter of ``model`` onto ``mesh`` following its logical axes (in place)."""
    state = nnx.state(model)
    shardings = state_shardings(state, mesh)
    nnx.update(model, jax.device_put(state, shardings))
    return model


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Rows over (data, fsdp), every other dimension replicated."""
    return NamedSharding(mesh, P(LOGICAL_RULES["batch"], *([None] * (ndim - 1))))


def batch_shards(mesh) -> int:
    """How many ways rows are split: the size of the batch axes (data x fsdp) of a Mesh or AbstractMesh."""
    return math.prod(mesh.shape[a] for a in LOGICAL_RULES["batch"])


def shard_rows(tree, mesh: Mesh | None):
    """Every array of ``tree`` (leading dimension: rows, host or device) as a jax.Array with its rows split
    over the mesh's batch axes (``batch_sharding``), as the sampler places the rollouts; on the default
    device without a mesh, on one device, or when the rows do not divide (then jit replicates them)."""
    shards = 1 if mesh is None or mesh.size == 1 else batch_shards(mesh)

    def place(x):
        if shards > 1 and np.ndim(x) >= 1 and np.shape(x)[0] % shards == 0:
            return jax.device_put(x, batch_sharding(mesh, np.ndim(x)))
        return jnp.asarray(x)

    return jax.tree.map(place, tree)


def describe_sharding(model: nnx.Module) -> dict[str, P | None]:
    """Path ("layers/0/mlp/up_proj/kernel") -> ``PartitionSpec`` of every parameter (None: unsharded)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        sharding = getattr(var.get_value(), "sharding", None)
        out["/".join(map(str, path))] = getattr(sharding, "spec", None)
    return out
