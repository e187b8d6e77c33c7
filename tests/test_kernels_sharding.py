"""Pallas kernels under a (data, fsdp, tensor) mesh on 8 fake CPU devices: the calls run
inside shard_map over batch/heads and still match the reference (forward and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import pallas_kernels
from pallas_kernels import sharding
from pallas_kernels.reference import attention_reference, decode_attention_reference
from pallas_kernels.testing import (
    attention_and_grads,
    packed_segments,
    random_cache,
    random_qkv,
    relative_error,
)


@pytest.fixture(scope="module")
def mesh():
    devices = np.array(jax.devices()[:8]).reshape(2, 2, 2)
    return Mesh(devices, ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def _attention_grads(mesh, impl, q, k, v, dout, seg):
    def fn(q, k, v, dout, seg):
        return attention_and_grads(
            lambda q, k, v: pallas_kernels.attention(q, k, v, segment_ids=seg, impl=impl,
                                                     block_q=16, block_kv=16), q, k, v, dout)

    batch = NamedSharding(mesh, P(sharding.batch_axes(mesh, q.shape[0])))
    with jax.set_mesh(mesh):
        jitted = jax.jit(fn, in_shardings=(batch,) * 5)
        jaxpr = str(jax.make_jaxpr(fn)(q, k, v, dout, seg))
        return jitted(q, k, v, dout, seg), jaxpr


@pytest.mark.parametrize("batch,q_heads,kv_heads", [
    (4, 4, 2),  # batch over data*fsdp, heads over tensor
    (2, 4, 1),  # batch 2 only over 'data'; the single kv head is repeated to 2
])
def test_sharded_flash_matches_reference(mesh, batch, q_heads, kv_heads):
    q, k, v, dout = random_qkv(7, batch, 24, q_heads, kv_heads, 16)
    seg = packed_segments(8, batch, 24, 8.0)
    with pallas_kernels.interpret_variant("tpu"):
        got, jaxpr = _attention_grads(mesh, "pallas_interpret", q, k, v, dout, seg)
    assert "shard_map" in jaxpr
    want = attention_and_grads(lambda q, k, v: attention_reference(q, k, v, segment_ids=seg),
                               q, k, v, dout)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert relative_error(g, w) <= 1e-5


def test_sharding_plan_fallbacks(mesh):
    assert sharding.batch_axes(mesh, 8) == ("data", "fsdp")
    assert sharding.batch_axes(mesh, 2) == ("data",)
    assert sharding.batch_axes(mesh, 1) is None
    assert sharding.head_plan(mesh, 8, 4, allow_repeat=True) == ("tensor", 1)
    assert sharding.head_plan(mesh, 8, 1, allow_repeat=True) == ("tensor", 2)
    assert sharding.head_plan(mesh, 8, 1, allow_repeat=False) == (None, 1)
    assert sharding.head_plan(mesh, 3, 1, allow_repeat=True) == (None, 1)


def test_sharded_decode_matches_reference(mesh):
    q, k, v = random_cache(9, 4, 2, 4, 2, 16, 40)
    lengths = jnp.array([2, 17, 33, 40], jnp.int32)

    def fn(q, k, v, lengths):
        with pallas_kernels.interpret_variant("gpu"):
            return pallas_kernels.decode_attention(q, k, v, lengths, impl="pallas_interpret",
                                                   block_kv=16)

    with jax.set_mesh(mesh):
        got = jax.jit(fn)(q, k, v, lengths)
        assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v, lengths))
    want = decode_attention_reference(q, k, v, lengths)
    assert relative_error(got, want) <= 1e-5


def test_inside_callers_shard_map_calls_kernel_directly(mesh):
    """All mesh axes already manual (check_vma on): no nested shard_map, the kernel sees the
    local shard, and the custom backward runs there too."""
    q, k, v, dout = random_qkv(10, 8, 16, 2, 2, 16)

    def local(q, k, v, dout):
        assert sharding.ambient_mesh() is None
        # (The interpreter itself trips over check_vma for kernels with fori_loops / scalar
        # prefetch; the compiled kernels are checked in test_kernels_lowering.py.)
        with pallas_kernels.interpret_variant("tpu"):
            return attention_and_grads(lambda q, k, v: pallas_kernels.attention(
                q, k, v, impl="pallas_interpret", block_q=16, block_kv=16), q, k, v, dout)

    spec = P(("data", "fsdp", "tensor"))
    with jax.set_mesh(mesh):
        got = jax.jit(jax.shard_map(local, in_specs=(spec,) * 4, out_specs=spec))(q, k, v, dout)
    want = attention_and_grads(attention_reference, q, k, v, dout)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert relative_error(g, w) <= 1e-5
