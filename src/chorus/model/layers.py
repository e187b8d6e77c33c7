"""Transformer building blocks shared by the decoder and the audio encoder.

Parameters carry logical axis names (see chorus.sharding); activations are constrained by
logical names so one set of rules shards every mesh shape.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import pallas_kernels

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
    return DTYPES[name]


def dense_init(names: tuple[str, ...], num_in_axes: int = 1):
    """Truncated-normal init scaled by fan-in, tagged with logical axis names."""
    in_axes = tuple(range(num_in_axes))
    out_axes = tuple(range(num_in_axes, len(names)))
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                            in_axis=in_axes, out_axis=out_axes)
    return nn.with_logical_partitioning(init, names)


class Projection(nn.Module):
    """A bias-free multi-axis linear map: contracts `num_in_axes` trailing input axes.

    (nn.DenseGeneral initializes a flattened kernel, which breaks logical partitioning of
    3-D kernels under a mesh; this creates the kernel in its final shape.)
    """

    out_shape: tuple[int, ...]
    names: tuple[str, ...]
    num_in_axes: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_shape = x.shape[x.ndim - self.num_in_axes:]
        kernel = self.param("kernel", dense_init(self.names, self.num_in_axes),
                            in_shape + tuple(self.out_shape), self.param_dtype)
        contract = (tuple(range(x.ndim - self.num_in_axes, x.ndim)),
                    tuple(range(self.num_in_axes)))
        return jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                                   (contract, ((), ())))


class RMSNorm(nn.Module):
    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (x32 * scale.astype(jnp.float32)).astype(self.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding over the last axis. x [B, S, H, D], positions [B, S]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, S, D/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class Mlp(nn.Module):
    """SwiGLU feed-forward."""

    hidden_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
        gate = nn.Dense(self.hidden_dim, kernel_init=dense_init(("embed", "mlp")), name="gate",
                        **kw)(x)
        up = nn.Dense(self.hidden_dim, kernel_init=dense_init(("embed", "mlp")), name="up",
                      **kw)(x)
        h = nn.silu(gate) * up
        h = nn.with_logical_constraint(h, ("activation_batch", "activation_length",
                                           "activation_mlp"))
        return nn.Dense(d, kernel_init=dense_init(("mlp", "embed")), name="down", **kw)(h)


class Attention(nn.Module):
    """Grouped-query attention with RoPE and an optional KV cache.

    Call patterns, all through pallas_kernels' public entry points:
      * `cache is None`: full-sequence attention (training, scoring);
      * `prefill=True`: full-sequence attention, and k/v written into cache rows [0, S);
      * otherwise: the S new tokens are written at rows `cache_lengths` .. +S (per sequence)
        and attend to the cache through `decode_attention`: causally (a decode step, a verify
        window, an extend window), or - with `chunk_size` (a chunk of a chunked-causal stream)
        - every query of the window sees the cached rows and the window's valid rows
        (`segment_ids` > 0, a prefix of the window), as in the full chunked mask.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    causal: bool = True
    chunk_size: int | None = None  # chunked-causal (streaming encoder), with causal=False
    rope_theta: float | None = 10_000.0
    sliding_window: int | None = None
    logit_soft_cap: float | None = None
    attention_impl: str = "auto"
    block_q: int = 128
    block_kv: int = 128
    prefill: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, positions, segment_ids=None, cache=None, cache_lengths=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q = Projection((self.num_heads, self.head_dim), ("embed", "heads", "head_dim"),
                       name="query", **kw)(x)
        k = Projection((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "head_dim"),
                       name="key", **kw)(x)
        v = Projection((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "head_dim"),
                       name="value", **kw)(x)
        if self.rope_theta is not None:
            q = apply_rope(q, positions, self.rope_theta)
            k = apply_rope(k, positions, self.rope_theta)
        q = nn.with_logical_constraint(q, ("activation_batch", "activation_length",
                                           "activation_heads", "head_dim"))
        opts = dict(sliding_window=self.sliding_window, logit_soft_cap=self.logit_soft_cap,
                    impl=self.attention_impl)
        new_cache = None
        if cache is None or self.prefill:
            out = pallas_kernels.attention(q, k, v, segment_ids=segment_ids, causal=self.causal,
                                           block_q=self.block_q, block_kv=self.block_kv,
                                           chunk_size=self.chunk_size, **opts)
            if cache is not None:
                new_cache = {"k": _write_rows(cache["k"], k, jnp.zeros_like(cache_lengths)),
                             "v": _write_rows(cache["v"], v, jnp.zeros_like(cache_lengths))}
        else:
            new_cache = {"k": _write_rows(cache["k"], k, cache_lengths),
                         "v": _write_rows(cache["v"], v, cache_lengths)}
            if self.chunk_size is None:
                out = pallas_kernels.decode_attention(q, new_cache["k"], new_cache["v"],
                                                      cache_lengths + x.shape[1],
                                                      block_kv=self.block_kv, **opts)
            else:
                visible = cache_lengths + jnp.sum(segment_ids > 0, axis=1).astype(jnp.int32)
                out = _window_attention(q, new_cache["k"], new_cache["v"], visible,
                                        block_kv=self.block_kv, **opts)
        out = nn.with_logical_constraint(out, ("activation_batch", "activation_length",
                                               "activation_heads", "head_dim"))
        y = Projection((x.shape[-1],), ("heads", "head_dim", "embed"), num_in_axes=2,
                       name="out", **kw)(out)
        return y, new_cache


def _write_rows(buffer: jax.Array, rows: jax.Array, starts: jax.Array) -> jax.Array:
    """Writes rows [B, W, ...] into buffer [B, T, ...] at per-sequence offsets starts [B].

    dynamic_update_slice clamps a start past T - W (it cannot raise under jit), which would
    overwrite earlier rows: callers must size the cache (chorus.decoding checks capacity).
    """

    def one(buf, new, start):
        idx = (start,) + (0,) * (buf.ndim - 1)
        return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), idx)

    return jax.vmap(one)(buffer, rows, starts)


def _window_attention(q, k_cache, v_cache, visible, **opts):
    """Every query of the window q [B, W, Hq, D] sees cache rows [0, visible[b]).

    The W queries are folded into the query-head groups of ONE decode-attention query (all
    of a group share its kv head and position), so the bidirectional window is answered by
    the causal decode kernel in a single pass over the cache.
    """
    b, w, hq, d = q.shape
    hkv = k_cache.shape[2]
    folded = q.reshape(b, w, hkv, hq // hkv, d).transpose(0, 2, 3, 1, 4)  # [B, Hkv, G, W, D]
    out = pallas_kernels.decode_attention(folded.reshape(b, 1, hq * w, d), k_cache, v_cache,
                                          visible, **opts)
    out = out.reshape(b, hkv, hq // hkv, w, d).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, w, hq, d)
