"""Run Pallas kernels per shard under the ambient mesh (`jax.set_mesh`).

Mosaic kernels cannot be auto-partitioned by XLA, so when a mesh is set the kernel call is
wrapped in `jax.shard_map`: batch over ('data', 'fsdp'), heads over 'tensor'. Every other
mesh axis sees the call replicated. Axes already manual (we are inside the caller's own
shard_map) are left alone. Fallbacks:
  * batch not divisible by the batch axes -> the largest dividing subset, else replicated;
  * kv heads not divisible by 'tensor' but query heads are -> each kv head is repeated the
    minimum number of times (tensor / gcd(Hkv, tensor)) so the shards line up; the repeat's
    transpose sums the gradients back;
  * query heads not divisible by 'tensor' -> heads replicated.
The kernel function is traced per shard, so it must plan from the shapes it receives.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"


def ambient_mesh():
    """The mesh set with `jax.set_mesh`, or None."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return None
    if not [a for a in mesh.axis_names if a not in mesh.manual_axes]:
        return None
    return mesh


def _free_axes(mesh) -> list[str]:
    return [a for a in mesh.axis_names if a not in mesh.manual_axes]


def batch_axes(mesh, batch: int) -> tuple[str, ...] | None:
    free = _free_axes(mesh)
    axes = tuple(a for a in BATCH_AXES if a in free)
    candidates = [axes] + [(a,) for a in axes]
    for cand in candidates:
        if cand and batch % math.prod(mesh.shape[a] for a in cand) == 0:
            return cand
    return None


def head_plan(mesh, q_heads: int, kv_heads: int, *, allow_repeat: bool) -> tuple[str | None, int]:
    """(axis to shard heads over or None, kv head repeat factor)."""
    if HEAD_AXIS not in _free_axes(mesh):
        return None, 1
    tp = mesh.shape[HEAD_AXIS]
    if kv_heads % tp == 0:
        return HEAD_AXIS, 1
    if allow_repeat and q_heads % tp == 0:
        return HEAD_AXIS, tp // math.gcd(kv_heads, tp)
    return None, 1


def shard_attention(fn, q, k, v, segment_ids):
    """fn(q, k, v, segment_ids) -> [B, S, Hq, D], run per (batch, head) shard."""
    mesh = ambient_mesh()
    if mesh is None:
        return fn(q, k, v, segment_ids)
    batch = batch_axes(mesh, q.shape[0])
    heads, repeat = head_plan(mesh, q.shape[2], k.shape[2], allow_repeat=True)
    if repeat > 1:
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
    spec = P(batch, None, heads, None)
    free = set(_free_axes(mesh))
    if segment_ids is None:
        mapped = jax.shard_map(lambda q, k, v: fn(q, k, v, None), mesh=mesh,
                               in_specs=(spec, spec, spec), out_specs=spec, axis_names=free,
                               check_vma=False)
        return mapped(q, k, v)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec, P(batch, None)),
                           out_specs=spec, axis_names=free, check_vma=False)
    return mapped(q, k, v, segment_ids)


def shard_decode(fn, q, k_cache, v_cache, lengths):
    """fn(q, k_cache, v_cache, lengths) -> [B, W, Hq, D], run per (batch, kv head) shard.

    Repeating kv heads would copy the whole cache every step, so a kv head count that does
    not divide 'tensor' replicates heads instead.
    """
    mesh = ambient_mesh()
    if mesh is None:
        return fn(q, k_cache, v_cache, lengths)
    batch = batch_axes(mesh, q.shape[0])
    heads, _ = head_plan(mesh, q.shape[2], k_cache.shape[2], allow_repeat=False)
    spec = P(batch, None, heads, None)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec, P(batch)),
                           out_specs=spec, axis_names=set(_free_axes(mesh)), check_vma=False)
    return mapped(q, k_cache, v_cache, lengths)
