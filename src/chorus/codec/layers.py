"""Shared building blocks: a masked 1-D ConvNeXt block and a sinusoidal embedding.

Masking rule (it is what makes padded batches, bucketing and streaming exact): every block
zeroes padded frames at its input and output, so a padded position looks to every
convolution exactly like the zero padding at the end of an unpadded clip.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class DepthwiseConv(nn.Module):
    """Per-channel 1-D convolution over (B, T, C), zero padding `padding` = (left, right).

    Written as a sum of shifted, per-channel-scaled copies: on XLA CPU this is >10x faster
    than a grouped convolution, gradients included.
    """

    kernel_size: int
    dilation: int
    padding: tuple[int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in",
                                                                       "truncated_normal",
                                                                       in_axis=0, out_axis=1),
                            (self.kernel_size, channels))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        length = x.shape[1]
        xp = jnp.pad(x, ((0, 0), self.padding, (0, 0)))
        out = bias
        for i in range(self.kernel_size):
            start = i * self.dilation
            out = out + xp[:, start:start + length, :] * kernel[i]
        return out


class ConvNeXtBlock(nn.Module):
    """x + scale * MLP(LN(depthwise_conv(x))), optionally FiLM-conditioned and causal."""

    dim: int
    kernel_size: int
    dilation: int = 1
    causal: bool = False
    mlp_ratio: int = 3
    layer_scale: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, film: jax.Array | None = None):
        reach = (self.kernel_size - 1) * self.dilation
        padding = ((reach, 0),) if self.causal else ((reach // 2, reach - reach // 2),)
        h = DepthwiseConv(self.kernel_size, self.dilation, padding[0], name="dwconv")(
            x * mask[..., None])
        h = nn.LayerNorm(name="norm")(h)
        if film is not None:
            # Why zero init: a fresh block starts as the identity-conditioned block.
            mod = nn.Dense(2 * self.dim, kernel_init=nn.initializers.zeros, name="film")(film)
            if mod.ndim == 2:
                mod = mod[:, None, :]
            scale, shift = jnp.split(mod, 2, axis=-1)
            h = h * (1 + scale) + shift
        h = nn.Dense(self.mlp_ratio * self.dim, name="up")(h)
        h = nn.gelu(h)
        h = nn.Dense(self.dim, name="down")(h)
        gamma = self.param("gamma", nn.initializers.constant(self.layer_scale), (self.dim,))
        return (x + gamma * h) * mask[..., None]


def sinusoidal(positions: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """(...,) -> (..., dim) sin/cos features of continuous positions (e.g. flow time * 1000)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` (B, T, ...) over valid entries of `mask` (B, T)."""
    while mask.ndim < values.ndim:
        mask = mask[..., None]
    mask = jnp.broadcast_to(mask, values.shape)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
