"""Which kv blocks a q block needs (and vice versa) under causal / sliding-window masks.

Every kernel uses these to skip blocks that are fully masked: the TPU kernels clamp their
BlockSpec index maps to the live range (no DMA) and guard compute with `pl.when`; the GPU
kernels use the range as `fori_loop` bounds. Works on Python ints and traced int32 scalars.
All ranges are inclusive [lo, hi].
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _div(a, b: int):
    # Operands are non-negative here, so truncating division == floor division.
    return lax.div(a, jnp.int32(b)) if not isinstance(a, int) else a // b


def _max(a, b):
    return max(a, b) if isinstance(a, int) and isinstance(b, int) else jnp.maximum(a, b)


def _min(a, b):
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else jnp.minimum(a, b)


def kv_range_for_q_block(i, *, block_q: int, block_kv: int, num_kv_blocks: int, causal: bool,
                         sliding_window: int | None):
    """kv blocks holding a key visible to some query of q block `i`."""
    hi = num_kv_blocks - 1
    if causal:
        hi = _min(hi, _div(i * block_q + block_q - 1, block_kv))
    lo = 0
    if sliding_window is not None:
        lo = _div(_max(i * block_q - sliding_window + 1, 0), block_kv)
    return lo, hi


def q_range_for_kv_block(j, *, block_q: int, block_kv: int, num_q_blocks: int, causal: bool,
                         sliding_window: int | None):
    """q blocks holding a query that sees some key of kv block `j`."""
    lo = _div(j * block_kv, block_q) if causal else 0
    hi = num_q_blocks - 1
    if sliding_window is not None:
        hi = _min(hi, _div(j * block_kv + block_kv - 1 + sliding_window - 1, block_q))
    return lo, hi


def kv_range_for_decode(length, *, window: int, block_kv: int, sliding_window: int | None):
    """kv blocks a decode window of `window` queries ending at row length-1 can see."""
    last = _max(length - 1, 0)
    hi = _div(last, block_kv)
    lo = 0
    if sliding_window is not None:
        lo = _div(_max(length - window - sliding_window + 1, 0), block_kv)
    return lo, _max(hi, lo)
