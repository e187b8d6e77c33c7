"""PPO's critic: one Dense on the backbone's final hidden states -> a scalar value per position.

It reads the policy backbone's `hidden` (shared trunk), so value gradients also shape the
backbone; its own params live under the top-level "value_head" key, trainable.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ValueHead(nn.Module):
    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        # Zero init: V = 0 at the start, so the first advantages are the raw returns.
        out = nn.Dense(1, kernel_init=nn.initializers.zeros, dtype=jnp.float32,
                       param_dtype=jnp.float32)(hidden.astype(jnp.float32))
        return out[..., 0]


def init_value_head(rng: jax.Array, d_model: int) -> dict:
    return ValueHead().init(rng, jnp.zeros((1, 1, d_model), jnp.float32))["params"]


def values(params: dict, hidden: jax.Array) -> jax.Array:
    """[B, L, d] hidden -> [B, L] fp32 values."""
    return ValueHead().apply({"params": params}, hidden)
