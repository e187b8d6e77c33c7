"""Decode attention for GPU (Pallas Triton), split-kv ("flash decoding") style.

Grid (B, Hkv, splits): each program owns a contiguous chunk of kv blocks, intersects it with
the blocks its row can see (length and sliding window) and loops over them; the partial
results (normalized output + logsumexp per split) are merged afterwards in XLA. Splitting is
what keeps an H100 busy when B * Hkv is small. All G query heads and W window slots of a kv
head form one tile of rows (padded to a power of two >= 16 for tl.dot), so each cache block
is read once. The cache is read in place ([B, T, Hkv, D], the head is a stride); rows past T
in the last block are masked loads.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels import tiles
from pallas_kernels.blocks import kv_range_for_decode
from pallas_kernels.flash_gpu import MIN_TILE, next_pow2
from pallas_kernels.params import DecodeParams
from pallas_kernels.shapes import out_struct


def fit_block(cache_len: int, block_kv: int) -> int:
    if block_kv < MIN_TILE or block_kv & (block_kv - 1):
        raise ValueError(f"GPU decode attention block_kv: expected a power of two >= "
                         f"{MIN_TILE}, got {block_kv}")
    return min(block_kv, max(MIN_TILE, next_pow2(cache_len)))


def padded_rows(rows: int) -> int:
    return max(MIN_TILE, next_pow2(rows))


def num_splits(cache_len: int, block_kv: int, max_splits: int = 16,
               min_blocks_per_split: int = 4) -> int:
    """Enough splits to fill the GPU, but each long enough to amortize its merge."""
    blocks = -(-cache_len // block_kv)
    return max(1, min(max_splits, blocks // min_blocks_per_split))


def _kernel(lengths_ref, q_ref, k_ref, v_ref, slot_ref, o_ref, lse_ref, *, p: DecodeParams):
    b, split = pl.program_id(0), pl.program_id(2)
    length = lengths_ref[b]
    bkv = p.block_kv
    q = q_ref[...]
    q_pos = length - p.window + slot_ref[...][:, None]
    per_split = -(-p.num_kv_blocks // p.kv_splits)
    lo, hi = kv_range_for_decode(length, window=p.window, block_kv=bkv,
                                 sliding_window=p.sliding_window)
    lo = jnp.maximum(lo, split * per_split)
    hi = jnp.minimum(hi, split * per_split + per_split - 1)
    ragged = p.cache_len % bkv != 0

    def load(ref, start):
        tile = ref.at[pl.ds(pl.multiple_of(start, bkv), bkv), :]
        if not ragged:
            return tile[...]
        rows = start + jnp.arange(bkv, dtype=jnp.int32)
        return plgpu.load(tile, mask=(rows < p.cache_len)[:, None], other=0.0)

    def body(j, carry):
        start = j * bkv
        s = tiles.scores(q, load(k_ref, start), scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        k_pos = start + jnp.arange(bkv, dtype=jnp.int32)[None, :]
        mask = tiles.visible(q_pos, k_pos, causal=True, sliding_window=p.sliding_window)
        return tiles.online_softmax_step(*carry, tiles.apply_mask(s, mask), load(v_ref, start))

    init = (jnp.full((q.shape[0], 1), tiles.MASK_VALUE, jnp.float32),
            jnp.zeros((q.shape[0], 1), jnp.float32), jnp.zeros(q.shape, jnp.float32))
    m, denom, acc = lax.fori_loop(lo, hi + 1, body, init)
    out, lse = tiles.finalize(m, denom, acc, empty_lse=tiles.MASK_VALUE)
    o_ref[...] = out
    lse_ref[...] = lse[:, 0]


def _merge_splits(out, lse):
    """Combine per-split normalized outputs [.., S, R, D] by their logsumexps [.., S, R]."""
    weights = jnp.exp(lse - jnp.max(lse, axis=2, keepdims=True))  # empty splits weigh 0
    total = jnp.sum(weights, axis=2)
    return jnp.sum(weights[..., None] * out, axis=2) / total[..., None]


def decode(q_rows, k_cache, v_cache, lengths, slots, p: DecodeParams):
    """q_rows [B, Hkv, R, D], caches [B, T, Hkv, D], lengths [B], slots [R] -> [B, Hkv, R, D]."""
    batch, hkv, rows, head_dim = q_rows.shape
    d = max(MIN_TILE, next_pow2(head_dim))
    if d != head_dim:  # Triton tiles are powers of two; this copies the cache (slow path)
        q_rows, k_cache, v_cache = (
            jnp.pad(x, [(0, 0)] * 3 + [(0, d - head_dim)]) for x in (q_rows, k_cache, v_cache))
    extra = p.padded_rows - rows
    q_rows = jnp.pad(q_rows, [(0, 0), (0, 0), (0, extra), (0, 0)])
    slots = jnp.pad(slots.astype(jnp.int32), (0, extra), constant_values=p.window - 1)
    t = k_cache.shape[1]
    splits = p.kv_splits
    cache_spec = pl.BlockSpec((None, t, None, d), lambda b, h, s: (b, 0, h, 0))
    out, lse = pl.pallas_call(
        functools.partial(_kernel, p=p),
        grid=(batch, hkv, splits),
        in_specs=[pl.BlockSpec((batch,), lambda b, h, s: (0,)),
                  pl.BlockSpec((None, None, p.padded_rows, d), lambda b, h, s: (b, h, 0, 0)),
                  cache_spec, cache_spec,
                  pl.BlockSpec((p.padded_rows,), lambda b, h, s: (0,))],
        out_specs=[
            pl.BlockSpec((None, None, None, p.padded_rows, d), lambda b, h, s: (b, h, s, 0, 0)),
            pl.BlockSpec((None, None, None, p.padded_rows), lambda b, h, s: (b, h, s, 0))],
        out_shape=[out_struct((batch, hkv, splits, p.padded_rows, d), jnp.float32, q_rows, k_cache),
                   out_struct((batch, hkv, splits, p.padded_rows), jnp.float32, q_rows, k_cache)],
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=p.interpret,
        name="decode_attention_gpu",
    )(lengths.astype(jnp.int32), q_rows, k_cache, v_cache, slots)
    merged = _merge_splits(out, lse) if splits > 1 else out[:, :, 0]
    return merged[:, :, :rows, :head_dim].astype(q_rows.dtype)
