"""Decoding constraints every decoder applies alike: a windowed repetition penalty and an
allowed-id mask, on the model's logits before temperature / top-k / top-p (`filtering`).

For output position t (0 = the first generated token) with logits l:

  1. repetition penalty theta over a window of W tokens (CTRL, Keskar et al. 2019, as in
     HF transformers' and vLLM's `repetition_penalty`, restricted to a window): R_t is the
     set of ids among the generated tokens y_{t-W} .. y_{t-1} (the prompt is not counted);
     for v in R_t, l_v <- l_v / theta if l_v > 0 else l_v * theta. Each id counts once,
     however often it occurs. theta = 1 or W = 0 is off.
  2. allowed ids: l_v <- -inf for every v outside the mask (None: all allowed).

The result is a deterministic function of the logits and the tokens before t, so greedy,
verified greedy (drafts are judged position by position with the drafts before them as
history) and speculative sampling (the target and draft distributions are the constrained
ones) all decode the same constrained model. Stop tokens are not implicitly allowed: put
them in the mask (e.g. `<tts_end>` beside the audio codes).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import DecodeConfig


def check_allowed(allowed_ids, batch_size: int, vocab_size: int) -> jax.Array | None:
    """None, or a bool mask [V] / [B, V] -> [B, V] (bool). Checks the shape and, when the
    values are concrete, that every row allows at least one id."""
    if allowed_ids is None:
        return None
    shape = tuple(allowed_ids.shape)
    if shape not in ((vocab_size,), (batch_size, vocab_size)):
        raise ValueError(f"allowed_ids: expected a bool mask of shape ({vocab_size},) or "
                         f"({batch_size}, {vocab_size}) (V = the model's vocabulary), got "
                         f"{shape}")
    if jnp.dtype(allowed_ids.dtype) != jnp.dtype(bool):
        raise ValueError(f"allowed_ids: expected dtype bool, got {allowed_ids.dtype}")
    if not isinstance(allowed_ids, jax.core.Tracer):
        empty = np.flatnonzero(~np.asarray(allowed_ids).reshape(-1, vocab_size).any(axis=1))
        if empty.size:
            raise ValueError(f"allowed_ids: expected at least one allowed id per row, got none "
                             f"in row(s) {empty.tolist()}")
    return jnp.broadcast_to(jnp.asarray(allowed_ids), (batch_size, vocab_size))


def recent_ids(history: jax.Array, positions: jax.Array, window: int):
    """The window before each position: history [B, N] (output position i holds y_i),
    positions [B, S] -> (ids [B, S, window], valid [B, S, window]) for y_{p-window} ..
    y_{p-1}; slots before position 0 are invalid."""
    idx = positions[..., None] - window + jnp.arange(window)
    valid = idx >= 0
    ids = jnp.take_along_axis(history[:, None, :], jnp.maximum(idx, 0), axis=2)
    return ids, valid


def repetition_penalty(logits: jax.Array, ids: jax.Array, valid: jax.Array,
                       penalty: float) -> jax.Array:
    """CTRL penalty on logits [B, S, V] of the ids [B, S, W] marked valid: positive logits
    divided by `penalty`, the others multiplied (each id once)."""
    b, s, v = logits.shape
    rows = jnp.arange(b)[:, None, None]
    slots = jnp.arange(s)[None, :, None]
    seen = jnp.zeros(logits.shape, bool).at[rows, slots, jnp.where(valid, ids, v)].set(
        True, mode="drop")
    return jnp.where(seen, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)


@flax.struct.dataclass
class Constraints:
    """The constraints of one decoding call (a pytree: the mask is data, the penalty static).

    `Constraints(logits, history, positions)` -> constrained fp32 logits, for logits
    [B, S, V] at output positions [B, S] with history [B, N] the output buffer (only the
    entries before each position are read).
    """

    allowed: jax.Array | None  # [B, V] bool
    penalty: float = flax.struct.field(pytree_node=False, default=1.0)
    window: int = flax.struct.field(pytree_node=False, default=0)

    @classmethod
    def make(cls, settings: DecodeConfig, allowed_ids, batch_size: int,
             vocab_size: int) -> Constraints:
        return cls(check_allowed(allowed_ids, batch_size, vocab_size),
                   settings.repetition_penalty, settings.repetition_window)

    def repeat(self, times: int) -> Constraints:
        """The constraints of each row repeated `times` (samples of one prompt)."""
        allowed = None if self.allowed is None else jnp.repeat(self.allowed, times, axis=0)
        return self.replace(allowed=allowed)

    def __call__(self, logits: jax.Array, history: jax.Array, positions: jax.Array):
        logits = logits.astype(jnp.float32)
        if self.window > 0 and self.penalty != 1.0:
            ids, valid = recent_ids(history, positions, self.window)
            logits = repetition_penalty(logits, ids, valid, self.penalty)
        if self.allowed is not None:
            logits = jnp.where(self.allowed[:, None, :], logits, -jnp.inf)
        return logits
