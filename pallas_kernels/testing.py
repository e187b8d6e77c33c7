"""Inputs and error measures shared by the kernel tests and the benchmark.

Inputs come from NumPy's generator: on a small CPU a jitted threefry costs seconds of XLA
compile per shape, NumPy costs nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _normal(rng: np.random.Generator, shape, dtype):
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32)).astype(dtype)


def random_qkv(seed: int, batch: int, seq: int, q_heads: int, kv_heads: int, head_dim: int,
               dtype=jnp.float32):
    """(q, k, v, dout) with unit-normal entries."""
    rng = np.random.default_rng(seed)
    q_shape, kv_shape = (batch, seq, q_heads, head_dim), (batch, seq, kv_heads, head_dim)
    return (_normal(rng, q_shape, dtype), _normal(rng, kv_shape, dtype),
            _normal(rng, kv_shape, dtype), _normal(rng, q_shape, dtype))


def packed_segments(seed: int, batch: int, seq: int, mean_len: float):
    """Segment ids [B, S] int32 of several packed documents per row (ids increase)."""
    starts = np.random.default_rng(seed).random((batch, seq)) < 1.0 / mean_len
    return jnp.asarray(np.cumsum(starts, axis=1, dtype=np.int32))


def random_cache(seed: int, batch: int, window: int, q_heads: int, kv_heads: int,
                 head_dim: int, cache_len: int, dtype=jnp.float32):
    """(q [B, W, Hq, D], k_cache, v_cache [B, T, Hkv, D])."""
    rng = np.random.default_rng(seed)
    shape = (batch, cache_len, kv_heads, head_dim)
    return (_normal(rng, (batch, window, q_heads, head_dim), dtype), _normal(rng, shape, dtype),
            _normal(rng, shape, dtype))


def relative_error(got, want, floor: float = 1.0) -> float:
    """max |got - want| / max(max |want|, floor).

    The floor only matters for references that are (near) zero, e.g. dq and dk of a
    one-token sequence, where fp32 rounding of dO.V - rowsum(dO*O) is all that is left;
    test tensors are unit-scale, so every other reference has max |want| > 1.
    """
    got = np.asarray(jnp.asarray(got, jnp.float32))
    want = np.asarray(jnp.asarray(want, jnp.float32))
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), floor))


def attention_and_grads(fn, q, k, v, dout):
    """(out, (dq, dk, dv)) of `fn(q, k, v)` for the cotangent `dout`."""
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(dout)
