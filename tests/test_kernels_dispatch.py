"""Routing of the public entry points and their argument checks."""

import jax
import jax.numpy as jnp
import pytest

import pallas_kernels
from pallas_kernels import dispatch, flash_gpu, flash_tpu
from pallas_kernels.dispatch import Route, resolve
from pallas_kernels.reference import attention_reference, decode_attention_reference
from pallas_kernels.testing import random_cache, random_qkv


def test_auto_routes_per_platform():
    assert resolve("auto") == Route("xla")  # tests run on CPU
    with pallas_kernels.target_platform("tpu"):
        assert resolve("auto") == Route("pallas", "tpu")
        assert resolve("pallas") == Route("pallas", "tpu")
    with pallas_kernels.target_platform("gpu"):
        assert resolve("auto", cudnn_ok=True) == Route("cudnn")
        assert resolve("auto", cudnn_ok=False) == Route("pallas", "gpu")
    assert pallas_kernels.current_platform() == "cpu"


def test_interpret_variant_selection():
    assert resolve("pallas_interpret") == Route("pallas", dispatch.DEFAULT_INTERPRET_VARIANT,
                                                interpret=True)
    with pallas_kernels.target_platform("gpu"):
        assert resolve("pallas_interpret").variant == "gpu"
        with pallas_kernels.interpret_variant("tpu"):
            assert resolve("pallas_interpret").variant == "tpu"


def test_bad_impl_and_platform_errors():
    with pytest.raises(ValueError, match="impl"):
        resolve("triton")
    with pytest.raises(ValueError, match="pallas_interpret"):
        resolve("pallas")  # no Pallas kernel compiles for CPU
    with pytest.raises(ValueError, match="platform"):
        with pallas_kernels.target_platform("ipu"):
            pass


def test_cudnn_eligibility():
    q = jnp.zeros((1, 8, 2, 64), jnp.bfloat16)
    ok = dict(causal=True, sliding_window=None, logit_soft_cap=None)
    assert dispatch.cudnn_supports(q, None, **ok)
    assert not dispatch.cudnn_supports(q.astype(jnp.float32), None, **ok)
    assert not dispatch.cudnn_supports(q, jnp.zeros((1, 8), jnp.int32), **ok)
    assert not dispatch.cudnn_supports(q, None, **{**ok, "logit_soft_cap": 30.0})
    assert not dispatch.cudnn_supports(q, None, **{**ok, "causal": False, "sliding_window": 4})


def test_cpu_auto_is_the_reference():
    q, k, v, _ = random_qkv(0, 2, 9, 4, 2, 16)
    seg = jnp.array([[0] * 4 + [1] * 5, [0] * 9], jnp.int32)
    opts = dict(segment_ids=seg, sliding_window=3)
    got = jax.jit(lambda q, k, v: pallas_kernels.attention(q, k, v, **opts))(q, k, v)
    want = jax.jit(lambda q, k, v: attention_reference(q, k, v, **opts))(q, k, v)
    assert jnp.array_equal(got, want)
    q, kc, vc = random_cache(1, 2, 3, 4, 2, 16, 12)
    lengths = jnp.array([3, 12], jnp.int32)
    got = jax.jit(pallas_kernels.decode_attention)(q, kc, vc, lengths)
    assert jnp.array_equal(got, jax.jit(decode_attention_reference)(q, kc, vc, lengths))
    # The XLA route takes a window of any width whole (only the kernel routes slice it).
    q, kc, vc = random_cache(2, 2, 40, 4, 2, 16, 64)
    lengths = jnp.array([40, 57], jnp.int32)
    got = jax.jit(pallas_kernels.decode_attention)(q, kc, vc, lengths)
    assert jnp.array_equal(got, jax.jit(decode_attention_reference)(q, kc, vc, lengths))


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=jnp.zeros((1, 8, 3, 16)), v=jnp.zeros((1, 8, 3, 16))), "q heads"),
    (dict(v=jnp.zeros((1, 8, 2, 8))), "v.shape"),
    (dict(q=jnp.zeros((1, 8, 4, 16), jnp.int32)), "q.dtype"),
    (dict(segment_ids=jnp.zeros((1, 7), jnp.int32)), "segment_ids.shape"),
    (dict(segment_ids=jnp.zeros((1, 8))), "segment_ids.dtype"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(logit_soft_cap=-1.0), "logit_soft_cap"),
    (dict(block_q=0), "block_q"),
])
def test_attention_argument_errors(kwargs, match):
    args = dict(q=jnp.zeros((1, 8, 4, 16)), k=jnp.zeros((1, 8, 2, 16)),
                v=jnp.zeros((1, 8, 2, 16)))
    args.update(kwargs)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(ValueError, match=match):
        pallas_kernels.attention(q, k, v, **args)


def test_decode_argument_errors():
    q, kc, vc = random_cache(0, 2, 17, 4, 2, 16, 32)
    with pytest.raises(ValueError, match="window"):  # (windows > 16 are answered in slices)
        pallas_kernels.decode_attention(q[:, :0], kc, vc, jnp.array([20, 20]))
    with pytest.raises(ValueError, match="window"):
        pallas_kernels.decode_attention(q[:, :0], kc, vc, jnp.array([20, 20]), impl="xla")
    with pytest.raises(ValueError, match="lengths"):
        pallas_kernels.decode_attention(q[:, :2], kc, vc, jnp.array([20]))


def test_block_fitting():
    # One block for short sequences; (8, 128)-aligned blocks for a real TPU compile.
    assert flash_tpu.fit_blocks(7, 128, 128, strict=True) == (8, 8, 8)
    assert flash_tpu.fit_blocks(1000, 128, 256, strict=True) == (128, 256, 1024)
    with pytest.raises(ValueError, match="block_kv"):
        flash_tpu.fit_blocks(1000, 128, 64, strict=True)
    assert flash_tpu.fit_blocks(1000, 128, 64, strict=False) == (128, 64, 1024)
    # Powers of two >= 16 for Triton.
    assert flash_gpu.fit_blocks(7, 64, 128) == (16, 16, 16)
    assert flash_gpu.fit_blocks(1000, 64, 128) == (64, 128, 1024)
    with pytest.raises(ValueError, match="block_q"):
        flash_gpu.fit_blocks(1000, 96, 128)
