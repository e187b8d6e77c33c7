"""Decode attention for TPU (Mosaic): W new queries per sequence against a ragged KV cache.

Grid (B, Hkv, kv blocks), kv blocks "arbitrary" with the running softmax state in VMEM.
The per-sequence lengths are scalar-prefetched into SMEM so the kv index map can clamp to
the blocks a row actually uses: blocks past `length` (or before the sliding window) are
never DMA'd, which is what makes a ragged batch cheap. All G query heads of a kv head and
all W window slots share one kernel tile of W*G rows, so each cache block is read once.

The cache is never copied when it can be avoided: with D a multiple of 128 (or one kv head)
[B, T, Hkv, D] is viewed as [B, T, Hkv*D] and a (block, D) tile is column block `h`;
otherwise it is transposed to [B, Hkv, T, D] (a full cache copy: prefer D % 128 == 0).
T need not be a multiple of the block: the last block is partial, its garbage rows are
masked out of the scores and zeroed in V.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels import tiles
from pallas_kernels.blocks import kv_range_for_decode
from pallas_kernels.params import DecodeParams
from pallas_kernels.shapes import out_struct

SUBLANES = 8
LANES = 128


def fit_block(cache_len: int, block_kv: int, *, strict: bool) -> int:
    """A cache that fits in one block is one full block; otherwise (8, 128) alignment."""
    if cache_len <= block_kv:
        return cache_len
    align = LANES if strict else SUBLANES
    if block_kv % align:
        raise ValueError(f"TPU decode attention block_kv: expected a multiple of {align} for "
                         f"cache length {cache_len}, got {block_kv}")
    return block_kv


def _cache_view(cache, block_kv: int):
    """(kernel array, block shape, (batch, head, kv block) -> block index) for one cache."""
    b, t, hkv, d = cache.shape
    if d % LANES == 0 or hkv == 1:
        return cache.reshape(b, t, hkv * d), (None, block_kv, d), lambda bi, h, j: (bi, j, h)
    return (cache.transpose(0, 2, 1, 3), (None, None, block_kv, d),
            lambda bi, h, j: (bi, h, j, 0))


def _kernel(lengths_ref, q_ref, k_ref, v_ref, slot_ref, o_ref, m_sc, l_sc, acc_sc, *,
            p: DecodeParams):
    b, j = pl.program_id(0), pl.program_id(2)
    length = lengths_ref[b]

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, tiles.MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    lo, hi = kv_range_for_decode(length, window=p.window, block_kv=p.block_kv,
                                 sliding_window=p.sliding_window)

    @pl.when((j >= lo) & (j <= hi))
    def _step():
        s = tiles.scores(q_ref[...], k_ref[...], scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        q_pos = length - p.window + slot_ref[...]  # [R, 1]
        k_pos = j * p.block_kv + lax.broadcasted_iota(jnp.int32, s.shape, 1)
        mask = tiles.visible(q_pos, k_pos, causal=True, sliding_window=p.sliding_window)
        v = v_ref[...]
        if p.cache_len % p.block_kv:
            rows = j * p.block_kv + lax.broadcasted_iota(jnp.int32, v.shape, 0)
            v = jnp.where(rows < p.cache_len, v, jnp.zeros_like(v))  # partial block garbage
        m, denom, acc = tiles.online_softmax_step(m_sc[...], l_sc[...], acc_sc[...],
                                                  tiles.apply_mask(s, mask), v)
        m_sc[...] = m
        l_sc[...] = denom
        acc_sc[...] = acc

    @pl.when(j == pl.num_programs(2) - 1)
    def _finish():
        out, _ = tiles.finalize(m_sc[...], l_sc[...], acc_sc[...])
        o_ref[...] = out.astype(o_ref.dtype)


def decode(q_rows, k_cache, v_cache, lengths, slots, p: DecodeParams):
    """q_rows [B, Hkv, R, D], caches [B, T, Hkv, D], lengths [B], slots [R] -> [B, Hkv, R, D]."""
    batch, hkv, rows, d = q_rows.shape
    k_arr, block, index = _cache_view(k_cache, p.block_kv)
    v_arr, _, _ = _cache_view(v_cache, p.block_kv)

    def kv_map(bi, h, j, lengths_ref):
        lo, hi = kv_range_for_decode(lengths_ref[bi], window=p.window, block_kv=p.block_kv,
                                     sliding_window=p.sliding_window)
        return index(bi, h, jnp.minimum(jnp.maximum(j, lo), hi))

    kv_spec = pl.BlockSpec(block, kv_map)
    q_spec = pl.BlockSpec((None, None, rows, d), lambda bi, h, j, lengths_ref: (bi, h, 0, 0))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(batch, hkv, p.num_kv_blocks),
        in_specs=[q_spec, kv_spec, kv_spec,
                  pl.BlockSpec((rows, 1), lambda bi, h, j, lengths_ref: (0, 0))],
        out_specs=q_spec,
        scratch_shapes=[pltpu.VMEM((rows, 1), jnp.float32), pltpu.VMEM((rows, 1), jnp.float32),
                        pltpu.VMEM((rows, d), jnp.float32)],
    )
    return pl.pallas_call(
        functools.partial(_kernel, p=p),
        grid_spec=grid_spec,
        out_shape=out_struct(q_rows.shape, q_rows.dtype, q_rows, k_cache),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=p.interpret,
        name="decode_attention_tpu",
    )(lengths.astype(jnp.int32), q_rows, k_arr, v_arr, slots.astype(jnp.int32).reshape(rows, 1))
