"""Flash attention as a `jax.custom_vjp`: Pallas forward, explicit Pallas backward.

This module owns what both variants share: planning (block sizes, padding), padding the
sequence to a block multiple and slicing it back, and the custom_vjp wiring. The forward
saves the logsumexp; the backward recomputes probabilities from it (no S x S residual).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels import flash_gpu, flash_tpu
from pallas_kernels.params import FlashParams

_MODULES = {"tpu": flash_tpu, "gpu": flash_gpu}


def plan(q_shape, *, variant: str, interpret: bool, causal: bool, sliding_window: int | None,
         logit_soft_cap: float | None, scale: float, block_q: int, block_kv: int,
         num_groups: int, has_segments: bool) -> FlashParams:
    """Fit the requested blocks to this sequence and variant."""
    seq_len, head_dim = q_shape[1], q_shape[3]
    if variant == "tpu":
        bq, bkv, padded = flash_tpu.fit_blocks(seq_len, block_q, block_kv, strict=not interpret)
        heads_minor = flash_tpu.uses_heads_minor(head_dim)
    else:
        bq, bkv, padded = flash_gpu.fit_blocks(seq_len, block_q, block_kv)
        heads_minor = False
    return FlashParams(variant=variant, interpret=interpret, causal=causal,
                       sliding_window=sliding_window, logit_soft_cap=logit_soft_cap,
                       scale=float(scale), block_q=bq, block_kv=bkv, seq_len=seq_len,
                       padded_len=padded, num_groups=num_groups, has_segments=has_segments,
                       heads_minor=heads_minor)


def _pad_seq(x, padded_len: int):
    """Zero-pad axis 1 to `padded_len`; the kernels mask the padded keys."""
    extra = padded_len - x.shape[1]
    if extra == 0:
        return x
    return jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))


def flash_attention(q, k, v, segment_ids, p: FlashParams):
    """q [B, S, Hq, D], k/v [B, S, Hkv, D], segment_ids [B, S] or None -> [B, S, Hq, D]."""
    return _flash(q, k, v, segment_ids, p)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, segment_ids, p):
    return _flash_fwd(q, k, v, segment_ids, p)[0]


def _flash_fwd(q, k, v, segment_ids, p: FlashParams):
    padded = [_pad_seq(x, p.padded_len) for x in (q, k, v)]
    seg = None if segment_ids is None else _pad_seq(segment_ids.astype(jnp.int32), p.padded_len)
    out, residuals = _MODULES[p.variant].forward(*padded, seg, p)
    return out[:, : p.seq_len], residuals


def _flash_bwd(p: FlashParams, residuals, do):
    grads = _MODULES[p.variant].backward(residuals, _pad_seq(do, p.padded_len), p)
    dq, dk, dv = (g[:, : p.seq_len] for g in grads)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)
