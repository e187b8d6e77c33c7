"""SpecAugment of log-mel features in JAX (frequency and time masks inside each clip).

    feats = spec_augment(rng, feats, mask)      # masks inside each clip's valid frames
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from chorus.config import check


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    num_freq_masks: int = 2
    max_freq_width: int = 27  # mel bins
    num_time_masks: int = 2
    max_time_fraction: float = 0.05  # of each clip's valid frames, per mask

    def __post_init__(self):
        for name in ("num_freq_masks", "max_freq_width", "num_time_masks"):
            check(getattr(self, name) >= 0, f"spec_augment.{name}", "a number >= 0",
                  getattr(self, name))
        check(0 <= self.max_time_fraction <= 1, "spec_augment.max_time_fraction",
              "a fraction in [0, 1]", self.max_time_fraction)


def _band_masks(rng, count: int, max_width: jax.Array, size: int, limit: jax.Array,
                batch_shape) -> jax.Array:
    """(*batch, size) bool: union of `count` bands [start, start + width) inside [0, limit)."""
    positions = jnp.arange(size)
    out = jnp.zeros((*batch_shape, size), bool)
    for key in jax.random.split(rng, count):
        k_width, k_start = jax.random.split(key)
        u_width = jax.random.uniform(k_width, batch_shape)
        u_start = jax.random.uniform(k_start, batch_shape)
        width = jnp.floor(u_width * (max_width + 1)).astype(jnp.int32)
        start = jnp.floor(u_start * (jnp.maximum(limit - width, 0) + 1)).astype(jnp.int32)
        out |= (positions >= start[..., None]) & (positions < (start + width)[..., None])
    return out


def spec_augment(rng: jax.Array, features: jax.Array, mask: jax.Array,
                 config: SpecAugmentConfig = SpecAugmentConfig()) -> jax.Array:
    """Frequency and time masking of (..., T, F) features with (..., T) valid-frame mask.

    Masked cells take the clip's mean over its valid frames (neutral for un-normalized
    log-mel); time masks stay inside the valid prefix; padding frames are left untouched.
    """
    *batch, num_t, num_f = features.shape
    batch = tuple(batch)
    valid = jnp.sum(mask, axis=-1)
    k_freq, k_time = jax.random.split(rng)
    freq = _band_masks(k_freq, config.num_freq_masks, jnp.asarray(config.max_freq_width),
                       num_f, jnp.full(batch, num_f), batch)
    max_t = jnp.floor(config.max_time_fraction * valid).astype(jnp.int32)
    time = _band_masks(k_time, config.num_time_masks, max_t, num_t, valid, batch)
    weights = mask[..., None].astype(features.dtype)
    mean = jnp.sum(features * weights, axis=(-2, -1), keepdims=True) / jnp.maximum(
        jnp.sum(weights, axis=(-2, -1), keepdims=True) * num_f, 1.0)
    cut = (freq[..., None, :] | time[..., :, None]) & mask[..., None]
    return jnp.where(cut, mean, features)
