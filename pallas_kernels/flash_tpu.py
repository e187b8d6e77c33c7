"""Flash attention for TPU (Mosaic): forward, dq and dk/dv kernels.

Grid layout (innermost axis is sequential, "arbitrary"; the rest "parallel"):
  forward  (B, Hq, q blocks, kv blocks)      running max / sum / output in VMEM scratch
  dq       (B, Hq, q blocks, kv blocks)      dq accumulated in VMEM scratch
  dk/dv    (B, Hkv, kv blocks, G * q blocks) the G query heads of a kv head are summed in
                                             the kernel, so repeated kv heads never exist.
Blocks outside the causal / sliding-window band are skipped twice over: the index maps clamp
to the live range (an unchanged block index means no new DMA) and `pl.when` skips the math.

Layouts. q/k/v arrive as [B, S, H, D] (already padded to a block multiple). When D is a
multiple of 128 they are viewed as [B, S, H*D] and a (block, D) tile is column block `h`:
no transposes at all. Otherwise they are transposed to [B, H, S, D] (Mosaic needs the last
two block dims to be (8, 128)-aligned or full). Per-row statistics (logsumexp, rowsum(dO*O))
are stored as rows [B, H, 1, S]: lane-dense in HBM (a [.., S, 1] column would be padded to
128 lanes, i.e. a residual twice the size of q). The dk/dv kernel works on the transposed
tile S^T = K Q^T, where rows broadcast directly and every matmul is NN or NT; the forward
and dq kernels turn the row into a column once per q block (an XLU transpose).
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels import tiles
from pallas_kernels.blocks import kv_range_for_q_block, q_range_for_kv_block
from pallas_kernels.params import FlashParams
from pallas_kernels.shapes import out_struct

SUBLANES = 8
LANES = 128


# ----------------------------------------------------------------------------- planning


def fit_blocks(seq_len: int, block_q: int, block_kv: int, *, strict: bool) -> tuple[int, int, int]:
    """(block_q, block_kv, padded_len) for this sequence.

    A sequence that fits in one block gets a single full-length block (any multiple of 8).
    Otherwise blocks must be multiples of 8, and of 128 when compiling for a real TPU
    (`strict`): the kv block is the lane dim of the score tile, the q block the lane dim of
    the transposed tile in the dk/dv kernel.
    """
    short = -(-seq_len // SUBLANES) * SUBLANES
    if short <= max(block_q, block_kv):
        return short, short, short
    align = LANES if strict else SUBLANES
    for name, block in (("block_q", block_q), ("block_kv", block_kv)):
        if block % align:
            raise ValueError(f"TPU flash attention {name}: expected a multiple of {align} "
                             f"for seq_len={seq_len}, got {block}")
    lcm = math.lcm(block_q, block_kv)
    return block_q, block_kv, -(-seq_len // lcm) * lcm


def uses_heads_minor(head_dim: int) -> bool:
    return head_dim % LANES == 0


# ----------------------------------------------------------------------------- layouts


def _to_kernel(x, p: FlashParams):
    b, s, h, d = x.shape
    return x.reshape(b, s, h * d) if p.heads_minor else x.transpose(0, 2, 1, 3)


def _from_kernel(x, heads: int, p: FlashParams):
    if p.heads_minor:
        b, s, hd = x.shape
        return x.reshape(b, s, heads, hd // heads)
    return x.transpose(0, 2, 1, 3)


def _seq_spec(p: FlashParams, rows: int, head_dim: int, index):
    """BlockSpec of a (rows, D) tile; `index(*grid) -> (batch, head, row_block)`."""
    if p.heads_minor:
        def heads_minor_map(*g):
            b, h, r = index(*g)
            return b, r, h
        return pl.BlockSpec((None, rows, head_dim), heads_minor_map)

    def heads_major_map(*g):
        b, h, r = index(*g)
        return b, h, r, 0
    return pl.BlockSpec((None, None, rows, head_dim), heads_major_map)


def _row_spec(rows: int, index):
    """Per-row statistic as a row [B, H, 1, S]."""
    def row_map(*g):
        b, h, r = index(*g)
        return b, h, 0, r
    return pl.BlockSpec((None, None, 1, rows), row_map)


def _seg_col_spec(rows: int, index):
    def seg_col_map(*g):
        b, r = index(*g)
        return b, r, 0
    return pl.BlockSpec((None, rows, 1), seg_col_map)


def _seg_row_spec(rows: int, index):
    def seg_row_map(*g):
        b, r = index(*g)
        return b, 0, r
    return pl.BlockSpec((None, 1, rows), seg_row_map)


def _row_to_col(row):
    """(1, n) -> (n, 1) through a lane-broadcast transpose (Mosaic has no direct reshape)."""
    n = row.shape[1]
    return jnp.transpose(jnp.broadcast_to(row, (LANES, n)))[:, :1]


def _col_to_row(col):
    n = col.shape[0]
    return jnp.transpose(jnp.broadcast_to(col, (n, LANES)))[:1, :]


def _positions(shape, q_start, k_start, q_axis: int):
    """Absolute positions of a score tile; queries run along `q_axis`."""
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, shape, q_axis)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, shape, 1 - q_axis)
    return q_pos, k_pos


def _compiler_params(inner: str = "arbitrary"):
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", inner))


# ----------------------------------------------------------------------------- forward


def _forward_kernel(*refs, p: FlashParams):
    q_ref, k_ref, v_ref, *refs = refs
    qs_ref = ks_ref = None
    if p.has_segments:
        qs_ref, ks_ref, *refs = refs
    o_ref, lse_ref, m_sc, l_sc, acc_sc = refs
    i, j = pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, tiles.MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    lo, hi = kv_range_for_q_block(i, num_kv_blocks=p.num_kv_blocks, **p.range_kwargs)

    @pl.when((j >= lo) & (j <= hi))
    def _step():
        s = tiles.scores(q_ref[...], k_ref[...], scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        q_pos, k_pos = _positions(s.shape, i * p.block_q, j * p.block_kv, q_axis=0)
        mask = tiles.visible(q_pos, k_pos, **p.mask_kwargs,
                             q_seg=None if qs_ref is None else qs_ref[...],
                             k_seg=None if ks_ref is None else ks_ref[...])
        m, denom, acc = tiles.online_softmax_step(m_sc[...], l_sc[...], acc_sc[...],
                                                  tiles.apply_mask(s, mask), v_ref[...])
        m_sc[...] = m
        l_sc[...] = denom
        acc_sc[...] = acc

    @pl.when(j == p.num_kv_blocks - 1)
    def _finish():
        out, lse = tiles.finalize(m_sc[...], l_sc[...], acc_sc[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = _col_to_row(lse)


def _clamped_kv(p: FlashParams, i, j):
    lo, hi = kv_range_for_q_block(i, num_kv_blocks=p.num_kv_blocks, **p.range_kwargs)
    return jnp.minimum(jnp.maximum(j, lo), hi)


def _kv_index(p: FlashParams, b, h, i, j):
    """kv tile of (query head h, q block i) at step j: its group's kv head, clamped block."""
    return b, lax.div(h, p.num_groups), _clamped_kv(p, i, j)


def _clamped_q(p: FlashParams, j, i):
    lo, hi = q_range_for_kv_block(j, num_q_blocks=p.num_q_blocks, **p.range_kwargs)
    return jnp.minimum(jnp.maximum(i, lo), hi)


def _segments(segment_ids):
    """Column [B, S, 1] and row [B, 1, S] views of the segment ids (free reshapes)."""
    b, s = segment_ids.shape
    return segment_ids.reshape(b, s, 1), segment_ids.reshape(b, 1, s)


def forward(q, k, v, segment_ids, p: FlashParams):
    """q [B, Sp, Hq, D], k/v [B, Sp, Hkv, D] -> (o [B, Sp, Hq, D], residuals)."""
    batch, _, hq, d = q.shape
    qk, kk, vk = _to_kernel(q, p), _to_kernel(k, p), _to_kernel(v, p)
    grid = (batch, hq, p.num_q_blocks, p.num_kv_blocks)

    q_spec = _seq_spec(p, p.block_q, d, lambda b, h, i, j: (b, h, i))
    kv_spec = _seq_spec(p, p.block_kv, d, functools.partial(_kv_index, p))
    in_specs = [q_spec, kv_spec, kv_spec]
    args = [qk, kk, vk]
    if p.has_segments:
        seg_col, seg_row = _segments(segment_ids)
        in_specs += [_seg_col_spec(p.block_q, lambda b, h, i, j: (b, i)),
                     _seg_row_spec(p.block_kv, lambda b, h, i, j: (b, _clamped_kv(p, i, j)))]
        args += [seg_col, seg_row]
    lse_shape = out_struct((batch, hq, 1, p.padded_len), jnp.float32, q, k)
    out, lse = pl.pallas_call(
        functools.partial(_forward_kernel, p=p),
        grid=grid,
        in_specs=in_specs,
        out_specs=[q_spec, _row_spec(p.block_q, lambda b, h, i, j: (b, h, i))],
        out_shape=[out_struct(qk.shape, q.dtype, q, k), lse_shape],
        scratch_shapes=[pltpu.VMEM((p.block_q, 1), jnp.float32),
                        pltpu.VMEM((p.block_q, 1), jnp.float32),
                        pltpu.VMEM((p.block_q, d), jnp.float32)],
        compiler_params=_compiler_params(),
        cost_estimate=_attention_cost(q.shape, q.dtype, p, passes=2),
        interpret=p.interpret,
        name="flash_fwd_tpu",
    )(*args)
    residuals = (qk, kk, vk, segment_ids, out, lse)
    return _from_kernel(out, hq, p), residuals


def _attention_cost(q_shape, dtype, p: FlashParams, passes: int):
    """Rough cost for XLA's scheduler: `passes` matmuls over the (causal) score area."""
    batch, s, hq, d = q_shape
    area = batch * hq * s * s * (0.5 if p.causal else 1.0)
    return pl.CostEstimate(flops=int(passes * 2 * area * d), transcendentals=int(area),
                           bytes_accessed=int(4 * batch * s * hq * d * jnp.dtype(dtype).itemsize))


# ----------------------------------------------------------------------------- backward


def _dq_kernel(*refs, p: FlashParams):
    q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, *refs = refs
    qs_ref = ks_ref = None
    if p.has_segments:
        qs_ref, ks_ref, *refs = refs
    dq_ref, dq_sc, lse_sc, di_sc = refs
    i, j = pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)
        lse_sc[...] = _row_to_col(lse_ref[...])
        di_sc[...] = _row_to_col(di_ref[...])

    lo, hi = kv_range_for_q_block(i, num_kv_blocks=p.num_kv_blocks, **p.range_kwargs)

    @pl.when((j >= lo) & (j <= hi))
    def _step():
        k = k_ref[...]
        s = tiles.scores(q_ref[...], k, scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        q_pos, k_pos = _positions(s.shape, i * p.block_q, j * p.block_kv, q_axis=0)
        mask = tiles.visible(q_pos, k_pos, **p.mask_kwargs,
                             q_seg=None if qs_ref is None else qs_ref[...],
                             k_seg=None if ks_ref is None else ks_ref[...])
        prob = tiles.probs(tiles.apply_mask(s, mask), lse_sc[...])
        dp = tiles.dot_nt(do_ref[...], v_ref[...])
        ds = tiles.dscores(prob, dp, di_sc[...], s, p.logit_soft_cap)
        dq_sc[...] += tiles.dot_nn(ds.astype(k.dtype), k)

    @pl.when(j == p.num_kv_blocks - 1)
    def _finish():
        dq_ref[...] = (dq_sc[...] * p.scale).astype(dq_ref.dtype)


def _dkv_kernel(*refs, p: FlashParams):
    q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, *refs = refs
    qs_ref = ks_ref = None
    if p.has_segments:
        qs_ref, ks_ref, *refs = refs
    dk_ref, dv_ref, dk_sc, dv_sc = refs
    j, t = pl.program_id(2), pl.program_id(3)
    i = lax.rem(t, p.num_q_blocks)

    @pl.when(t == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    lo, hi = q_range_for_kv_block(j, num_q_blocks=p.num_q_blocks, **p.range_kwargs)

    @pl.when((i >= lo) & (i <= hi))
    def _step():
        q, do = q_ref[...], do_ref[...]
        s_t = tiles.scores(k_ref[...], q, scale=p.scale, logit_soft_cap=p.logit_soft_cap)
        q_pos, k_pos = _positions(s_t.shape, i * p.block_q, j * p.block_kv, q_axis=1)
        mask = tiles.visible(q_pos, k_pos, **p.mask_kwargs,
                             q_seg=None if qs_ref is None else qs_ref[...],
                             k_seg=None if ks_ref is None else ks_ref[...])
        prob_t = tiles.probs(tiles.apply_mask(s_t, mask), lse_ref[...])
        dv_sc[...] += tiles.dot_nn(prob_t.astype(do.dtype), do)
        dp_t = tiles.dot_nt(v_ref[...], do)
        ds_t = tiles.dscores(prob_t, dp_t, di_ref[...], s_t, p.logit_soft_cap)
        dk_sc[...] += tiles.dot_nn(ds_t.astype(q.dtype), q)

    @pl.when(t == p.num_groups * p.num_q_blocks - 1)
    def _finish():
        dk_ref[...] = (dk_sc[...] * p.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _row_stat(o, do, p: FlashParams, heads: int):
    """di = rowsum(dO * O) as a row [B, H, 1, S] in fp32."""
    prod = o.astype(jnp.float32) * do.astype(jnp.float32)
    if p.heads_minor:
        b, s, hd = prod.shape
        di = prod.reshape(b, s, heads, hd // heads).sum(-1).transpose(0, 2, 1)
    else:
        di = prod.sum(-1)
    return di[:, :, None, :]


def backward(residuals, do, p: FlashParams):
    """Gradients (dq, dk, dv) in [B, Sp, H, D] from the forward residuals and dO."""
    qk, kk, vk, segment_ids, out, lse = residuals
    batch, hq, sp = lse.shape[0], lse.shape[1], lse.shape[3]
    g = p.num_groups
    hkv = hq // g
    d = qk.shape[-1] // hq if p.heads_minor else qk.shape[-1]
    dok = _to_kernel(do, p)
    di = _row_stat(out, dok, p, hq)
    seg_col, seg_row = _segments(segment_ids) if p.has_segments else (None, None)
    q_shape = (batch, sp, hq, d)

    # dq: same grid and skipping as the forward.
    q_spec = _seq_spec(p, p.block_q, d, lambda b, h, i, j: (b, h, i))
    kv_spec = _seq_spec(p, p.block_kv, d, functools.partial(_kv_index, p))
    stat_spec = _row_spec(p.block_q, lambda b, h, i, j: (b, h, i))
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, stat_spec, stat_spec]
    args = [qk, kk, vk, dok, lse, di]
    if p.has_segments:
        in_specs += [_seg_col_spec(p.block_q, lambda b, h, i, j: (b, i)),
                     _seg_row_spec(p.block_kv, lambda b, h, i, j: (b, _clamped_kv(p, i, j)))]
        args += [seg_col, seg_row]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, p=p),
        grid=(batch, hq, p.num_q_blocks, p.num_kv_blocks),
        in_specs=in_specs,
        out_specs=q_spec,
        out_shape=out_struct(qk.shape, qk.dtype, qk, kk, dok),
        scratch_shapes=[pltpu.VMEM((p.block_q, d), jnp.float32),
                        pltpu.VMEM((p.block_q, 1), jnp.float32),
                        pltpu.VMEM((p.block_q, 1), jnp.float32)],
        compiler_params=_compiler_params(),
        cost_estimate=_attention_cost(q_shape, qk.dtype, p, passes=3),
        interpret=p.interpret,
        name="flash_dq_tpu",
    )(*args)

    # dk/dv: the inner axis walks (query head in group, q block); q blocks outside the band
    # are clamped so their DMA is skipped.
    nq = p.num_q_blocks

    def q_index(b, h, j, t):
        return b, h * g + lax.div(t, nq), _clamped_q(p, j, lax.rem(t, nq))

    q_spec_t = _seq_spec(p, p.block_q, d, q_index)
    kv_spec_t = _seq_spec(p, p.block_kv, d, lambda b, h, j, t: (b, h, j))
    row_spec_t = _row_spec(p.block_q, q_index)
    in_specs = [q_spec_t, kv_spec_t, kv_spec_t, q_spec_t, row_spec_t, row_spec_t]
    args = [qk, kk, vk, dok, lse, di]
    if p.has_segments:
        in_specs += [_seg_row_spec(p.block_q, lambda b, h, j, t: (b, q_index(b, h, j, t)[2])),
                     _seg_col_spec(p.block_kv, lambda b, h, j, t: (b, j))]
        args += [seg_row, seg_col]
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, p=p),
        grid=(batch, hkv, p.num_kv_blocks, g * nq),
        in_specs=in_specs,
        out_specs=[kv_spec_t, kv_spec_t],
        out_shape=[out_struct(kk.shape, kk.dtype, qk, kk, dok)] * 2,
        scratch_shapes=[pltpu.VMEM((p.block_kv, d), jnp.float32)] * 2,
        compiler_params=_compiler_params(),
        cost_estimate=_attention_cost(q_shape, qk.dtype, p, passes=4),
        interpret=p.interpret,
        name="flash_dkv_tpu",
    )(*args)
    return _from_kernel(dq, hq, p), _from_kernel(dk, hkv, p), _from_kernel(dv, hkv, p)
