"""Filtering against a numpy reference, speculative sampling's distribution, and generate()."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone
from decoding_reference import np_constrain
from scipy import stats

from chorus.config import ConfigError, DecodeConfig, load_config
from chorus.decoding.acceptance import speculative_accept
from chorus.decoding.constraints import Constraints
from chorus.decoding.filtering import filter_logits
from chorus.decoding.generate import generate
from chorus.decoding.verified import greedy_decode
from chorus.vocab import VocabLayout, num_audio_placeholders

CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                               "model.tie_embeddings=false"])
LAYOUT = VocabLayout.from_model_config(CFG.model)


def _np_filter(logits, top_k, top_p):
    """Loop reference: keep the top-k, then walk tokens by probability until top_p is reached."""
    out = np.array(logits, np.float64)
    for row in out.reshape(-1, out.shape[-1]):
        keep = np.ones(row.shape, bool)
        if 0 < top_k < row.size:
            keep &= row >= np.sort(row)[::-1][top_k - 1]
        if top_p < 1:
            masked = np.where(keep, row, -np.inf)
            probs = np.exp(masked - masked.max())
            probs /= probs.sum()
            mass, nucleus = 0.0, np.zeros(row.shape, bool)
            for idx in np.argsort(-masked, kind="stable"):
                if mass >= top_p:
                    break
                nucleus[idx] = True
                mass += probs[idx]
            keep &= nucleus
        row[~keep] = -np.inf
    return out


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (1, 1.0), (7, 1.0), (0, 0.6), (0, 1e-4),
                                         (10, 0.5), (3, 0.99)])
def test_filter_logits_matches_numpy_reference(top_k, top_p):
    logits = jax.random.normal(jax.random.key(top_k), (3, 4, 40)) * 2.0
    got = np.asarray(jax.jit(filter_logits, static_argnums=(1, 2))(logits, top_k, top_p))
    want = _np_filter(np.asarray(logits), top_k, top_p)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(got[np.isfinite(got)], np.asarray(logits)[np.isfinite(want)])
    kept = np.isfinite(got).sum(-1)
    assert kept.min() >= 1
    if top_k:
        assert kept.max() <= top_k


def test_speculative_sampling_preserves_the_target_distribution():
    """Toy: V=5, k=2 drafts from known q; the first two emitted tokens must be distributed as
    p(x1) p(x2 | x1), whatever q is (chi-square and total variation over 200k samples)."""
    v, n = 5, 200_000
    rng = np.random.default_rng(0)
    p0 = rng.dirichlet(np.ones(v))
    p1 = rng.dirichlet(np.ones(v), size=v)  # p(x2 | x1)
    p2 = rng.dirichlet(np.ones(v), size=(v, v))  # p(x3 | x1, x2): the bonus distribution
    q1 = rng.dirichlet(np.ones(v))
    q2 = rng.dirichlet(np.ones(v), size=v)  # the drafter conditions on its own first draft
    p0, p1, p2, q1, q2 = (jnp.asarray(x, jnp.float32) for x in (p0, p1, p2, q1, q2))

    @jax.jit
    def emit_two(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        d1 = jax.random.categorical(k1, jnp.log(q1), shape=(n,))
        d2 = jax.random.categorical(k2, jnp.log(q2[d1]))
        p_probs = jnp.stack([jnp.broadcast_to(p0, (n, v)), p1[d1], p2[d1, d2]], axis=1)
        q_probs = jnp.stack([jnp.broadcast_to(q1, (n, v)), q2[d1]], axis=1)
        a, nxt = speculative_accept(p_probs, q_probs, jnp.stack([d1, d2], 1), k3)
        x1 = jnp.where(a >= 1, d1, nxt)
        # One token out (a = 0): the next step's first token is p-distributed (induction).
        fresh = jax.random.categorical(k4, jnp.log(p1[x1]))
        x2 = jnp.where(a >= 2, d2, jnp.where(a == 1, nxt, fresh))
        return x1, x2, a

    x1, x2, a = (np.asarray(x) for x in emit_two(jax.random.key(1)))
    counts = np.bincount(x1 * v + x2, minlength=v * v)
    expected = n * (np.asarray(p0)[:, None] * np.asarray(p1)).reshape(-1)
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    assert 0.5 * np.abs(counts / n - expected / n).sum() < 0.01
    # The first draft is accepted with probability sum_x min(p0(x), q1(x)).
    alpha = np.minimum(np.asarray(p0), np.asarray(q1)).sum()
    assert abs((a >= 1).mean() - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / n)
    assert 0 < (a == 0).mean() and 0 < (a == 2).mean()  # every path is exercised


# ----------------------------------------------------------------------------- generate

B, P, G, MAX_NEW = 3, 30, 4, 10
SETTINGS = DecodeConfig(max_new_tokens=MAX_NEW, temperature=0.8, top_k=50, top_p=0.9)


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG, 0)  # shared by the decoding test modules


def _audio_prompts():
    """Prompts with an audio clip: <asr> <audio>x19 then text, ragged lengths."""
    rng = np.random.default_rng(0)
    mel_frames, valid = 160, np.array([150, 120, 150])
    num_ph = [num_audio_placeholders(int(f)) for f in valid]
    lengths = np.array([25, 22, 28], np.int32)
    prompts = np.full((B, P), LAYOUT.pad_id, np.int32)
    for b in range(B):
        prompts[b, :lengths[b]] = rng.integers(0, LAYOUT.text_size, size=lengths[b])
        prompts[b, 0] = LAYOUT.special("<asr>")
        prompts[b, 1:1 + num_ph[b]] = LAYOUT.audio_placeholder_id
    features = rng.normal(size=(B, 1, mel_frames, CFG.audio.n_mels)).astype(np.float32)
    mask = np.arange(mel_frames)[None, None, :] < valid[:, None, None]
    return (jnp.asarray(prompts), jnp.asarray(lengths), jnp.asarray(features),
            jnp.asarray(mask))


@functools.partial(jax.jit, static_argnums=0)
def _score(model, params, tokens, audio, mask):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens), audio,
                       mask)["logits"]


def test_generate_logprobs_match_a_scoring_forward_with_audio(backbone):
    model, params = backbone
    prompts, lengths, audio, amask = _audio_prompts()
    stop = (int(LAYOUT.eos_id),)
    out = generate(model, params, prompts, lengths, jax.random.key(7), SETTINGS, num_samples=G,
                   stop_tokens=stop, audio_features=audio, audio_mask=amask)
    assert out.tokens.shape == (B * G, MAX_NEW)
    np.testing.assert_array_equal(out.prompt_index, np.repeat(np.arange(B), G))
    # Score prompt + completion with the training forward (audio spliced the same way).
    rows = np.asarray(out.prompt_index)
    seq = np.full((B * G, P + MAX_NEW), LAYOUT.pad_id, np.int32)
    for r in range(B * G):
        n = int(lengths[rows[r]])
        seq[r, :n] = np.asarray(prompts)[rows[r], :n]
        seq[r, n:n + MAX_NEW] = np.asarray(out.tokens)[r]
    logits = np.asarray(_score(model, params, jnp.asarray(seq), jnp.repeat(audio, G, 0),
                               jnp.repeat(amask, G, 0)))
    starts = np.asarray(lengths)[rows] - 1
    step_logits = logits[np.arange(B * G)[:, None], starts[:, None] + np.arange(MAX_NEW)]
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    log_softmax = lambda x: x - jax.nn.logsumexp(x, axis=-1, keepdims=True)
    policy = np.take_along_axis(np.asarray(log_softmax(step_logits)), tokens[..., None], -1)[..., 0]
    filtered = _np_filter(step_logits / SETTINGS.temperature, SETTINGS.top_k, SETTINGS.top_p)
    sampled = np.take_along_axis(np.asarray(log_softmax(filtered)), tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.policy_logprobs, policy * mask, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(out.logprobs, np.where(mask > 0, sampled, 0), atol=2e-4,
                               rtol=1e-4)
    # Masks: 1 up to and including the stop token (or all MAX_NEW), pad after.
    lengths_out = np.asarray(out.lengths)
    np.testing.assert_array_equal(mask, np.arange(MAX_NEW)[None] < lengths_out[:, None])
    for r in range(B * G):
        stops = np.flatnonzero(tokens[r, :lengths_out[r]] == stop[0])
        assert lengths_out[r] == (stops[0] + 1 if stops.size else MAX_NEW)
        assert np.all(tokens[r, lengths_out[r]:] == LAYOUT.pad_id)
    # Samples of one prompt differ from each other (they are independent draws).
    assert len({tuple(t) for t in tokens[:G]}) > 1


def test_generate_is_deterministic_given_the_rng(backbone):
    model, params = backbone
    prompts, lengths, audio, amask = _audio_prompts()
    run = lambda seed: generate(model, params, prompts, lengths, jax.random.key(seed), SETTINGS,
                                num_samples=G, stop_tokens=(int(LAYOUT.eos_id),),
                                audio_features=audio, audio_mask=amask)
    a, b, c = run(7), run(7), run(8)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.tokens, c.tokens)


def test_greedy_generate_equals_greedy_decode_for_every_sample(backbone):
    model, params = backbone
    # The shapes of test_decoding_verified.py (6 ASR-like prompts of width 9 with a 40-frame
    # clip, 12 new tokens), so greedy_decode compiles once per session.
    rng = np.random.default_rng(3)
    lengths = np.array([9, 1, 4, 6, 3, 8], np.int32)
    prompts = rng.integers(0, LAYOUT.text_size, size=(6, 9)).astype(np.int32)
    prompts[:, 0] = LAYOUT.special("<asr>")
    num_ph = np.clip(lengths - 2, 0, 5)
    for b in range(6):
        prompts[b, 1:1 + num_ph[b]] = LAYOUT.audio_placeholder_id
    audio = {"audio_features": jnp.asarray(rng.normal(size=(6, 1, 40, CFG.audio.n_mels)),
                                           jnp.float32),
             "audio_mask": jnp.asarray(np.arange(40)[None, None] < 8 * num_ph[:, None, None])}
    prompts, lengths = jnp.asarray(prompts), jnp.asarray(lengths)
    free = greedy_decode(model, params, prompts, lengths, max_new_tokens=12, stop_tokens=(),
                         **audio)
    stops = (int(free.tokens[1, 3]),)
    want = greedy_decode(model, params, prompts, lengths, max_new_tokens=12, stop_tokens=stops,
                         **audio)
    got = generate(model, params, prompts, lengths, jax.random.key(0),
                   DecodeConfig(max_new_tokens=12, temperature=0.0), num_samples=2,
                   stop_tokens=stops, **audio)
    np.testing.assert_array_equal(got.tokens, np.repeat(np.asarray(want.tokens), 2, axis=0))
    np.testing.assert_array_equal(got.lengths, np.repeat(np.asarray(want.lengths), 2))
    assert np.asarray(want.lengths).min() < 12  # the stop token matters
    np.testing.assert_array_equal(got.logprobs, 0.0)
    assert np.all(np.asarray(got.policy_logprobs)[np.asarray(got.mask) > 0] < 0)


# ----------------------------------------------------------------------------- constraints


@pytest.mark.parametrize("penalty,window,masked", [(1.0, 0, True), (2.5, 3, False),
                                                   (0.5, 6, True), (3.0, 40, True)])
def test_constraints_match_the_loop_reference(penalty, window, masked):
    b, s, v, n = 3, 4, 30, 12
    rng = np.random.default_rng(window)
    logits = rng.normal(size=(b, s, v)).astype(np.float32) * 2
    history = rng.integers(0, 6, size=(b, n)).astype(np.int32)  # few ids: many repeats
    positions = rng.integers(0, n + 1, size=(b, s)).astype(np.int32)
    allowed = rng.random((b, v)) < 0.5 if masked else None
    constraints = Constraints(None if allowed is None else jnp.asarray(allowed), penalty, window)
    got = np.asarray(jax.jit(constraints.__call__)(jnp.asarray(logits), jnp.asarray(history),
                                                   jnp.asarray(positions)))
    for i in range(b):
        for j in range(s):
            want = np_constrain(logits[i, j], history[i, :positions[i, j]],
                                None if allowed is None else allowed[i], penalty, window)
            np.testing.assert_allclose(got[i, j], want, rtol=1e-6)
    if window:
        assert not np.allclose(got[np.isfinite(got)], logits[np.isfinite(got)])


def test_constraint_settings_and_masks_are_checked():
    with pytest.raises(ConfigError, match=r"decode.repetition_penalty: expected a positive"):
        DecodeConfig(repetition_penalty=0.0, repetition_window=4)
    with pytest.raises(ConfigError, match=r"decode.repetition_window: expected a number >= 0"):
        DecodeConfig(repetition_window=-1)
    with pytest.raises(ConfigError, match=r"decode.repetition_window: expected > 0 when "
                                          r"decode.repetition_penalty=1.3"):
        DecodeConfig(repetition_penalty=1.3)
    settings = DecodeConfig()
    with pytest.raises(ValueError, match=r"allowed_ids: expected a bool mask of shape \(8,\) or "
                                         r"\(2, 8\) .* got \(7,\)"):
        Constraints.make(settings, np.ones(7, bool), 2, 8)
    with pytest.raises(ValueError, match=r"allowed_ids: expected dtype bool, got int64"):
        Constraints.make(settings, np.ones(8, np.int64), 2, 8)
    with pytest.raises(ValueError, match=r"at least one allowed id per row, got none in row\(s\) "
                                         r"\[1\]"):
        Constraints.make(settings, np.eye(2, 8, dtype=bool) * [[1], [0]] > 0, 2, 8)
    assert Constraints.make(settings, np.ones(8, bool), 2, 8).allowed.shape == (2, 8)


CONSTRAINED = DecodeConfig(max_new_tokens=MAX_NEW, temperature=1.3, top_k=5, top_p=0.9,
                           repetition_penalty=3.0, repetition_window=4)


def _constrained_allowed():
    """Per prompt: 10 text ids and eos (so rows can stop)."""
    rng = np.random.default_rng(1)
    allowed = np.zeros((B, LAYOUT.size), bool)
    for row in allowed:
        row[rng.choice(LAYOUT.text_size, size=10, replace=False)] = True
        row[LAYOUT.eos_id] = True
    return allowed


def test_generate_under_constraints_reports_the_sampled_and_the_policy_logprobs(backbone):
    """logprobs: the constrained + filtered distribution sampled from (loop references);
    policy_logprobs: the unconstrained temperature-1 policy, as a scoring forward gives."""
    model, params = backbone
    prompts, lengths, audio, amask = _audio_prompts()
    allowed = _constrained_allowed()
    out = generate(model, params, prompts, lengths, jax.random.key(3), CONSTRAINED,
                   num_samples=G, audio_features=audio, audio_mask=amask,
                   allowed_ids=allowed)
    rows = np.asarray(out.prompt_index)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    seq = np.full((B * G, P + MAX_NEW), LAYOUT.pad_id, np.int32)
    for r in range(B * G):
        n = int(lengths[rows[r]])
        seq[r, :n] = np.asarray(prompts)[rows[r], :n]
        seq[r, n:n + MAX_NEW] = tokens[r]
    logits = np.asarray(_score(model, params, jnp.asarray(seq), jnp.repeat(audio, G, 0),
                               jnp.repeat(amask, G, 0)))
    log_softmax = lambda x: np.asarray(x - jax.nn.logsumexp(x, axis=-1, keepdims=True))
    repeats = 0
    for r in range(B * G):
        assert allowed[rows[r]][tokens[r, :int(out.lengths[r])]].all()
        for t in range(int(out.lengths[r])):
            raw = logits[r, int(lengths[rows[r]]) - 1 + t]
            constrained = np_constrain(raw, tokens[r, :t], allowed[rows[r]],
                                       CONSTRAINED.repetition_penalty,
                                       CONSTRAINED.repetition_window)
            sampled = log_softmax(_np_filter(constrained / CONSTRAINED.temperature,
                                             CONSTRAINED.top_k, CONSTRAINED.top_p))
            np.testing.assert_allclose(out.logprobs[r, t], sampled[tokens[r, t]], atol=2e-4)
            np.testing.assert_allclose(out.policy_logprobs[r, t], log_softmax(raw)[tokens[r, t]],
                                       atol=2e-4)
            repeats += tokens[r, t] in tokens[r, max(0, t - 4):t]
    assert repeats > 0  # the penalty was exercised on ids that did come back
    np.testing.assert_array_equal(mask, np.arange(MAX_NEW)[None] < np.asarray(out.lengths)[:, None])


def test_speculative_sampling_never_emits_a_disallowed_id(backbone):
    """Random (mostly wrong) Medusa drafts under a mask: drafts outside it are rejected."""
    from chorus.decoding.verified import verified_decode
    from chorus.model.heads import MTPConfig, init_mtp_params

    model, params = backbone
    heads, hp, _ = init_mtp_params(CFG, MTPConfig("parallel", 2), jax.random.key(2))
    leaves, tree = jax.tree.flatten(hp)
    hp = tree.unflatten([0.2 * jax.random.normal(jax.random.key(i), x.shape)
                         for i, x in enumerate(leaves)])
    prompts, lengths, audio, amask = _audio_prompts()
    allowed = _constrained_allowed()
    settings = dataclasses.replace(CONSTRAINED, num_draft_tokens=2)
    out = verified_decode(model, params, heads, hp, prompts, lengths, settings,
                          rng=jax.random.key(5), audio_features=audio, audio_mask=amask,
                          allowed_ids=allowed)
    for r in range(B):
        assert allowed[r][np.asarray(out.tokens)[r, :int(out.lengths[r])]].all()
    # A draft the constrained target gives probability 0 is never accepted, whatever q says.
    p_probs = jnp.asarray([[[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]]] * 1000)
    q_probs = jnp.asarray([[[1.0, 0.0, 0.0]]] * 1000)
    a, nxt = speculative_accept(p_probs, q_probs, jnp.zeros((1000, 1), jnp.int32),
                                jax.random.key(0))
    assert not np.asarray(a).any() and np.all(np.asarray(nxt) > 0)
