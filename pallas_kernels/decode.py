"""Decode attention glue: fold query heads into rows, plan blocks, call the variant kernel."""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels import decode_gpu, decode_tpu
from pallas_kernels.params import DecodeParams

MAX_WINDOW = 16


def plan(q_shape, cache_len: int, num_kv_heads: int, *, variant: str, interpret: bool,
         sliding_window: int | None, logit_soft_cap: float | None, scale: float,
         block_kv: int) -> DecodeParams:
    window, hq = q_shape[1], q_shape[2]
    groups = hq // num_kv_heads
    rows = window * groups
    if variant == "tpu":
        bkv = decode_tpu.fit_block(cache_len, block_kv, strict=not interpret)
        padded, splits = rows, 1
    else:
        bkv = decode_gpu.fit_block(cache_len, block_kv)
        padded, splits = decode_gpu.padded_rows(rows), decode_gpu.num_splits(cache_len, bkv)
    return DecodeParams(variant=variant, interpret=interpret, window=window, num_groups=groups,
                        padded_rows=padded, cache_len=cache_len, block_kv=bkv,
                        sliding_window=sliding_window, logit_soft_cap=logit_soft_cap,
                        scale=float(scale), kv_splits=splits)


def decode_attention_pallas(q, k_cache, v_cache, lengths, p: DecodeParams):
    """q [B, W, Hq, D], caches [B, T, Hkv, D], lengths [B] -> [B, W, Hq, D].

    Row r of a kv head's tile is (window slot r // G, query head r % G), so the G heads
    sharing a kv head and all W slots are answered from one pass over the cache.
    """
    b, w, hq, d = q.shape
    hkv, g = k_cache.shape[2], p.num_groups
    # The matmuls need one operand dtype: queries follow the cache (it is the big tensor).
    q_rows = q.astype(k_cache.dtype).reshape(b, w, hkv, g, d).transpose(0, 2, 1, 3, 4)
    q_rows = q_rows.reshape(b, hkv, w * g, d)
    slots = jnp.arange(w * g, dtype=jnp.int32) // g
    module = decode_tpu if p.variant == "tpu" else decode_gpu
    out = module.decode(q_rows, k_cache, v_cache, lengths, slots, p)
    out = out.reshape(b, hkv, w, g, d).transpose(0, 2, 1, 3, 4).reshape(b, w, hq, d)
    return out.astype(q.dtype)
