"""Batched sampling from the policy for RL rollouts (KV cache, static shapes, jit).

Each prompt is prefilled once (with its audio, if any); its cache is then repeated G times,
so the G samples of prompt i are rows i*G .. i*G+G-1 (the contiguous groups GRPO expects).
Every sampled token comes with two log-probs: under the distribution actually sampled from
(allowed ids, repetition penalty, temperature, top-k, top-p) and under the unmodified policy
(temperature-1 logits, no constraint, no filtering) - the one the RL losses' importance
ratios need, which a teacher-forced scoring forward reproduces as is. Randomness is per row and per
step (fold_in), so a given rng always yields the same rollout.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from chorus.config import DecodeConfig
from chorus.decoding import stopping
from chorus.decoding.filtering import sampling_logits, token_logprob
from chorus.decoding.inputs import at_last, prepare_request, prompt_forward
from chorus.model.unified import UnifiedAudioLM
from chorus.vocab import VocabLayout


@flax.struct.dataclass
class Rollout:
    tokens: jax.Array  # [B*G, N] int32 completions, pad id after each row's length
    logprobs: jax.Array  # [B*G, N] fp32 log-prob under the sampling distribution (0 if masked)
    policy_logprobs: jax.Array  # [B*G, N] fp32 log-prob under the temperature-1 policy
    mask: jax.Array  # [B*G, N] fp32: 1 on generated tokens, a stop token included
    lengths: jax.Array  # [B*G]
    prompt_index: jax.Array  # [B*G] the prompt each row continues


def _sample(row_keys, step, logits, settings: DecodeConfig):
    """(tokens [R], log-prob under the sampling distribution [R]) for constrained logits
    [R, V]."""
    if settings.temperature == 0:  # greedy: a point mass, log-prob 0
        return jnp.argmax(logits, -1).astype(jnp.int32), jnp.zeros(logits.shape[:1])
    processed = sampling_logits(logits, settings.temperature, settings.top_k, settings.top_p)
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
    tokens = jax.vmap(jax.random.categorical)(keys, processed).astype(jnp.int32)
    return tokens, token_logprob(processed, tokens)


@flax.struct.dataclass
class _State:
    step: jax.Array
    cache: object
    logits: jax.Array  # [R, V] next-token logits
    tokens: jax.Array
    logprobs: jax.Array
    policy_logprobs: jax.Array
    num_out: jax.Array
    length: jax.Array
    done: jax.Array


def _generate(model, params, prompts, lengths, rng, stop_tokens, constraints, audio_features,
              audio_mask, cache, *, settings: DecodeConfig, num_samples: int, capacity: int):
    b = prompts.shape[0]
    rows, max_new = b * num_samples, settings.max_new_tokens
    logits, _, cache = prompt_forward(model, params, prompts, lengths, cache, audio_features,
                                      audio_mask, capacity)
    constraints = constraints.repeat(num_samples)
    repeat = lambda x: jnp.repeat(x, num_samples, axis=0)
    cache = cache.replace(k=jnp.repeat(cache.k, num_samples, axis=1),
                          v=jnp.repeat(cache.v, num_samples, axis=1),
                          lengths=repeat(cache.lengths))
    row_keys = jax.random.split(rng, rows)
    zeros = jnp.zeros((rows, max_new), jnp.float32)
    state = _State(step=jnp.zeros((), jnp.int32), cache=cache,
                   logits=repeat(at_last(logits, lengths)),
                   tokens=jnp.zeros((rows, max_new), jnp.int32), logprobs=zeros,
                   policy_logprobs=zeros, num_out=jnp.zeros((rows,), jnp.int32),
                   length=jnp.zeros((rows,), jnp.int32), done=jnp.zeros((rows,), bool))
    ones = jnp.ones((rows,), jnp.int32)

    def emit(s: _State) -> _State:
        """Samples from s.logits and records the token; stops rows."""
        live = ~s.done
        # Output position num_out; the tokens before it are the penalty's history.
        constrained = constraints(s.logits[:, None], s.tokens, s.num_out[:, None])[:, 0]
        token, logprob = _sample(row_keys, s.step, constrained, settings)
        policy = token_logprob(s.logits, token)  # the unconstrained temperature-1 policy
        write = lambda buf, x: stopping.write_rows(buf, s.num_out, x[:, None], live)
        num_out, length, done_now = stopping.commit(s.num_out, token[:, None], ones, live,
                                                    stop_tokens, max_new)
        return s.replace(
            step=s.step + 1, tokens=write(s.tokens, token), logprobs=write(s.logprobs, logprob),
            policy_logprobs=write(s.policy_logprobs, policy),
            num_out=jnp.where(live, num_out, s.num_out),
            length=jnp.where(live, length, s.length), done=s.done | done_now)

    def body(s: _State) -> _State:
        last = jnp.take_along_axis(s.tokens, jnp.maximum(s.num_out - 1, 0)[:, None], axis=1)
        logits, _, cache = model.apply({"params": params}, last, s.cache,
                                       method=UnifiedAudioLM.decode)
        # Finished rows stay put, so their ignored writes stay inside the capacity.
        cache = cache.replace(lengths=jnp.where(s.done, s.cache.lengths, cache.lengths))
        return emit(s.replace(cache=cache, logits=logits[:, 0]))

    state = jax.lax.while_loop(lambda s: jnp.any(~s.done) & (s.step < max_new), body,
                               emit(state))
    mask = (jnp.arange(max_new)[None, :] < state.length[:, None]).astype(jnp.float32)
    pad_id = VocabLayout.from_model_config(model.config.model).pad_id
    return Rollout(tokens=stopping.pad_after(state.tokens, state.length, pad_id),
                   logprobs=state.logprobs * mask, policy_logprobs=state.policy_logprobs * mask,
                   mask=mask, lengths=state.length,
                   prompt_index=jnp.repeat(jnp.arange(b), num_samples))


_generate_jit = jax.jit(_generate, static_argnames=("model", "settings", "num_samples",
                                                    "capacity"))


def generate(model: UnifiedAudioLM, params, prompts, prompt_lengths, rng,
             settings: DecodeConfig, *, num_samples: int = 1,
             stop_tokens: tuple[int, ...] | None = None, capacity: int | None = None,
             audio_features=None, audio_mask=None, allowed_ids=None,
             cache=None) -> Rollout:
    """Samples `num_samples` completions per prompt (up to settings.max_new_tokens each).

    prompts [B, P] right-padded with valid lengths [B]; optional audio as for
    `UnifiedAudioLM.prefill`. settings.temperature 0 samples greedily. Stop tokens default to
    (eos,); a row ends at its first stop token (kept, mask 1) or at max_new_tokens.
    allowed_ids (None, or a bool mask [V] / [B, V] per prompt) and settings.repetition_* act
    as in `verified_decode`; they shape `logprobs` (the distribution sampled from), not
    `policy_logprobs`. `cache` (B rows): continue it instead of prefilling a fresh one.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, got {num_samples!r}")
    capacity, stops, constraints = prepare_request(
        model, settings, prompts, prompt_lengths, num_draft=0, capacity=capacity, cache=cache,
        stop_tokens=stop_tokens, allowed_ids=allowed_ids)
    return _generate_jit(model, params, prompts, prompt_lengths, rng, stops, constraints,
                         audio_features, audio_mask, cache, settings=settings,
                         num_samples=num_samples, capacity=capacity)
