"""Flash attention for GPU (Pallas Triton): forward, dq and dk/dv kernels.

Triton style: the grid covers output tiles only and each program walks the other sequence
axis with a `fori_loop`, keeping its running state in registers:
  forward  grid (B, Hq, q blocks)   loop over the live kv blocks
  dq       grid (B, Hq, q blocks)   loop over the live kv blocks
  dk/dv    grid (B, Hkv, kv blocks) loop over the G query heads of the kv head x live q blocks
Loop bounds come from the causal / sliding-window band, so masked blocks cost nothing.
q/k/v keep the caller's [B, S, H, D] layout (a squeezed head dim is just a stride to
Triton). Triton tiles need power-of-two sizes >= 16, so blocks must be powers of two and
the head dim is zero-padded up to one (zeros change neither scores nor outputs).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels import tiles
from pallas_kernels.blocks import kv_range_for_q_block, q_range_for_kv_block
from pallas_kernels.params import FlashParams
from pallas_kernels.shapes import out_struct

MIN_TILE = 16  # tl.dot needs every dim >= 16


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def fit_blocks(seq_len: int, block_q: int, block_kv: int) -> tuple[int, int, int]:
    """(block_q, block_kv, padded_len): power-of-two blocks no longer than needed."""
    for name, block in (("block_q", block_q), ("block_kv", block_kv)):
        if not _is_pow2(block) or block < MIN_TILE:
            raise ValueError(f"GPU flash attention {name}: expected a power of two >= "
                             f"{MIN_TILE}, got {block}")
    short = max(MIN_TILE, next_pow2(seq_len))
    block_q, block_kv = min(block_q, short), min(block_kv, short)
    big = max(block_q, block_kv)
    return block_q, block_kv, -(-seq_len // big) * big


def padded_head_dim(head_dim: int) -> int:
    return max(MIN_TILE, next_pow2(head_dim))


def _compiler_params(head_dim: int):
    return plgpu.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)


def _pad_head_dim(x, d: int):
    extra = d - x.shape[-1]
    return x if extra == 0 else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def _tile(ref, start, size: int, *rest):
    """Rows [start, start + size) of a sequence-major ref."""
    return ref[(pl.ds(pl.multiple_of(start, size), size), *rest)]


# ----------------------------------------------------------------------------- forward


def _forward_kernel(q_ref, k_ref, v_ref, *refs, p: FlashParams):
    qs_ref = ks_ref = None
    if p.has_segments:
        qs_ref, ks_ref, *refs = refs
    o_ref, lse_ref = refs
    bq, bkv = p.block_q, p.block_kv
    i = pl.program_id(2)
    q = q_ref[...]
    q_pos = i * bq + jnp.arange(bq, dtype=jnp.int32)[:, None]
    q_seg = None if qs_ref is None else qs_ref[...][:, None]

    def body(j, carry):
        start = j * bkv
        s = tiles.scores(q, _tile(k_ref, start, bkv, slice(None)), scale=p.scale,
                         logit_soft_cap=p.logit_soft_cap)
        k_pos = start + jnp.arange(bkv, dtype=jnp.int32)[None, :]
        mask = tiles.visible(q_pos, k_pos, **p.mask_kwargs, q_seg=q_seg,
                             k_seg=None if ks_ref is None else _tile(ks_ref, start, bkv)[None, :])
        return tiles.online_softmax_step(*carry, tiles.apply_mask(s, mask),
                                         _tile(v_ref, start, bkv, slice(None)))

    lo, hi = kv_range_for_q_block(i, num_kv_blocks=p.num_kv_blocks, **p.range_kwargs)
    init = (jnp.full((bq, 1), tiles.MASK_VALUE, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
            jnp.zeros((bq, q.shape[-1]), jnp.float32))
    m, denom, acc = lax.fori_loop(lo, hi + 1, body, init)
    out, lse = tiles.finalize(m, denom, acc)
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse[:, 0]


def _q_spec(p: FlashParams, d: int):
    return pl.BlockSpec((None, p.block_q, None, d), lambda b, h, i: (b, i, h, 0))


def _full_kv_spec(p: FlashParams, d: int):
    g = p.num_groups
    return pl.BlockSpec((None, p.padded_len, None, d), lambda b, h, i: (b, 0, lax.div(h, g), 0))


def forward(q, k, v, segment_ids, p: FlashParams):
    """q [B, Sp, Hq, D], k/v [B, Sp, Hkv, D] -> (o [B, Sp, Hq, D], residuals)."""
    head_dim = q.shape[-1]
    d = padded_head_dim(head_dim)
    q, k, v = (_pad_head_dim(x, d) for x in (q, k, v))
    batch, sp, hq, _ = q.shape
    in_specs = [_q_spec(p, d), _full_kv_spec(p, d), _full_kv_spec(p, d)]
    args = [q, k, v]
    if p.has_segments:
        in_specs += [pl.BlockSpec((None, p.block_q), lambda b, h, i: (b, i)),
                     pl.BlockSpec((None, sp), lambda b, h, i: (b, 0))]
        args += [segment_ids, segment_ids]
    out, lse = pl.pallas_call(
        functools.partial(_forward_kernel, p=p),
        grid=(batch, hq, p.num_q_blocks),
        in_specs=in_specs,
        out_specs=[_q_spec(p, d), pl.BlockSpec((None, None, p.block_q), lambda b, h, i: (b, h, i))],
        out_shape=[out_struct(q.shape, q.dtype, q, k),
                   out_struct((batch, hq, sp), jnp.float32, q, k)],
        compiler_params=_compiler_params(d),
        interpret=p.interpret,
        name="flash_fwd_gpu",
    )(*args)
    residuals = (q, k, v, segment_ids, out, lse)
    return out[..., :head_dim], residuals


# ----------------------------------------------------------------------------- backward


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, *refs, p: FlashParams):
    qs_ref = ks_ref = None
    if p.has_segments:
        qs_ref, ks_ref, *refs = refs
    (dq_ref,) = refs
    bq, bkv = p.block_q, p.block_kv
    i = pl.program_id(2)
    q, do = q_ref[...], do_ref[...]
    lse, di = lse_ref[...][:, None], di_ref[...][:, None]
    q_pos = i * bq + jnp.arange(bq, dtype=jnp.int32)[:, None]
    q_seg = None if qs_ref is None else qs_ref[...][:, None]

    def body(j, dq):
        start = j * bkv
        k = _tile(k_ref, start, bkv, slice(None))
        s = tiles.scores(q, k, scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        k_pos = start + jnp.arange(bkv, dtype=jnp.int32)[None, :]
        mask = tiles.visible(q_pos, k_pos, **p.mask_kwargs, q_seg=q_seg,
                             k_seg=None if ks_ref is None else _tile(ks_ref, start, bkv)[None, :])
        prob = tiles.probs(tiles.apply_mask(s, mask), lse)
        dp = tiles.dot_nt(do, _tile(v_ref, start, bkv, slice(None)))
        ds = tiles.dscores(prob, dp, di, s, p.logit_soft_cap)
        return dq + tiles.dot_nn(ds.astype(k.dtype), k)

    lo, hi = kv_range_for_q_block(i, num_kv_blocks=p.num_kv_blocks, **p.range_kwargs)
    dq = lax.fori_loop(lo, hi + 1, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * p.scale).astype(dq_ref.dtype)


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, *refs, p: FlashParams):
    qs_ref = ks_ref = None
    if p.has_segments:
        qs_ref, ks_ref, *refs = refs
    dk_ref, dv_ref = refs
    bq, bkv = p.block_q, p.block_kv
    j = pl.program_id(2)
    k, v = k_ref[...], v_ref[...]
    k_pos = j * bkv + jnp.arange(bkv, dtype=jnp.int32)[:, None]
    k_seg = None if ks_ref is None else ks_ref[...][:, None]
    lo, hi = q_range_for_kv_block(j, num_q_blocks=p.num_q_blocks, **p.range_kwargs)

    def q_block(i, carry, g):
        dk, dv = carry
        start = i * bq
        q = _tile(q_ref, start, bq, g, slice(None))
        do = _tile(do_ref, start, bq, g, slice(None))
        s_t = tiles.scores(k, q, scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        q_pos = start + jnp.arange(bq, dtype=jnp.int32)[None, :]
        mask = tiles.visible(q_pos, k_pos, **p.mask_kwargs, k_seg=k_seg,
                             q_seg=None if qs_ref is None else _tile(qs_ref, start, bq)[None, :])
        lse = lse_ref[g, pl.ds(pl.multiple_of(start, bq), bq)][None, :]
        di = di_ref[g, pl.ds(pl.multiple_of(start, bq), bq)][None, :]
        prob_t = tiles.probs(tiles.apply_mask(s_t, mask), lse)
        dv = dv + tiles.dot_nn(prob_t.astype(do.dtype), do)
        ds_t = tiles.dscores(prob_t, tiles.dot_nt(v, do), di, s_t, p.logit_soft_cap)
        dk = dk + tiles.dot_nn(ds_t.astype(q.dtype), q)
        return dk, dv

    def head(g, carry):
        return lax.fori_loop(lo, hi + 1, functools.partial(q_block, g=g), carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, p.num_groups, head, (zeros, zeros))
    dk_ref[...] = (dk * p.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def backward(residuals, do, p: FlashParams):
    """Gradients (dq, dk, dv) in [B, Sp, H, D] from the forward residuals and dO."""
    q, k, v, segment_ids, out, lse = residuals
    head_dim = do.shape[-1]
    d = q.shape[-1]
    do = _pad_head_dim(do, d)
    batch, sp, hq, _ = q.shape
    hkv, g = k.shape[2], p.num_groups
    di = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1).transpose(0, 2, 1)
    seg_args = [segment_ids, segment_ids] if p.has_segments else []

    stat_spec = pl.BlockSpec((None, None, p.block_q), lambda b, h, i: (b, h, i))
    in_specs = [_q_spec(p, d), _full_kv_spec(p, d), _full_kv_spec(p, d), _q_spec(p, d),
                stat_spec, stat_spec]
    if p.has_segments:
        in_specs += [pl.BlockSpec((None, p.block_q), lambda b, h, i: (b, i)),
                     pl.BlockSpec((None, sp), lambda b, h, i: (b, 0))]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, p=p),
        grid=(batch, hq, p.num_q_blocks),
        in_specs=in_specs,
        out_specs=_q_spec(p, d),
        out_shape=out_struct(q.shape, q.dtype, q, k, do),
        compiler_params=_compiler_params(d),
        interpret=p.interpret,
        name="flash_dq_gpu",
    )(q, k, v, do, lse, di, *seg_args)

    kv_spec = pl.BlockSpec((None, p.block_kv, None, d), lambda b, h, j: (b, j, h, 0))
    group_spec = pl.BlockSpec((None, sp, g, d), lambda b, h, j: (b, 0, h, 0))
    group_stat_spec = pl.BlockSpec((None, g, sp), lambda b, h, j: (b, h, 0))
    in_specs = [group_spec, kv_spec, kv_spec, group_spec, group_stat_spec, group_stat_spec]
    if p.has_segments:
        in_specs += [pl.BlockSpec((None, sp), lambda b, h, j: (b, 0)),
                     pl.BlockSpec((None, p.block_kv), lambda b, h, j: (b, j))]
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, p=p),
        grid=(batch, hkv, p.num_kv_blocks),
        in_specs=in_specs,
        out_specs=[kv_spec, kv_spec],
        out_shape=[out_struct(k.shape, k.dtype, q, k, do)] * 2,
        compiler_params=_compiler_params(d),
        interpret=p.interpret,
        name="flash_dkv_gpu",
    )(q, k, v, do, lse, di, *seg_args)
    return dq[..., :head_dim], dk[..., :head_dim], dv[..., :head_dim]
