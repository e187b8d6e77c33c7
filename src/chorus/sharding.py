"""Device mesh (data, fsdp, tensor) and the one table of logical-axis rules.

Params are created with logical names (`nn.with_logical_partitioning`) and activations are
constrained with `nn.with_logical_constraint`; these rules map both onto mesh axes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from chorus.config import MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("conv_width", None),
    ("conv_in", None),
    # activations
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    # KV cache
    ("cache_batch", BATCH_AXES),
    ("cache_length", None),
)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = config.resolve(len(devices))
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                             devices=devices)
    except (ValueError, NotImplementedError):
        # Topologies the mesh helper cannot map physically: fall back to device order.
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
                    axis_types=(AxisType.Auto,) * 3)


@contextlib.contextmanager
def activate(mesh: Mesh):
    """Sets the mesh and the logical rules for tracing and running sharded code."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        yield


def logical_to_sharding(logical_specs, mesh: Mesh):
    return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_AXIS_RULES)


def unbox(tree):
    """Strips flax partitioning boxes (no constraints applied: safe outside a trace)."""
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                        is_leaf=is_box)


def boxed_shardings(abstract_boxed, mesh: Mesh):
    """NamedShardings (unboxed tree structure) from the logical names on boxed leaves."""
    return logical_to_sharding(nn.get_partition_spec(abstract_boxed), mesh)


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways a batch's leading axis splits: the product of the batch axes."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def mesh_of(tree) -> Mesh | None:
    """The mesh a tree's arrays live on (its first NamedSharding-placed leaf's), or None (on
    one device, or host arrays)."""
    for leaf in jax.tree.leaves(tree):
        placed = getattr(leaf, "sharding", None)
        if isinstance(placed, NamedSharding):
            return placed.mesh
    return None


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_shardings(mesh: Mesh, batch) -> dict:
    return jax.tree.map(lambda x: batch_sharding(mesh, np.ndim(x)), batch)
