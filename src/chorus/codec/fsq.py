"""Finite scalar quantization (Mentzer et al., 2023) with a straight-through estimator.

Each of the d = len(levels) channels is squashed into a bounded range and rounded to one of
`levels[i]` integers; the code index is the mixed-radix number formed by the digits. The
codebook is implicit (no codebook loss, no collapse), and its size is prod(levels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _half_width(levels: tuple[int, ...]) -> np.ndarray:
    return (np.asarray(levels, np.float32) - 1) * (1 + 1e-3) / 2


def _offset(levels: tuple[int, ...]) -> np.ndarray:
    # Even level counts need a half-step shift to land on integers symmetric-ish around 0.
    return np.where(np.asarray(levels) % 2 == 0, 0.5, 0.0).astype(np.float32)


def bound(z: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """Squashes (..., d) to the open intervals whose roundings give `levels[i]` integers."""
    half, offset = _half_width(levels), _offset(levels)
    shift = np.arctanh(offset / half)
    return jnp.tanh(z + shift) * half - offset


def quantize(z: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """(..., d) -> normalized codes in [-1, 1]; gradients pass straight through the rounding."""
    bounded = bound(z, levels)
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
    return rounded / np.asarray([lv // 2 for lv in levels], np.float32)


def _basis(levels: tuple[int, ...]) -> np.ndarray:
    return np.cumprod([1, *levels[:-1]]).astype(np.int32)


def codes_to_indices(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """Normalized codes (..., d) -> int32 indices (...) in [0, prod(levels))."""
    scale = np.asarray([lv // 2 for lv in levels], np.float32)
    digits = jnp.round(codes * scale).astype(jnp.int32) + (scale.astype(np.int32))
    return jnp.sum(digits * _basis(levels), axis=-1).astype(jnp.int32)


def indices_to_codes(indices: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """int indices (...) -> normalized codes (..., d): the implicit codebook lookup."""
    lv = np.asarray(levels, np.int32)
    digits = (jnp.asarray(indices, jnp.int32)[..., None] // _basis(levels)) % lv
    scale = (lv // 2).astype(np.float32)
    return (digits.astype(jnp.float32) - scale) / scale
