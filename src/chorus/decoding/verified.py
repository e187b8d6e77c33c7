"""Greedy and verified multi-token decoding over the KV cache, batched and jit-compiled.

One loop serves both. Each step drafts k tokens, runs ONE backbone forward over the window
[b, d_1..d_k] written at each row's cache length (`UnifiedAudioLM.decode`), accepts a prefix
(`greedy_accept`, or `speculative_accept` when temperature > 0), commits b, d_1..d_a, and rolls
the cache back to the committed length (set `lengths`). The next base b' is the bonus /
correction token. With k = 0 (no heads) this is plain autoregressive decoding, so greedy and
verified decoding share stopping rules; verified greedy output is token-identical to greedy.

A scorer (`chorus.decoding.joint`) may re-rank the main head's choices: with
`CtcPrefixScorer` greedy decoding is joint CTC/attention greedy, and verified decoding judges
each draft by the same fused scores, so it stays token-identical to that.

Static shapes: output buffers [B, max_new + k + 1], per-row write offsets, per-row stop
(stop token or max_new_tokens), `lax.while_loop` until every row is done. Rows that are done
keep running (their writes are masked and their caches frozen at a valid offset).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import DecodeConfig
from chorus.decoding import stopping
from chorus.decoding.acceptance import greedy_accept, speculative_accept
from chorus.decoding.drafters import make_drafter
from chorus.decoding.filtering import sampling_logits, sampling_probs
from chorus.decoding.inputs import at_last, prepare_request, prompt_forward
from chorus.decoding.joint import NoScorer
from chorus.model.unified import KVCache, UnifiedAudioLM
from chorus.vocab import VocabLayout


@flax.struct.dataclass
class DecodeResult:
    tokens: jax.Array  # [B, max_new_tokens] int32; pad id after each row's length
    lengths: jax.Array  # [B] output tokens, a stop token included
    num_forwards: jax.Array  # [B] backbone decode forwards while the row was live (no prefill)
    num_accepted: jax.Array  # [B] accepted drafts summed over those forwards
    # The per-step trace: drafts d_1..d_k of verify step i and how many were accepted (-1 once
    # the row is done), [B, max_new_tokens, k] and [B, max_new_tokens].
    step_drafts: jax.Array
    step_accepted: jax.Array
    # Rows [0, cache.lengths) hold prompt + tokens[:cache.lengths - prompt_lengths] (a row that
    # finished sits at its last window's start, >= prompt + length - k - 2); to continue,
    # feed the remaining output tokens as one window.
    cache: KVCache


@flax.struct.dataclass
class _LoopState:
    step: jax.Array
    cache: KVCache
    draft: object
    out: jax.Array
    num_out: jax.Array
    length: jax.Array
    done: jax.Array
    follow: jax.Array  # [B, k+1] committed token after each slot of the last window
    window_hidden: jax.Array  # [B, k+1, d]
    accepted: jax.Array  # [B] a of the last window
    next_token: jax.Array  # [B] the next base token b
    step_drafts: jax.Array
    step_accepted: jax.Array
    scored: object  # the scorer's state of the committed output


def _decode_loop(model, params, drafter, scorer, prompts, lengths, rng, stop_tokens,
                 constraints, audio_features, audio_mask, cache, *, settings: DecodeConfig,
                 capacity: int):
    b = prompts.shape[0]
    k, max_new = drafter.num_draft, settings.max_new_tokens
    greedy = settings.temperature == 0
    pad_id = VocabLayout.from_model_config(model.config.model).pad_id

    def target(logits):
        return sampling_logits(logits, settings.temperature, settings.top_k, settings.top_p)

    def choose(key, logits):
        """A token from constrained logits [B, V]: the argmax, or a filtered sample."""
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, target(logits), axis=-1).astype(jnp.int32)

    logits, hidden, cache = prompt_forward(model, params, prompts, lengths, cache,
                                           audio_features, audio_mask, capacity)
    first_key, loop_key = jax.random.split(rng)
    out = jnp.zeros((b, max_new + k + 1), jnp.int32)  # output position i at column i
    first_logits, first_slots = scorer.fuse(
        scorer.init(), constraints(at_last(logits, lengths)[:, None], out,
                                   jnp.zeros((b, 1), jnp.int32)), jnp.zeros((b, 0), jnp.int32))
    first = choose(first_key, first_logits[:, 0])
    nothing, everyone = jnp.zeros((b,), jnp.int32), jnp.ones((b,), bool)
    num_out, length, done = stopping.commit(jnp.zeros((b,), jnp.int32), first[:, None],
                                            jnp.ones((b,), jnp.int32), jnp.ones((b,), bool),
                                            stop_tokens, max_new)
    # Pretend a verify window at n = len-1 accepted nothing: its follow token is `first`.
    follow = jnp.zeros((b, k + 1), jnp.int32).at[:, 0].set(first)
    window_hidden = jnp.zeros((b, k + 1, hidden.shape[-1]), hidden.dtype)
    window_hidden = window_hidden.at[:, 0].set(at_last(hidden, lengths))
    state = _LoopState(
        step=jnp.zeros((), jnp.int32), cache=cache,
        draft=drafter.init(prompts, lengths, hidden, capacity + k),
        out=out.at[:, 0].set(first),
        num_out=num_out, length=length, done=done, follow=follow, window_hidden=window_hidden,
        accepted=jnp.zeros((b,), jnp.int32), next_token=first,
        step_drafts=jnp.zeros((b, max_new, k), jnp.int32),
        step_accepted=jnp.full((b, max_new), -1, jnp.int32),
        scored=scorer.advance(first_slots, nothing, first, everyone))

    def body(s: _LoopState) -> _LoopState:
        live = ~s.done
        draft_key, accept_key = jax.random.split(jax.random.fold_in(loop_key, s.step))
        everyone = jnp.ones_like(live)

        def choose_draft(j, logits, drafted):
            # Draft j+1 sits at output position num_out + j, after the drafts before it.
            history = stopping.write_rows(s.out, s.num_out, drafted, everyone)
            constrained = constraints(logits[:, None], history, (s.num_out + j)[:, None])[:, 0]
            return choose(jax.random.fold_in(draft_key, j), constrained), constrained

        draft_state, drafts, q_logits = drafter.propose(s.draft, s.follow, s.window_hidden,
                                                        s.accepted, live, choose_draft)
        window = jnp.concatenate([s.next_token[:, None], drafts], axis=1)
        p_logits, hidden, cache = model.apply({"params": params}, window, s.cache,
                                              method=UnifiedAudioLM.decode)
        # Slot j judges output position num_out + j with the drafts d_1..d_j before it.
        p_logits = constraints(p_logits, stopping.write_rows(s.out, s.num_out, drafts, everyone),
                               s.num_out[:, None] + jnp.arange(k + 1)[None, :])
        p_logits, slot_scored = scorer.fuse(s.scored, p_logits, drafts)
        if greedy:
            a, nxt = greedy_accept(p_logits, drafts)
        else:
            q_probs = (sampling_probs(q_logits, settings.temperature, settings.top_k,
                                      settings.top_p) if k else p_logits[:, :0])
            a, nxt = speculative_accept(jax.nn.softmax(target(p_logits), axis=-1), q_probs,
                                        drafts, accept_key)
        slots = jnp.arange(k + 1)[None, :]
        follow = jnp.where(slots < a[:, None], jnp.pad(drafts, ((0, 0), (0, 1))),
                           jnp.where(slots == a[:, None], nxt[:, None], 0))
        out = stopping.write_rows(s.out, s.num_out, follow, live)
        num_out, length, done_now = stopping.commit(s.num_out, follow, a + 1, live,
                                                    stop_tokens, max_new)
        # Roll back to the committed length. A finished row stays at this window's start:
        # its (ignored) later windows overwrite only rows from there, inside the capacity.
        advance = live & ~done_now
        cache = cache.replace(lengths=jnp.where(advance, s.cache.lengths + a + 1,
                                                s.cache.lengths))
        return _LoopState(
            step=s.step + 1, cache=cache, draft=draft_state, out=out,
            num_out=jnp.where(live, num_out, s.num_out),
            length=jnp.where(live, length, s.length), done=s.done | done_now, follow=follow,
            window_hidden=hidden, accepted=a, next_token=nxt,
            step_drafts=s.step_drafts.at[:, s.step].set(drafts),
            step_accepted=s.step_accepted.at[:, s.step].set(jnp.where(live, a, -1)),
            scored=scorer.advance(slot_scored, a, nxt, live))

    def cond(s: _LoopState):
        return jnp.any(~s.done) & (s.step < max_new)

    s = jax.lax.while_loop(cond, body, state)
    tokens = stopping.pad_after(s.out[:, :max_new], s.length, pad_id)
    # A live row's step records a >= 0; a done row's (and an unrun step's) -1.
    num_forwards = jnp.sum(s.step_accepted >= 0, axis=1, dtype=jnp.int32)
    num_accepted = jnp.sum(jnp.maximum(s.step_accepted, 0), axis=1, dtype=jnp.int32)
    return DecodeResult(tokens, s.length, num_forwards, num_accepted, s.step_drafts,
                        s.step_accepted, s.cache)


_decode_jit = jax.jit(_decode_loop, static_argnames=("model", "settings", "capacity"))


def verified_decode(model: UnifiedAudioLM, params, heads: nn.Module | None, head_params,
                    prompts, prompt_lengths, settings: DecodeConfig, *,
                    stop_tokens: tuple[int, ...] | None = None, rng=None,
                    capacity: int | None = None, audio_features=None, audio_mask=None,
                    allowed_ids=None, cache: KVCache | None = None,
                    scorer=None) -> DecodeResult:
    """Verified multi-token decoding with `settings.num_draft_tokens` drafts per step.

    prompts [B, P] right-padded with valid lengths prompt_lengths [B] (>= 1); optional audio
    as for `UnifiedAudioLM.prefill`. temperature 0: greedy and token-identical to
    `greedy_decode` under the same constraints; temperature > 0: speculative sampling of the
    constrained, top-k / top-p filtered distribution (needs `rng`). stop_tokens default to
    (eos,). allowed_ids: None or a bool mask [V] / [B, V] of the ids the decoder may emit;
    settings.repetition_penalty / repetition_window penalize recent ids (see
    chorus.decoding.constraints). `capacity` defaults to the minimum the loop needs. With a
    `cache` (e.g. a previous result's, or one filled by `UnifiedAudioLM.extend`), the prompts
    are appended at its lengths instead of prefilled into a fresh cache (its capacity is
    used; sequential drafters then see only the new tokens, the history reaches them through
    the backbone's hidden states). scorer: None, or a `chorus.decoding.joint` scorer (e.g.
    `ctc_prefix_scorer`) whose fused scores replace the main head's, for the drafts' verdicts
    and the bonus token alike; greedy decoding with the same scorer is then the reference.
    """
    drafter = make_drafter(model, params, heads, head_params, settings.num_draft_tokens)
    return decode_with_drafter(model, params, drafter, prompts, prompt_lengths, settings,
                               stop_tokens=stop_tokens, rng=rng, capacity=capacity,
                               audio_features=audio_features, audio_mask=audio_mask,
                               allowed_ids=allowed_ids, cache=cache, scorer=scorer)


def decode_with_drafter(model: UnifiedAudioLM, params, drafter, prompts, prompt_lengths,
                        settings: DecodeConfig, *, stop_tokens: tuple[int, ...] | None = None,
                        rng=None, capacity: int | None = None, audio_features=None,
                        audio_mask=None, allowed_ids=None,
                        cache: KVCache | None = None, scorer=None) -> DecodeResult:
    """`verified_decode` with any drafter (see chorus.decoding.drafters for the interface)."""
    capacity, stops, constraints = prepare_request(
        model, settings, prompts, prompt_lengths, num_draft=drafter.num_draft,
        capacity=capacity, cache=cache, stop_tokens=stop_tokens, allowed_ids=allowed_ids)
    if settings.temperature > 0 and rng is None:
        raise ValueError("rng: expected a PRNG key when settings.temperature > 0, got None")
    rng = jax.random.key(0) if rng is None else rng
    scorer = NoScorer() if scorer is None else scorer
    return _decode_jit(model, params, drafter, scorer, prompts, prompt_lengths, rng, stops,
                       constraints, audio_features, audio_mask, cache, settings=settings,
                       capacity=capacity)


def greedy_decode(model: UnifiedAudioLM, params, prompts, prompt_lengths, *,
                  max_new_tokens: int, stop_tokens: tuple[int, ...] | None = None,
                  capacity: int | None = None, audio_features=None, audio_mask=None,
                  allowed_ids=None, repetition_penalty: float = 1.0,
                  repetition_window: int = 0, cache: KVCache | None = None,
                  scorer=None) -> DecodeResult:
    """Plain greedy autoregressive decoding: one token per backbone forward (constraints and
    scorer as for `verified_decode`)."""
    settings = DecodeConfig(max_new_tokens=max_new_tokens, temperature=0.0, num_draft_tokens=0,
                            repetition_penalty=repetition_penalty,
                            repetition_window=repetition_window)
    return verified_decode(model, params, None, None, prompts, prompt_lengths, settings,
                           stop_tokens=stop_tokens, capacity=capacity,
                           audio_features=audio_features, audio_mask=audio_mask,
                           allowed_ids=allowed_ids, cache=cache, scorer=scorer)


def uncached_tokens(result: DecodeResult, prompt_ends) -> tuple[jax.Array, jax.Array]:
    """The output tokens a result's cache does not hold yet, to feed first when the
    conversation continues (`UnifiedAudioLM.extend` or `cache=`): (tokens [B, max_new]
    right-padded with 0, counts [B], at most k + 2). prompt_ends [B]: each row's cache
    length after its prompt (the cache length before the call + the prompt length)."""
    cached = result.cache.lengths - jnp.asarray(prompt_ends)  # output tokens in the cache
    counts = result.lengths - cached
    width = result.tokens.shape[1]
    idx = cached[:, None] + jnp.arange(width)[None, :]
    tokens = jnp.take_along_axis(result.tokens, jnp.minimum(idx, width - 1), axis=1)
    keep = jnp.arange(width)[None, :] < counts[:, None]
    return jnp.where(keep, tokens, 0), counts.astype(jnp.int32)


def decode_stats(result: DecodeResult) -> dict[str, float]:
    """Acceptance figures over all rows (host floats).

    tokens_per_step: committed tokens per verify forward, a + 1 (the "accepted length");
    accepted_drafts_per_step: a; forwards_per_token: backbone forwards (prefill included)
    per output token - 1.0 for greedy decoding.
    """
    steps = max(int(np.sum(result.num_forwards)), 1)
    accepted = int(np.sum(result.num_accepted))
    forwards = int(np.sum(result.num_forwards)) + result.lengths.shape[0]
    return {"tokens_per_step": (accepted + steps) / steps,
            "accepted_drafts_per_step": accepted / steps,
            "forwards_per_token": forwards / max(int(np.sum(result.lengths)), 1)}
