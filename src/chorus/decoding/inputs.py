"""What every decoder does first: checks a request (prompts, lengths, cache capacity), sets
its defaults (stop tokens, constraints), runs the prompt's forward and gathers prompt ends."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from chorus.decoding import stopping
from chorus.decoding.constraints import Constraints
from chorus.model.unified import UnifiedAudioLM, init_cache
from chorus.vocab import VocabLayout


def required_capacity(prompt_width: int, max_new_tokens: int, num_draft: int) -> int:
    """Cache rows a decoder touches: its last window [b, d_1..d_k] starts at most at
    prompt_width + max_new_tokens - 2 (the base of output token max_new - 1)."""
    return prompt_width + max_new_tokens - 1 + num_draft


def check_request(prompts, lengths, capacity: int | None, max_new_tokens: int,
                  num_draft: int, cache=None) -> int:
    """Validates shapes (and lengths, when concrete); returns the cache capacity to use.

    With a `cache` to continue (the prompts are appended at its lengths), its capacity is the
    one to use and must hold its longest row + what the decoder touches after it.
    """
    if prompts.ndim != 2:
        raise ValueError(f"prompts: expected [B, P] token ids, got shape {prompts.shape}")
    if lengths.shape != prompts.shape[:1]:
        raise ValueError(f"prompt_lengths: expected shape {prompts.shape[:1]}, got "
                         f"{lengths.shape}")
    if not isinstance(lengths, jax.core.Tracer):
        host = np.asarray(lengths)
        if host.min() < 1 or host.max() > prompts.shape[1]:
            raise ValueError(f"prompt_lengths: expected values in [1, {prompts.shape[1]}], got "
                             f"range [{host.min()}, {host.max()}]")
    needed = required_capacity(prompts.shape[1], max_new_tokens, num_draft)
    what = (f"prompt width {prompts.shape[1]} + max_new_tokens {max_new_tokens} - 1 + "
            f"{num_draft} draft tokens")
    if cache is not None:
        if capacity is not None:
            raise ValueError(f"capacity: expected None when a cache is given (its capacity "
                             f"{cache.capacity} is the one used), got {capacity}")
        if cache.lengths.shape != prompts.shape[:1]:
            raise ValueError(f"cache: expected {prompts.shape[0]} rows (one per prompt), got "
                             f"lengths of shape {cache.lengths.shape}")
        capacity = cache.capacity
        if isinstance(cache.lengths, jax.core.Tracer):
            return capacity
        used = int(np.max(np.asarray(cache.lengths)))
        needed, what = needed + used, f"cache length {used} + {what}"
    if capacity is None:
        return needed
    if capacity < needed:
        raise ValueError(f"cache capacity: expected >= {needed} ({what}), got {capacity}")
    return capacity


def at_last(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x [B, P, ...] at each row's last prompt position lengths - 1 -> [B, ...]."""
    idx = (lengths - 1).reshape(-1, *([1] * (x.ndim - 1)))
    return jnp.take_along_axis(x, idx, axis=1)[:, 0]


def prepare_request(model, settings, prompts, lengths, *, num_draft: int, capacity, cache,
                    stop_tokens, allowed_ids):
    """`check_request`, then the defaults: (capacity, stop-token array (eos by default),
    Constraints of settings + allowed_ids)."""
    capacity = check_request(prompts, lengths, capacity, settings.max_new_tokens, num_draft,
                             cache)
    layout = VocabLayout.from_model_config(model.config.model)
    if stop_tokens is None:
        stop_tokens = (layout.eos_id,)
    constraints = Constraints.make(settings, allowed_ids, prompts.shape[0], layout.size)
    return capacity, stopping.stop_array(stop_tokens), constraints


def prompt_forward(model, params, prompts, lengths, cache, audio_features, audio_mask,
                   capacity):
    """The prompt's forward: a prefill into a fresh cache, or (cache given) an extend of it.
    Returns (logits, hidden, cache)."""
    if cache is None:
        return model.apply({"params": params}, prompts, lengths,
                           init_cache(model.config, prompts.shape[0], capacity),
                           audio_features, audio_mask, method=UnifiedAudioLM.prefill)
    return model.apply({"params": params}, prompts, lengths, cache, audio_features, audio_mask,
                       method=UnifiedAudioLM.extend)
