"""Beam search over the KV cache, batched and jit-compiled (one compile per batch and width).

Each prompt is prefilled once (with its audio); its cache is then repeated W times, so the
W live hypotheses of prompt i are cache rows i*W .. i*W+W-1. Each step scores the W*V
one-token extensions by summed log-prob (log-softmax of the constrained logits: the
distribution greedy decoding takes the argmax of), keeps the best W that do not end as the
live hypotheses and reorders the cache rows (and output buffers) to their parents.

A candidate ends with a stop token, or with the last step (max_new_tokens). An ending
candidate joins the prompt's pool of W finished hypotheses only when it ranks among the
step's top W candidates (the rule of HF transformers' beam search), so width 1 is greedy
decoding. The pool is ranked by logp / length**alpha (settings.length_penalty; 0 = the plain
log-prob). A prompt is done when no live hypothesis can beat its pool's best (`nbest=True`:
its pool is full and none can beat the pool's worst, so the whole n-best is final): log-probs
only fall as a hypothesis grows, so a live one's best future ranking score is its
logp / max_new_tokens**alpha (exact, unlike the usual logp / length**alpha heuristic).
Static shapes: `lax.while_loop` until every prompt is done or max_new_tokens steps.

A scorer (`chorus.decoding.joint`) replaces the log-probs with its per-token increments: with
`CtcPrefixScorer` the summed score of a finished hypothesis is the joint CTC/attention score
(1 - w) * log p_dec(y) + w * log p_ctc(y), and width 1 is joint greedy decoding. The
increments are <= 0 too, so the stopping bound stays exact.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from chorus.config import DecodeConfig
from chorus.decoding import stopping
from chorus.decoding.inputs import at_last, prepare_request, prompt_forward
from chorus.decoding.joint import NoScorer
from chorus.model.unified import KVCache, UnifiedAudioLM
from chorus.vocab import VocabLayout


@flax.struct.dataclass
class BeamResult:
    tokens: jax.Array  # [B, max_new] int32, the best hypothesis; pad id after its length
    lengths: jax.Array  # [B] its output tokens, a stop token included
    scores: jax.Array  # [B] its summed log-prob (fp32)
    # The finished hypotheses, best first by ranking score logp / length**alpha:
    # [B, W, max_new], [B, W], [B, W] summed log-probs, [B, W] ranking scores. The n-best
    # with `nbest=True`, else those found when the best was final; unfilled slots: -inf.
    nbest_tokens: jax.Array
    nbest_lengths: jax.Array
    nbest_scores: jax.Array
    nbest_ranking: jax.Array


@flax.struct.dataclass
class _State:
    step: jax.Array  # output position being chosen; every live hypothesis has `step` tokens
    cache: KVCache  # B*W rows
    logits: jax.Array  # [B*W, V] next-token logits of the live hypotheses
    tokens: jax.Array  # [B*W, max_new] live hypotheses' tokens
    scores: jax.Array  # [B, W] live summed log-probs (-inf: an empty slot)
    pool_tokens: jax.Array  # [B, W, max_new] finished hypotheses
    pool_lengths: jax.Array  # [B, W]
    pool_scores: jax.Array  # [B, W] summed log-probs
    pool_ranking: jax.Array  # [B, W] ranking scores (-inf: an empty slot)
    done: jax.Array  # [B]
    scored: object  # the scorer's state of each live hypothesis (B*W rows)


def ranking_score(logp, length, alpha: float):
    """logp / length**alpha, the score hypotheses of different lengths are ranked by."""
    if alpha == 0:
        return logp
    return logp / jnp.maximum(length, 1).astype(jnp.float32) ** alpha


def _take_rows(cache: KVCache, rows: jax.Array) -> KVCache:
    """The cache rows `rows` [R] (the batch axis is axis 1 of k / v, axis 0 of lengths)."""
    return KVCache(jnp.take(cache.k, rows, axis=1), jnp.take(cache.v, rows, axis=1),
                   jnp.take(cache.lengths, rows, axis=0))


def _beam_search(model, params, scorer, prompts, lengths, stop_tokens, constraints,
                 audio_features, audio_mask, cache, *, settings: DecodeConfig, capacity: int,
                 nbest: bool):
    b = prompts.shape[0]
    w, max_new, alpha = settings.beam_width, settings.max_new_tokens, settings.length_penalty
    rows = b * w
    logits, _, cache = prompt_forward(model, params, prompts, lengths, cache, audio_features,
                                      audio_mask, capacity)
    v = logits.shape[-1]
    constraints = constraints.repeat(w)
    scorer = scorer.repeat(w)
    is_stop = (jnp.arange(v)[:, None] == stop_tokens[None, :]).any(-1)  # -1 padding: none
    cache = _take_rows(cache, jnp.repeat(jnp.arange(b), w))
    neg = jnp.full((b, w), -jnp.inf, jnp.float32)
    state = _State(
        step=jnp.zeros((), jnp.int32), cache=cache,
        logits=jnp.repeat(at_last(logits, lengths), w, axis=0),
        tokens=jnp.zeros((rows, max_new), jnp.int32),
        # One live hypothesis (the empty one) per prompt, so the first step has no duplicates.
        scores=neg.at[:, 0].set(0.0),
        pool_tokens=jnp.zeros((b, w, max_new), jnp.int32),
        pool_lengths=jnp.zeros((b, w), jnp.int32), pool_scores=neg, pool_ranking=neg,
        done=jnp.zeros((b,), bool), scored=scorer.init())
    flat_rows = (jnp.arange(b) * w)[:, None]

    def select(s: _State) -> _State:
        """Scores the extensions of s's live hypotheses; new live set, pool, done."""
        positions = jnp.full((rows, 1), s.step, jnp.int32)
        constrained = constraints(s.logits[:, None], s.tokens, positions)[:, 0]
        logp, slots = scorer.increments(s.scored, constrained)
        cand = (s.scores[:, :, None] + logp.reshape(b, w, v)).reshape(b, w * v)
        ends = jnp.broadcast_to(is_stop | (s.step == max_new - 1), (w, v)).reshape(w * v)
        # Ending candidates count only when among the step's top W (width 1 = greedy).
        kth = jax.lax.top_k(cand, w)[0][:, -1:]
        finished = jnp.where(ends[None, :] & (cand >= kth), cand, -jnp.inf)
        length = s.step + 1
        pool_rank, pick = jax.lax.top_k(
            jnp.concatenate([s.pool_ranking, ranking_score(finished, length, alpha)], axis=1), w)
        new = pick >= w  # a newly finished candidate (index into cand: pick - w)
        cand_idx = jnp.maximum(pick - w, 0)
        parent_rows = (flat_rows + cand_idx // v).reshape(-1)
        grown = jnp.take(s.tokens, parent_rows, axis=0).at[:, s.step].set(
            (cand_idx % v).reshape(-1)).reshape(b, w, max_new)
        old_idx = jnp.minimum(pick, w - 1)
        pick_old = lambda x: jnp.take_along_axis(x, old_idx, axis=1)
        old_tokens = jnp.take_along_axis(s.pool_tokens, old_idx[..., None], axis=1)
        keep = s.done[:, None]  # a done prompt's pool is final
        pool_tokens = jnp.where((keep | ~new)[..., None], jnp.where(keep[..., None],
                                s.pool_tokens, old_tokens), grown)
        pool_lengths = jnp.where(keep, s.pool_lengths,
                                 jnp.where(new, length, pick_old(s.pool_lengths)))
        pool_scores = jnp.where(keep, s.pool_scores, jnp.where(
            new, jnp.take_along_axis(cand, cand_idx, axis=1), pick_old(s.pool_scores)))
        pool_ranking = jnp.where(keep, s.pool_ranking, pool_rank)
        # The live set: the best W candidates that do not end.
        scores, idx = jax.lax.top_k(jnp.where(ends[None, :], -jnp.inf, cand), w)
        parents = (flat_rows + idx // v).reshape(-1)
        chosen = (idx % v).reshape(-1).astype(jnp.int32)
        tokens = jnp.take(s.tokens, parents, axis=0).at[:, s.step].set(chosen)
        scored = scorer.advance(jax.tree.map(lambda x: jnp.take(x, parents, axis=0), slots),
                                jnp.zeros((rows,), jnp.int32), chosen, jnp.ones((rows,), bool))
        bound = ranking_score(scores[:, 0], max_new, alpha)  # best future of any live one
        done = s.done | (pool_ranking[:, -1 if nbest else 0] >= bound)
        return s.replace(step=s.step + 1, cache=_take_rows(s.cache, parents), tokens=tokens,
                         scores=scores, pool_tokens=pool_tokens, pool_lengths=pool_lengths,
                         pool_scores=pool_scores, pool_ranking=pool_ranking, done=done,
                         scored=scored)

    def body(s: _State) -> _State:
        last = jax.lax.dynamic_slice_in_dim(s.tokens, s.step - 1, 1, axis=1)  # [B*W, 1]
        logits, _, cache = model.apply({"params": params}, last, s.cache,
                                       method=UnifiedAudioLM.decode)
        return select(s.replace(cache=cache, logits=logits[:, 0]))

    state = jax.lax.while_loop(lambda s: jnp.any(~s.done) & (s.step < max_new), body,
                               select(state))
    pad_id = VocabLayout.from_model_config(model.config.model).pad_id
    pool_tokens = stopping.pad_after(state.pool_tokens.reshape(rows, max_new),
                                     state.pool_lengths.reshape(rows), pad_id)
    pool_tokens = pool_tokens.reshape(b, w, max_new)
    return BeamResult(tokens=pool_tokens[:, 0], lengths=state.pool_lengths[:, 0],
                      scores=state.pool_scores[:, 0], nbest_tokens=pool_tokens,
                      nbest_lengths=state.pool_lengths, nbest_scores=state.pool_scores,
                      nbest_ranking=state.pool_ranking)


_beam_jit = jax.jit(_beam_search, static_argnames=("model", "settings", "capacity", "nbest"))


def beam_search(model: UnifiedAudioLM, params, prompts, prompt_lengths, settings: DecodeConfig,
                *, stop_tokens: tuple[int, ...] | None = None, capacity: int | None = None,
                audio_features=None, audio_mask=None, allowed_ids=None,
                cache: KVCache | None = None, nbest: bool = False,
                scorer=None) -> BeamResult:
    """Beam search of width settings.beam_width, ranked by logp / length**length_penalty.

    Arguments as for `chorus.decoding.verified.greedy_decode`: prompts [B, P] right-padded
    with valid lengths [B]; optional audio; stop tokens (default (eos,)); allowed_ids and
    settings.repetition_* shape the log-probs (per hypothesis: each has its own history);
    `cache` (B rows) is continued instead of a fresh prefill. Deterministic: needs
    settings.temperature 0 (top_k / top_p then play no part). nbest: search on until the
    whole n-best is final (slower: W hypotheses must end), not just the best. scorer: None,
    or a `chorus.decoding.joint` scorer of the B prompts (e.g. `ctc_prefix_scorer`): the
    search ranks its joint scores instead (`scores` then hold them).
    """
    if settings.temperature != 0:
        raise ValueError(f"decode.temperature: expected 0 for beam search (it is "
                         f"deterministic), got {settings.temperature}")
    capacity, stops, constraints = prepare_request(
        model, settings, prompts, prompt_lengths, num_draft=0, capacity=capacity, cache=cache,
        stop_tokens=stop_tokens, allowed_ids=allowed_ids)
    scorer = NoScorer() if scorer is None else scorer
    return _beam_jit(model, params, scorer, prompts, prompt_lengths, stops, constraints,
                     audio_features, audio_mask, cache, settings=settings, capacity=capacity,
                     nbest=bool(nbest))
