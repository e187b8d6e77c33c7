"""Per-row output buffers and stopping rules shared by every decoder.

A row stops at its first stop token (kept in the output) or after `max_new_tokens` tokens,
whichever comes first; later tokens are padding. Decoders commit a window of W tokens per
step, of which the first `num_new` are real.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def write_rows(buffer: jax.Array, starts: jax.Array, rows: jax.Array, live: jax.Array):
    """buffer [B, N, ...] <- rows [B, W, ...] at per-row offsets starts [B], where live [B].

    The caller sizes N so that start + W <= N (dynamic_update_slice would otherwise clamp).
    """

    def one(buf, new, start):
        return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype),
                                            (start,) + (0,) * (buf.ndim - 1))

    written = jax.vmap(one)(buffer, rows, starts)
    live = live.reshape(live.shape + (1,) * (buffer.ndim - 1))
    return jnp.where(live, written, buffer)


def stop_array(stop_tokens) -> jax.Array:
    """Stop ids as an int32 array padded with -1 (never a token) to a multiple of 4 entries,
    so the stop set is data, not a compile-time constant."""
    ids = [int(t) for t in stop_tokens]
    ids += [-1] * (-len(ids) % 4 or (4 if not ids else 0))
    return jnp.asarray(ids, jnp.int32)


def first_stop(tokens: jax.Array, valid: jax.Array, stop_tokens: jax.Array):
    """(found [B], index [B]) of the first valid stop token in tokens [B, W].

    stop_tokens [S] is an array (S may be 0), so changing the stop set does not recompile.
    """
    is_stop = (tokens[..., None] == stop_tokens.astype(tokens.dtype)).any(-1) & valid
    return is_stop.any(axis=1), jnp.argmax(is_stop, axis=1).astype(jnp.int32)


def commit(num_out, tokens, num_new, live, stop_tokens: jax.Array, max_new_tokens: int):
    """Stopping after a step that produced tokens [B, W] (the first num_new [B] real) at
    output offsets num_out [B].

    Returns (new num_out, length, done): length is the row's output length so far (up to and
    including a stop token, at most max_new_tokens); done marks rows that stop in this step.
    """
    slots = jnp.arange(tokens.shape[1])[None, :]
    valid = (slots < num_new[:, None]) & (num_out[:, None] + slots < max_new_tokens)
    found, index = first_stop(tokens, valid, stop_tokens)
    new_num_out = num_out + num_new
    length = jnp.where(found, num_out + index + 1, jnp.minimum(new_num_out, max_new_tokens))
    done = live & (found | (new_num_out >= max_new_tokens))
    return new_num_out, length, done


def pad_after(tokens: jax.Array, lengths: jax.Array, pad_id: int) -> jax.Array:
    keep = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    return jnp.where(keep, tokens, pad_id)
