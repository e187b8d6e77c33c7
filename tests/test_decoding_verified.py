"""Greedy and verified decoding on random-initialized models: exactness, rollback, capacity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone
from decoding_reference import OracleDrafter, np_constrain

from chorus.config import DecodeConfig, load_config
from chorus.decoding.drafters import SequentialDrafter, make_drafter
from chorus.decoding.verified import (
    decode_stats,
    decode_with_drafter,
    greedy_decode,
    verified_decode,
)
from chorus.model import UnifiedAudioLM, init_cache
from chorus.model.heads import MTPConfig, init_mtp_params
from chorus.vocab import VocabLayout

# Untied embeddings: a random tied model just repeats its last token, which tests little.
CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                               "model.tie_embeddings=false"])
LAYOUT = VocabLayout.from_model_config(CFG.model)
B, P, MAX_NEW, K = 6, 9, 12, 3
LENGTHS = np.array([9, 1, 4, 6, 3, 8], np.int32)


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG, 0)  # shared by the decoding test modules


@pytest.fixture(scope="module")
def sequential_heads():
    heads, hp, _ = init_mtp_params(CFG, MTPConfig("sequential", K), jax.random.key(1))
    return heads, hp


@pytest.fixture(scope="module")
def parallel_heads():
    heads, hp, _ = init_mtp_params(CFG, MTPConfig("parallel", K), jax.random.key(2))
    # Medusa heads start at zero (a copy of the next-token head); perturb them so drafts vary.
    leaves, tree = jax.tree.flatten(hp)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    hp = tree.unflatten([0.2 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves,
                                                                             strict=True)])
    return heads, hp


MEL = 40  # one clip of up to 5 adaptor frames (8 mel frames each) per prompt


def _audio(num_placeholders, seed):
    """Audio of each row: as many valid 8-frame chunks as it has <audio> placeholders."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(B, 1, MEL, CFG.audio.n_mels)).astype(np.float32)
    mask = np.arange(MEL)[None, None, :] < 8 * np.asarray(num_placeholders)[:, None, None]
    return {"audio_features": jnp.asarray(features), "audio_mask": jnp.asarray(mask)}


def _prompts(seed):
    """ASR-like ragged prompts: <asr> <audio>x(up to 5) text..., with their audio."""
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, LAYOUT.text_size, size=(B, P)).astype(np.int32)
    prompts[:, 0] = LAYOUT.special("<asr>")
    num_ph = np.clip(LENGTHS - 2, 0, 5)
    for b in range(B):
        prompts[b, 1:1 + num_ph[b]] = LAYOUT.audio_placeholder_id
    prompts[np.arange(P)[None, :] >= LENGTHS[:, None]] = LAYOUT.pad_id
    return jnp.asarray(prompts), jnp.asarray(LENGTHS), _audio(num_ph, seed)


@functools.partial(jax.jit, static_argnums=0)
def _full_logits(model, params, tokens, audio):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    out = model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens),
                      audio["audio_features"], audio["audio_mask"])
    return out["logits"], out["hidden"]


def _naive_greedy(model, params, prompts, lengths, audio, max_new, stop_tokens, allowed=None,
                  penalty=1.0, window=0):
    """Greedy decoding by re-running the full (uncached) forward: the reference. With
    constraints (allowed [B, V], a repetition penalty) each step takes the argmax of the
    loop reference `np_constrain`."""
    seq = np.zeros((B, P + MAX_NEW + K), np.int32)  # one width: one compile
    seq[:, :P] = np.asarray(prompts)
    out = np.full((B, max_new), LAYOUT.pad_id, np.int32)
    done = np.zeros(B, bool)
    for t in range(max_new):
        logits, _ = _full_logits(model, params, jnp.asarray(seq), audio)
        step = np.asarray(logits)[np.arange(B), lengths + t - 1]
        nxt = [int(np.argmax(np_constrain(step[b], out[b, :t], None if allowed is None
                                          else allowed[b], penalty, window)))
               for b in range(B)]
        for b in range(B):
            if not done[b]:
                out[b, t] = nxt[b]
                seq[b, lengths[b] + t] = nxt[b]
                done[b] = nxt[b] in stop_tokens
    return out


def test_greedy_decode_matches_uncached_reference(backbone):
    model, params = backbone
    prompts, lengths, audio = _prompts(0)
    free = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW, stop_tokens=(),
                         **audio)
    # Stop tokens taken from the outputs: rows stop at different steps (some never).
    stops = (int(free.tokens[0, 4]), int(free.tokens[3, 7]))
    got = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                        stop_tokens=stops, **audio)
    want = _naive_greedy(model, params, prompts, np.asarray(lengths), audio, MAX_NEW, stops)
    np.testing.assert_array_equal(got.tokens, want)
    lengths_out = np.asarray(got.lengths)
    assert lengths_out[0] <= 5 and lengths_out[3] <= 8 and lengths_out.max() == MAX_NEW
    # One forward per token after the first (which comes from the prefill).
    np.testing.assert_array_equal(got.num_forwards, lengths_out - 1)
    assert decode_stats(got)["forwards_per_token"] == 1.0


def _simulate_acceptance(wrong, max_new, k):
    """Per row: (forwards, accepted drafts) the verify loop must take for this pattern."""
    forwards, accepted = [], []
    for row in wrong:
        known, steps, acc = 1, 0, 0
        while known < max_new:
            a = 0
            while a < k and not row[known + a]:
                a += 1
            known, steps, acc = known + a + 1, steps + 1, acc + a
        forwards.append(steps)
        accepted.append(acc)
    return np.array(forwards), np.array(accepted)


def test_every_acceptance_pattern_commits_exactly_the_greedy_tokens(backbone):
    model, params = backbone
    prompts, lengths, audio = _prompts(1)
    reference = _naive_greedy(model, params, prompts, np.asarray(lengths), audio, MAX_NEW + K,
                              ())
    wrong = np.random.default_rng(0).random((B, MAX_NEW + K)) < 0.35
    drafter = OracleDrafter(jnp.asarray(reference), jnp.asarray(wrong), K, LAYOUT.text_size)
    got = decode_with_drafter(model, params, drafter, prompts, lengths,
                              DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K),
                              stop_tokens=(), **audio)
    np.testing.assert_array_equal(got.tokens, reference[:, :MAX_NEW])
    forwards, accepted = _simulate_acceptance(wrong, MAX_NEW, K)
    np.testing.assert_array_equal(got.num_forwards, forwards)
    np.testing.assert_array_equal(got.num_accepted, accepted)
    assert len(set(accepted.tolist())) > 1  # rows really differ
    _check_trace(got, K)


def _check_trace(result, k):
    """The per-step trace replays the output: step i commits its first a_i drafts and one
    bonus token after the prefill's first token, and sums to the per-row totals."""
    tokens, lengths = np.asarray(result.tokens), np.asarray(result.lengths)
    drafts, accepted = np.asarray(result.step_drafts), np.asarray(result.step_accepted)
    assert drafts.shape[2] == k
    for row in range(tokens.shape[0]):
        live = accepted[row] >= 0
        assert live.sum() == int(result.num_forwards[row])
        assert accepted[row][live].sum() == int(result.num_accepted[row])
        assert not live[int(live.sum()):].any()  # live steps come first
        position = 1  # token 0 is the prefill's
        for i in np.flatnonzero(live):
            a = int(accepted[row, i])
            end = min(position + a, int(lengths[row]))
            np.testing.assert_array_equal(drafts[row, i, :end - position],
                                          tokens[row, position:end])
            position += a + 1


@pytest.mark.parametrize("design", ["parallel", "sequential"])
def test_verified_greedy_is_token_identical_to_greedy(backbone, parallel_heads,
                                                      sequential_heads, design):
    model, params = backbone
    heads, hp = parallel_heads if design == "parallel" else sequential_heads
    settings = DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K)
    for seed in range(3):
        prompts, lengths, audio = _prompts(10 + seed)
        free = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                             stop_tokens=(), **audio)
        stops = (int(free.tokens[1, 2]), int(free.tokens[4, 9]))
        want = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                             stop_tokens=stops, **audio)
        got = verified_decode(model, params, heads, hp, prompts, lengths, settings,
                              stop_tokens=stops, **audio)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.lengths, want.lengths)
        assert np.all(np.asarray(got.num_forwards) <= np.asarray(want.num_forwards))
        _check_trace(got, K)


def test_cache_after_verified_decoding_holds_exactly_the_committed_tokens(backbone,
                                                                           parallel_heads):
    """Rollback: rows [0, cache.lengths) equal a fresh prefill of prompt + output."""
    model, params = backbone
    heads, hp = parallel_heads
    prompts, lengths, audio = _prompts(2)
    reference = _naive_greedy(model, params, prompts, np.asarray(lengths), audio, MAX_NEW + K,
                              ())
    wrong = np.random.default_rng(1).random((B, MAX_NEW + K)) < 0.35
    drafter = OracleDrafter(jnp.asarray(reference), jnp.asarray(wrong), K, LAYOUT.text_size)
    got = decode_with_drafter(model, params, drafter, prompts, lengths,
                              DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K),
                              stop_tokens=(), **audio)
    cache_len = np.asarray(got.cache.lengths)
    full = np.zeros((B, P + MAX_NEW), np.int32)
    for b in range(B):
        n = LENGTHS[b]
        full[b, :n] = np.asarray(prompts)[b, :n]
        full[b, n:n + MAX_NEW] = np.asarray(got.tokens)[b]
    out_len = np.asarray(got.lengths)
    assert np.all(cache_len <= LENGTHS + out_len - 1)
    assert np.all(cache_len >= LENGTHS + out_len - K - 2)
    fresh = init_cache(CFG, B, got.cache.capacity)
    fresh = jax.jit(functools.partial(model.apply, method=UnifiedAudioLM.prefill))(
        {"params": params}, jnp.asarray(full), jnp.asarray(cache_len), fresh,
        audio["audio_features"], audio["audio_mask"])[2]
    for b in range(B):
        n = cache_len[b]
        np.testing.assert_allclose(got.cache.k[:, b, :n], fresh.k[:, b, :n], atol=1e-4,
                                   rtol=1e-4)
        np.testing.assert_allclose(got.cache.v[:, b, :n], fresh.v[:, b, :n], atol=1e-4,
                                   rtol=1e-4)


def test_capacity_is_checked_and_the_minimum_suffices(backbone, parallel_heads):
    model, params = backbone
    heads, hp = parallel_heads
    prompts, lengths, audio = _prompts(3)
    settings = DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K)
    with pytest.raises(ValueError, match=r"cache capacity: expected >= 23 .* got 22"):
        verified_decode(model, params, heads, hp, prompts, lengths, settings, capacity=22)
    with pytest.raises(ValueError, match=r"num_draft_tokens: expected <= .* \(3\), got 4"):
        verified_decode(model, params, heads, hp, prompts, lengths,
                        DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=4))
    with pytest.raises(ValueError, match=r"prompt_lengths: expected values in \[1, 9\]"):
        greedy_decode(model, params, prompts, lengths.at[0].set(0), max_new_tokens=MAX_NEW)
    got = verified_decode(model, params, heads, hp, prompts, lengths, settings, capacity=23,
                          stop_tokens=(), **audio)
    assert got.cache.capacity == 23
    assert np.all(np.asarray(got.lengths) == MAX_NEW)


def test_sequential_drafts_equal_the_teacher_forced_mtp_chain(backbone, sequential_heads):
    """Incremental per-depth caches give exactly the training-mode chain run on
    [committed prefix, d'_1..d'_{j-1}], through several steps of random acceptance."""
    model, params = backbone
    heads, hp = sequential_heads
    steps, n_total = 4, P + 4 * (K + 1) + K + 1
    rng = np.random.default_rng(4)
    seq = rng.integers(0, LAYOUT.text_size, size=(B, n_total)).astype(np.int32)
    seq[:, 0], seq[:, 1:6] = LAYOUT.special("<asr>"), LAYOUT.audio_placeholder_id
    _, h0 = _full_logits(model, params, jnp.asarray(seq), _audio(np.full(B, 5), 4))
    drafter = make_drafter(model, params, heads, hp, K)
    assert isinstance(drafter, SequentialDrafter)
    lengths = jnp.asarray(np.maximum(LENGTHS, K))  # the chain needs K committed tokens
    state = jax.jit(lambda d, *a: d.init(*a, capacity=n_total + 2 * K))(
        drafter, jnp.asarray(seq[:, :P]), lengths, h0[:, :P])
    propose = jax.jit(lambda d, *a: d.propose(
        *a, choose=lambda j, lg, drafted: (jnp.argmax(lg, -1).astype(jnp.int32), lg)))

    @jax.jit
    def chain_logits(tokens):
        embeds = jnp.stack([model.apply({"params": params}, jnp.roll(tokens, -j, axis=1),
                                        method=UnifiedAudioLM.embed_tokens)
                            for j in range(1, K + 1)])
        positions = jnp.broadcast_to(jnp.arange(n_total), tokens.shape)
        out = heads.apply({"params": hp}, h0, embeds, positions, jnp.ones_like(tokens))
        return model.apply({"params": params}, out, method=UnifiedAudioLM.logits)

    n = np.asarray(lengths) - 1  # the pretended first verify window sits at len-1
    accepted = np.zeros(B, np.int32)
    rows = np.arange(B)
    for _ in range(steps):
        slots = np.arange(K + 1)[None, :]
        follow = np.where(slots <= accepted[:, None], seq[rows[:, None], n[:, None] + 1 + slots],
                          0)
        window_hidden = h0[rows[:, None], n[:, None] + slots]
        state, drafts, logits = propose(drafter, state, jnp.asarray(follow), window_hidden,
                                        jnp.asarray(accepted), jnp.ones(B, bool))
        base = n + accepted + 1  # n': index of the new base token
        tokens = seq.copy()
        for b in range(B):
            tokens[b, base[b] + 1:base[b] + K] = np.asarray(drafts)[b, :K - 1]
        want = chain_logits(jnp.asarray(tokens))[:, rows, base - 1]  # [K, B, V]
        np.testing.assert_allclose(logits, jnp.moveaxis(want, 0, 1), atol=2e-4, rtol=2e-4)
        n, accepted = base, rng.integers(0, K + 1, size=B).astype(np.int32)


# ----------------------------------------------------------------------------- constraints

PENALTY, WINDOW = 4.0, 5


def _allowed(seed, size=12):
    """Per-row masks of `size` random text ids: few enough that repeats are common, so the
    penalty matters."""
    rng = np.random.default_rng(seed)
    allowed = np.zeros((B, LAYOUT.size), bool)
    for row in allowed:
        row[rng.choice(LAYOUT.text_size, size=size, replace=False)] = True
    return allowed


# A penalty < 1 rewards repeats: the random model then repeats, where it rarely does alone.
@pytest.mark.parametrize("allowed_seed,penalty,window", [(5, 1.0, 0), (None, 0.2, WINDOW),
                                                          (6, PENALTY, WINDOW)])
def test_constrained_greedy_matches_the_uncached_reference(backbone, allowed_seed, penalty,
                                                           window):
    model, params = backbone
    prompts, lengths, audio = _prompts(20)
    allowed = None if allowed_seed is None else _allowed(allowed_seed)
    kw = dict(max_new_tokens=MAX_NEW, stop_tokens=(), **audio)
    got = greedy_decode(model, params, prompts, lengths, allowed_ids=allowed,
                        repetition_penalty=penalty, repetition_window=window, **kw)
    want = _naive_greedy(model, params, prompts, np.asarray(lengths), audio, MAX_NEW, (),
                         allowed, penalty, window)
    np.testing.assert_array_equal(got.tokens, want)
    # Each constraint changes the output: against none, and against the mask alone.
    free = greedy_decode(model, params, prompts, lengths, **kw)
    assert not np.array_equal(free.tokens, want)
    if allowed is not None:
        assert np.take_along_axis(allowed, np.asarray(got.tokens), axis=1).all()
        if window:
            masked = greedy_decode(model, params, prompts, lengths, allowed_ids=allowed, **kw)
            assert not np.array_equal(masked.tokens, want)


def test_every_acceptance_pattern_under_constraints_commits_the_constrained_greedy_tokens(
        backbone):
    """Drafts judged with the drafts before them as penalty history; corrupted drafts (some
    outside the mask) are rejected; a 1-D mask broadcasts to every row."""
    model, params = backbone
    prompts, lengths, audio = _prompts(21)
    allowed = _allowed(7)[0]
    settings = DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K,
                            repetition_penalty=PENALTY, repetition_window=WINDOW)
    reference = _naive_greedy(model, params, prompts, np.asarray(lengths), audio, MAX_NEW + K,
                              (), np.broadcast_to(allowed, (B, LAYOUT.size)), PENALTY, WINDOW)
    wrong = np.random.default_rng(2).random((B, MAX_NEW + K)) < 0.35
    drafter = OracleDrafter(jnp.asarray(reference), jnp.asarray(wrong), K, LAYOUT.text_size)
    got = decode_with_drafter(model, params, drafter, prompts, lengths, settings,
                              stop_tokens=(), allowed_ids=allowed, **audio)
    np.testing.assert_array_equal(got.tokens, reference[:, :MAX_NEW])
    forwards, accepted = _simulate_acceptance(wrong, MAX_NEW, K)
    np.testing.assert_array_equal(got.num_forwards, forwards)
    np.testing.assert_array_equal(got.num_accepted, accepted)


@pytest.mark.parametrize("design", ["parallel", "sequential"])
def test_verified_greedy_equals_greedy_under_a_mask_and_a_penalty(backbone, parallel_heads,
                                                                  sequential_heads, design):
    model, params = backbone
    heads, hp = parallel_heads if design == "parallel" else sequential_heads
    settings = DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K,
                            repetition_penalty=PENALTY, repetition_window=WINDOW)
    prompts, lengths, audio = _prompts(22)
    allowed = _allowed(8)
    free = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                         stop_tokens=(), allowed_ids=allowed, repetition_penalty=PENALTY,
                         repetition_window=WINDOW, **audio)
    stops = (int(free.tokens[1, 2]), int(free.tokens[4, 9]))
    want = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                         stop_tokens=stops, allowed_ids=allowed, repetition_penalty=PENALTY,
                         repetition_window=WINDOW, **audio)
    got = verified_decode(model, params, heads, hp, prompts, lengths, settings,
                          stop_tokens=stops, allowed_ids=allowed, **audio)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.lengths, want.lengths)
