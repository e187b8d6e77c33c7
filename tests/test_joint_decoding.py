"""Joint CTC/attention decoding (chorus.decoding.joint): prefix scores against brute force over
every alignment, the fused choice against an uncached loop reference, verified = greedy."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone
from decoding_reference import (
    OracleDrafter,
    np_ctc_prefix,
    np_ctc_prefix_logprob,
    np_ctc_sequence_logprob,
)

from chorus.config import DecodeConfig, load_config
from chorus.decoding.beam import beam_search
from chorus.decoding.joint import (
    INFEASIBLE,
    ctc_frame_logprobs,
    ctc_prefix_scorer,
    empty_prefix,
    extend,
    prefix_logprob,
    sequence_logprob,
)
from chorus.decoding.verified import decode_with_drafter, greedy_decode, verified_decode
from chorus.model.heads import MTPConfig, init_mtp_params
from chorus.vocab import VocabLayout


def _collapse(path):
    out, prev = [], 0
    for c in path:
        if c != 0 and c != prev:
            out.append(c)
        prev = c
    return tuple(out)


def _brute(log_probs):
    """{collapsed labels: log-prob} over every path of the frames, and the paths themselves."""
    lp = np.asarray(log_probs, np.float64)
    paths = list(itertools.product(range(lp.shape[1]), repeat=len(lp)))
    scores = np.array([lp[np.arange(len(lp)), p].sum() for p in paths])
    return paths, scores


def _logsum(x):
    x = np.asarray(x, np.float64)
    return -np.inf if x.size == 0 else float(np.logaddexp.reduce(x))


RNG = np.random.default_rng(0)
F, C = 5, 3  # 3^5 = 243 paths
LOGITS = RNG.normal(size=(1, F, C)) * 2
PREFIXES = [(), (1,), (2,), (1, 1), (1, 2), (2, 1, 2), (1, 1, 2)]


@pytest.mark.parametrize("valid", [F, 3])
def test_prefix_variables_and_scores_equal_brute_force_over_every_alignment(valid):
    mask = np.arange(F)[None] < valid
    lp = np.asarray(ctc_frame_logprobs(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(mask)),
                    np.float64)
    # Renormalized in float64, so the paths' probabilities sum to 1 as the recursions assume.
    lp = lp - np.logaddexp.reduce(lp, axis=-1, keepdims=True)
    paths, scores = _brute(lp[0, :valid])
    collapsed = [_collapse(p) for p in paths]
    for prefix in PREFIXES:
        state = empty_prefix(jnp.asarray(lp))
        for c in prefix:
            state = extend(state, jnp.asarray(lp), jnp.array([c]))
        # n / b at frame t: paths over frames 0..t spelling the prefix, ending in a label / blank
        for t in range(valid):
            sub = list(itertools.product(range(C), repeat=t + 1))
            sc = [lp[0, np.arange(t + 1), p].sum() for p in sub]
            want_n = _logsum([s for p, s in zip(sub, sc, strict=True)
                              if _collapse(p) == prefix and p[-1] != 0])
            want_b = _logsum([s for p, s in zip(sub, sc, strict=True)
                              if _collapse(p) == prefix and p[-1] == 0])
            np.testing.assert_allclose(np.asarray(state.n)[0, t + 1], want_n, rtol=1e-5,
                                       atol=1e-5)
            np.testing.assert_allclose(np.asarray(state.b)[0, t + 1], want_b, rtol=1e-5,
                                       atol=1e-5)
        want = _logsum([s for y, s in zip(collapsed, scores, strict=True) if y == prefix])
        np.testing.assert_allclose(float(sequence_logprob(state)[0]), want, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(np_ctc_sequence_logprob(lp[0, :valid], list(prefix)), want,
                                   rtol=1e-9)
        for c in (1, 2):
            want = _logsum([s for y, s in zip(collapsed, scores, strict=True)
                            if y[:len(prefix) + 1] == prefix + (c,)])
            got = prefix_logprob(jax.tree.map(lambda x: x[:, None], state), jnp.asarray(lp),
                                 jnp.array([[[c]]]))
            np.testing.assert_allclose(float(got[0, 0, 0]), want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(np_ctc_prefix_logprob(lp[0, :valid], list(prefix), c),
                                       want, rtol=1e-9)


def test_the_loop_reference_matches_the_scan_on_long_peaky_frames():
    """60 frames, 9 classes, peaky logits: the associative scan keeps log-space precision."""
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(RNG.normal(size=(1, 60, 9)) * 6), -1))
    prefix = [3, 3, 5, 1, 8, 2]
    state = empty_prefix(jnp.asarray(lp))
    for c in prefix:
        state = extend(state, jnp.asarray(lp), jnp.array([c]))
    n, b = np_ctc_prefix(lp[0], prefix)
    finite = np.isfinite(n)
    np.testing.assert_allclose(np.asarray(state.n)[0, 1:][finite], n[finite], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.b)[0, 1:][np.isfinite(b)], b[np.isfinite(b)],
                               rtol=1e-5)


# Decoding: a random backbone and random (or peaked) CTC logits of each row's "audio".
CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                               "model.tie_embeddings=false"])
LAYOUT = VocabLayout.from_model_config(CFG.model)
B, P, MAX_NEW, K, FRAMES = 4, 6, 10, 3, 12
LENGTHS = np.array([6, 1, 3, 5], np.int32)
FRAME_LENGTHS = np.array([12, 7, 10, 4])


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG, 0)


def _prompts():
    prompts = RNG.integers(0, LAYOUT.text_size, size=(B, P)).astype(np.int32)
    prompts[np.arange(P)[None, :] >= LENGTHS[:, None]] = LAYOUT.pad_id
    return jnp.asarray(prompts), jnp.asarray(LENGTHS)


def _ctc(scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, FRAMES, LAYOUT.text_size + 1)) * scale
    mask = np.arange(FRAMES)[None] < FRAME_LENGTHS[:, None]
    return jnp.asarray(logits, jnp.float32), jnp.asarray(mask)


@functools.partial(jax.jit, static_argnums=0)
def _full_logits(model, params, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens))["logits"]


def _naive_joint_greedy(model, params, prompts, lengths, ctc_logits, mask, weight, candidates,
                        fired):
    """Joint greedy by re-running the full forward each step and scoring the decoder's top
    candidates and the row's `fired` CTC ids with the float64 loop reference of the CTC prefix
    probabilities."""
    lp = np.asarray(ctc_frame_logprobs(ctc_logits, mask), np.float64)
    # the fired ids: the text classes with the highest posterior on any valid frame
    peaks = [lp[r, :FRAME_LENGTHS[r], 1:].max(axis=0) for r in range(B)]
    fired_ids = [np.argsort(-p, kind="stable")[:fired] for p in peaks]
    seq = np.full((B, P + MAX_NEW), LAYOUT.pad_id, np.int32)
    seq[:, :P] = np.asarray(prompts)
    out = np.full((B, MAX_NEW), LAYOUT.pad_id, np.int32)
    done = np.zeros(B, bool)
    for t in range(MAX_NEW):
        logits = np.asarray(_full_logits(model, params, jnp.asarray(seq)), np.float64)
        for r in range(B):
            if done[r]:
                continue
            step = logits[r, lengths[r] + t - 1]
            log_p = step - np.logaddexp.reduce(step)
            frames = lp[r, :FRAME_LENGTHS[r]]
            prefix = [int(x) + 1 for x in out[r, :t] if x < LAYOUT.text_size]
            best, best_score = None, -np.inf
            pool = {int(v) for v in np.argsort(-log_p, kind="stable")[:candidates]}
            for v in sorted(pool | {int(v) for v in fired_ids[r]}):
                if v < LAYOUT.text_size:
                    ctc = np_ctc_prefix_logprob(frames, prefix, int(v) + 1)
                elif v == LAYOUT.eos_id:
                    ctc = np_ctc_sequence_logprob(frames, prefix)
                else:
                    ctc = -np.inf
                score = (1 - weight) * log_p[v] + weight * max(ctc, INFEASIBLE)
                if score > best_score:
                    best, best_score = int(v), score
            out[r, t] = best
            seq[r, lengths[r] + t] = best
            done[r] = best == LAYOUT.eos_id
    return out


@pytest.mark.parametrize("weight,fired", [(0.3, 0), (0.7, 6)])
def test_joint_greedy_matches_the_uncached_loop_reference(backbone, weight, fired):
    model, params = backbone
    prompts, lengths = _prompts()
    ctc_logits, mask = _ctc(3.0, 1)
    scorer = ctc_prefix_scorer(ctc_logits, mask, weight=weight, candidates=8,
                               end_id=LAYOUT.eos_id, ctc_candidates=fired)
    got = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW, scorer=scorer)
    want = _naive_joint_greedy(model, params, prompts, np.asarray(lengths), ctc_logits, mask,
                               weight, 8, fired)
    np.testing.assert_array_equal(got.tokens, want)
    plain = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW)
    assert not np.array_equal(got.tokens, plain.tokens)  # the CTC term changed choices


def test_weight_zero_is_plain_greedy(backbone):
    model, params = backbone
    prompts, lengths = _prompts()
    ctc_logits, mask = _ctc(3.0, 2)
    scorer = ctc_prefix_scorer(ctc_logits, mask, weight=0.0, candidates=4,
                               end_id=LAYOUT.eos_id)
    got = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW, scorer=scorer)
    plain = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW)
    np.testing.assert_array_equal(got.tokens, plain.tokens)


@pytest.mark.parametrize("candidates,fired", [(LAYOUT.size, 0), (1, 4)])
def test_a_confident_ctc_head_spells_its_transcript_through_a_random_decoder(backbone,
                                                                            candidates, fired):
    """Peaked CTC frames spelling a known label sequence, w = 0.9, every id a candidate (or
    only the decoder's best and the CTC head's 4 fired ids): the random decoder's output is
    that sequence (then the end token)."""
    model, params = backbone
    prompts, lengths = _prompts()
    words = RNG.integers(0, LAYOUT.text_size, size=(B, 4))
    words[:, 2] = words[:, 1]  # a repeat: CTC needs a blank between the two
    frames = np.zeros((B, FRAMES), np.int64)  # class per frame (0 = blank)
    for r in range(B):
        frames[r, 1:8:2] = words[r] + 1
    logits = np.full((B, FRAMES, LAYOUT.text_size + 1), -8.0, np.float32)
    logits[np.arange(B)[:, None], np.arange(FRAMES)[None], frames] = 8.0
    mask = jnp.ones((B, FRAMES), bool)
    scorer = ctc_prefix_scorer(jnp.asarray(logits), mask, weight=0.9, candidates=candidates,
                               end_id=LAYOUT.eos_id, ctc_candidates=fired)
    for r in range(B * bool(fired)):  # the fired ids are the row's spelled labels
        assert set(np.asarray(scorer.fired[r]).tolist()) >= set(words[r].tolist())
    got = np.asarray(greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                                   scorer=scorer).tokens)
    np.testing.assert_array_equal(got[:, :4], words)
    if not fired:  # with one decoder candidate, the end token is a candidate only by chance
        assert (got[:, 4] == LAYOUT.eos_id).all()


def test_verified_joint_decoding_is_token_identical_to_joint_greedy(backbone):
    model, params = backbone
    prompts, lengths = _prompts()
    ctc_logits, mask = _ctc(3.0, 3)
    scorer = ctc_prefix_scorer(ctc_logits, mask, weight=0.5, candidates=8,
                               end_id=LAYOUT.eos_id)
    long = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW + K,
                         stop_tokens=(), scorer=scorer)
    want = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                         scorer=scorer)
    settings = DecodeConfig(max_new_tokens=MAX_NEW, num_draft_tokens=K)
    # Drafts that are right most of the time: long accepted runs, every length 0..k.
    wrong = np.random.default_rng(4).random((B, MAX_NEW + K)) < 0.3
    drafter = OracleDrafter(long.tokens, jnp.asarray(wrong), K, LAYOUT.text_size)
    got = decode_with_drafter(model, params, drafter, prompts, lengths, settings,
                              scorer=scorer)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    assert int(np.sum(got.num_accepted)) > 0
    for design, seed in (("parallel", 5), ("sequential", 6)):
        heads, hp, _ = init_mtp_params(CFG, MTPConfig(design, K), jax.random.key(seed))
        leaves, tree = jax.tree.flatten(hp)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        hp = tree.unflatten([x + 0.2 * jax.random.normal(k, x.shape)
                             for k, x in zip(keys, leaves, strict=True)])
        got = verified_decode(model, params, heads, hp, prompts, lengths, settings,
                              scorer=scorer)
        np.testing.assert_array_equal(got.tokens, want.tokens, err_msg=design)


def test_bad_scorer_settings_are_refused():
    logits, mask = _ctc(1.0, 0)
    with pytest.raises(ValueError, match="weight"):
        ctc_prefix_scorer(logits, mask, weight=1.5, candidates=4, end_id=LAYOUT.eos_id)
    with pytest.raises(ValueError, match="candidates"):
        ctc_prefix_scorer(logits, mask, weight=0.5, candidates=0, end_id=LAYOUT.eos_id)
    with pytest.raises(ValueError, match="frame_mask"):
        ctc_prefix_scorer(logits, mask[:, :3], weight=0.5, candidates=4, end_id=LAYOUT.eos_id)


ALLOWED = (7, 11, LAYOUT.eos_id)  # two text ids and the end token
L = 3
FULL_WIDTH = 2 ** (L - 1) * len(ALLOWED)  # every candidate of every step ranks in the top W


def test_a_full_width_joint_beam_finds_the_brute_force_best_and_n_best(backbone):
    """Every sequence over two text ids (+ end) up to 3 tokens, scored by brute force:
    (1 - w) * its decoder log-prob (uncached forward, the allowed ids only) + w * log p_ctc of
    its text when it ends (log psi when max_new_tokens cut it) - the beam's best and n-best."""
    model, params = backbone
    prompts, lengths = _prompts()
    ctc_logits, mask = _ctc(2.0, 7)
    weight = 0.6
    allowed = np.isin(np.arange(LAYOUT.size), ALLOWED)
    scorer = ctc_prefix_scorer(ctc_logits, mask, weight=weight, candidates=len(ALLOWED),
                               end_id=LAYOUT.eos_id)
    settings = DecodeConfig(max_new_tokens=L, beam_width=FULL_WIDTH)
    beam = beam_search(model, params, prompts, lengths, settings, allowed_ids=jnp.asarray(allowed),
                       nbest=True, scorer=scorer)
    text = [t for t in ALLOWED if t != LAYOUT.eos_id]
    seqs = [(*p, LAYOUT.eos_id) for n in range(L) for p in itertools.product(text, repeat=n)]
    seqs += list(itertools.product(text, repeat=L))
    lp = np.asarray(ctc_frame_logprobs(ctc_logits, mask), np.float64)
    for r in range(B):
        tokens = np.full((len(seqs), P + L), LAYOUT.pad_id, np.int32)
        for i, s in enumerate(seqs):
            tokens[i, :LENGTHS[r]] = np.asarray(prompts)[r, :LENGTHS[r]]
            tokens[i, LENGTHS[r]:LENGTHS[r] + len(s)] = s
        logits = np.asarray(_full_logits(model, params, jnp.asarray(tokens)), np.float64)
        frames = lp[r, :FRAME_LENGTHS[r]]
        scored = []
        for i, s in enumerate(seqs):
            dec = 0.0
            for j, tok in enumerate(s):
                step = np.where(allowed, logits[i, LENGTHS[r] - 1 + j], -np.inf)
                dec += step[tok] - np.logaddexp.reduce(step[allowed])
            labels = [t + 1 for t in s if t != LAYOUT.eos_id]
            ctc = (np_ctc_sequence_logprob(frames, labels) if s[-1] == LAYOUT.eos_id
                   else np_ctc_prefix_logprob(frames, labels[:-1], labels[-1]))
            scored.append(((1 - weight) * dec + weight * max(ctc, INFEASIBLE), s))
        scored.sort(key=lambda x: -x[0])
        assert scored[0][0] - scored[1][0] > 1e-3  # no near-tie decides the best
        n = int(beam.lengths[r])
        assert tuple(np.asarray(beam.tokens[r, :n]).tolist()) == scored[0][1]
        np.testing.assert_allclose(np.asarray(beam.nbest_scores[r]),
                                   [x[0] for x in scored[:FULL_WIDTH]], atol=1e-4, rtol=0)


def test_a_width_one_joint_beam_is_joint_greedy(backbone):
    model, params = backbone
    prompts, lengths = _prompts()
    ctc_logits, mask = _ctc(3.0, 8)
    scorer = ctc_prefix_scorer(ctc_logits, mask, weight=0.6, candidates=8,
                               end_id=LAYOUT.eos_id, ctc_candidates=4)
    greedy = greedy_decode(model, params, prompts, lengths, max_new_tokens=MAX_NEW,
                           scorer=scorer)
    beam = beam_search(model, params, prompts, lengths, DecodeConfig(max_new_tokens=MAX_NEW),
                       scorer=scorer)
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
