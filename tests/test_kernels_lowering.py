"""The real (non-interpret) kernels lower for their hardware from this CPU machine:
TPU variants are AOT-compiled by Mosaic/libtpu for a TPU topology (sharded, through the
public entry points); GPU variants are lowered to Triton IR for CUDA."""

import os

# Several test processes may load libtpu (compile-only) at once on a shared machine.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import pallas_kernels  # noqa: E402

TOPOLOGIES = {
    "v5e": dict(topology_name="v5e:2x2"),
    "v5p": dict(topology_name="v5p:2x2x1", chips_per_host_bounds=(2, 2, 1), num_slices=1),
}
SEQ, HEADS, KV_HEADS = 1000, 8, 2  # an odd length: padding + edge masking in the real kernel


def _tpu_mesh(name):
    topo = topologies.get_topology_desc(platform="tpu", **TOPOLOGIES[name])
    devices = np.array(topo.devices).reshape(2, 1, 2)
    return Mesh(devices, ("data", "fsdp", "tensor"))


def _struct(mesh, shape, dtype, spec):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def _train_step(impl):
    def loss(q, k, v, seg):
        out = pallas_kernels.attention(q, k, v, segment_ids=seg, impl=impl, block_q=128,
                                       block_kv=128, sliding_window=512)
        return jnp.sum(out.astype(jnp.float32) ** 2)
    return jax.grad(loss, argnums=(0, 1, 2))


def _decode_step(impl):
    def step(q, k_cache, v_cache, lengths):
        return pallas_kernels.decode_attention(q, k_cache, v_cache, lengths, impl=impl,
                                               block_kv=128)
    return step


def _count_mosaic(compiled) -> int:
    return compiled.as_text().count('custom_call_target="tpu_custom_call"')


# head_dim 128: q/k/v read in place as [B, S, H*D]; 64: transposed to [B, H, S, D].
@pytest.mark.parametrize("topology,head_dim", [("v5e", 128), ("v5e", 64), ("v5p", 128)])
def test_tpu_flash_fwd_bwd_compiles_with_mosaic(topology, head_dim):
    mesh = _tpu_mesh(topology)
    qkv = P(("data", "fsdp"), None, "tensor", None)
    args = (_struct(mesh, (4, SEQ, HEADS, head_dim), jnp.bfloat16, qkv),
            _struct(mesh, (4, SEQ, KV_HEADS, head_dim), jnp.bfloat16, qkv),
            _struct(mesh, (4, SEQ, KV_HEADS, head_dim), jnp.bfloat16, qkv),
            _struct(mesh, (4, SEQ), jnp.int32, P(("data", "fsdp"), None)))
    with pallas_kernels.target_platform("tpu"), jax.set_mesh(mesh):
        compiled = jax.jit(_train_step("auto")).lower(*args).compile()
    assert _count_mosaic(compiled) == 3  # forward, dq, dk/dv


def test_tpu_flash_compiles_for_one_chip_without_mesh():
    mesh = _tpu_mesh("v5e")
    one_chip = Mesh(np.array(mesh.devices.flat[:1]), ("data",))
    args = (_struct(one_chip, (1, SEQ, HEADS, 64), jnp.bfloat16, P()),
            _struct(one_chip, (1, SEQ, KV_HEADS, 64), jnp.bfloat16, P()),
            _struct(one_chip, (1, SEQ, KV_HEADS, 64), jnp.bfloat16, P()),
            _struct(one_chip, (1, SEQ), jnp.int32, P()))
    with pallas_kernels.target_platform("tpu"):
        compiled = jax.jit(_train_step("pallas")).lower(*args).compile()
    assert _count_mosaic(compiled) == 3


@pytest.mark.parametrize("head_dim", [128, 64])
def test_tpu_decode_compiles_with_mosaic(head_dim):
    mesh = _tpu_mesh("v5e")
    spec = P(("data", "fsdp"), None, "tensor", None)
    args = (_struct(mesh, (4, 4, HEADS, head_dim), jnp.bfloat16, spec),
            _struct(mesh, (4, 2000, KV_HEADS, head_dim), jnp.bfloat16, spec),
            _struct(mesh, (4, 2000, KV_HEADS, head_dim), jnp.bfloat16, spec),
            _struct(mesh, (4,), jnp.int32, P(("data", "fsdp"))))
    with pallas_kernels.target_platform("tpu"), jax.set_mesh(mesh):
        compiled = jax.jit(_decode_step("auto")).lower(*args).compile()
    assert _count_mosaic(compiled) == 1


def _triton_calls(fn, *shapes) -> int:
    with pallas_kernels.target_platform("gpu"):
        lowered = jax.jit(fn).trace(*shapes).lower(lowering_platforms=("cuda",))
    return lowered.as_text().count("__gpu$xla.gpu.triton")


def test_gpu_flash_fwd_bwd_lowers_to_triton():
    q = jax.ShapeDtypeStruct((2, SEQ, HEADS, 128), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, SEQ, KV_HEADS, 128), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, SEQ), jnp.int32)
    assert _triton_calls(_train_step("pallas"), q, kv, kv, seg) == 3


def test_gpu_decode_lowers_to_triton():
    q = jax.ShapeDtypeStruct((2, 4, HEADS, 128), jnp.bfloat16)
    cache = jax.ShapeDtypeStruct((2, 2000, KV_HEADS, 128), jnp.bfloat16)
    lengths = jax.ShapeDtypeStruct((2,), jnp.int32)
    assert _triton_calls(_decode_step("auto"), q, cache, cache, lengths) == 1



def _in_callers_shard_map(shapes, struct):
    """(train, decode) wrapped in the caller's own shard_map (check_vma on), and their args."""
    spec, batch = P(("data", "fsdp"), None, "tensor", None), P(("data", "fsdp"))
    train = jax.shard_map(_train_step("pallas"), in_specs=(spec, spec, spec, P(*batch, None)),
                          out_specs=(spec, spec, spec))
    decode = jax.shard_map(_decode_step("pallas"), in_specs=(spec, spec, spec, batch),
                           out_specs=spec)
    q, kv, seg, wq, lengths = (struct(shape, dtype, sp) for shape, dtype, sp in (
        (shapes["q"], jnp.bfloat16, spec), (shapes["kv"], jnp.bfloat16, spec),
        (shapes["seg"], jnp.int32, P(*batch, None)), (shapes["wq"], jnp.bfloat16, spec),
        (shapes["len"], jnp.int32, batch)))
    return (train, (q, kv, kv, seg)), (decode, (wq, kv, kv, lengths))


def test_kernels_lower_inside_callers_shard_map_with_check_vma():
    """The model may call attention inside its own shard_map (check_vma=True), where outputs
    need varying-axes types: Mosaic compiles and Triton lowers fwd+bwd and decode there."""
    shapes = dict(q=(4, 256, HEADS, 128), kv=(4, 256, KV_HEADS, 128), seg=(4, 256),
                  wq=(4, 2, HEADS, 128), len=(4,))
    mesh = _tpu_mesh("v5e")
    with pallas_kernels.target_platform("tpu"), jax.set_mesh(mesh):
        (train, train_args), (decode, decode_args) = _in_callers_shard_map(
            shapes, lambda shape, dtype, spec: _struct(mesh, shape, dtype, spec))
        assert _count_mosaic(jax.jit(train).lower(*train_args).compile()) == 3
        assert _count_mosaic(jax.jit(decode).lower(*decode_args).compile()) == 1

    cpu_mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
    with jax.set_mesh(cpu_mesh):
        (train, train_args), (decode, decode_args) = _in_callers_shard_map(
            shapes, lambda shape, dtype, spec: jax.ShapeDtypeStruct(shape, dtype))
        assert _triton_calls(train, *train_args) == 3
        assert _triton_calls(decode, *decode_args) == 1
