"""Verified decoding with briefly trained MTP heads: non-trivial acceptance, exactness, and
speculative sampling matching the exact target distribution of the trained model."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decoding_reference import np_constrain
from scipy import stats

from chorus.config import DecodeConfig
from chorus.decoding.filtering import sampling_probs
from chorus.decoding.verified import decode_stats, greedy_decode, verified_decode
from chorus.model.heads import MTPConfig
from experiments.benchmarks.decoding import CONSTRAINED, toy_allowed_ids
from experiments.benchmarks.mtp_toy import TOY_CONFIG, ToyTask, train_toy

TASK = ToyTask()
K = 3


@pytest.fixture(scope="module")
def trained():
    model, params, head_sets, metrics = train_toy(
        TOY_CONFIG, (MTPConfig("parallel", K), MTPConfig("sequential", K)), TASK, steps=100)
    assert metrics["ce"] < 1.0  # the successor rule is learnt (jumps are 10 % noise)
    return model, params, dict(zip(("parallel", "sequential"), head_sets, strict=True))


@pytest.mark.parametrize("design", ["parallel", "sequential"])
def test_trained_heads_accept_often_and_output_equals_greedy(trained, design):
    model, params, head_sets = trained
    heads, hp = head_sets[design]
    prompts, lengths = TASK.prompts(np.random.default_rng(1), 8, 10, min_length=K)
    stop = (TASK.first_id + 5,)  # a symbol some rows reach within the budget, others not
    want = greedy_decode(model, params, prompts, lengths, max_new_tokens=24, stop_tokens=stop)
    got = verified_decode(model, params, heads, hp, prompts, lengths,
                          DecodeConfig(max_new_tokens=24, num_draft_tokens=K),
                          stop_tokens=stop)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    assert len(set(np.asarray(got.lengths).tolist())) > 1
    figures = decode_stats(got)
    assert figures["tokens_per_step"] > 1.5
    assert figures["forwards_per_token"] < 0.75


def _toy_mask(disallowed=CONSTRAINED["disallowed"]):
    """The toy's symbols (and eos) minus a few: the successor rule must route around them."""
    return toy_allowed_ids(TASK, TOY_CONFIG, disallowed)


@pytest.mark.parametrize("design", ["parallel", "sequential"])
def test_trained_verified_equals_greedy_under_a_mask_and_a_penalty(trained, design):
    """The drafts learnt the unconstrained successor rule; under a mask and a penalty the
    output still equals greedy decoding's under the same constraints."""
    model, params, head_sets = trained
    heads, hp = head_sets[design]
    prompts, lengths = TASK.prompts(np.random.default_rng(3), 8, 10, min_length=K)
    penalty, window = CONSTRAINED["repetition_penalty"], CONSTRAINED["repetition_window"]
    allowed = _toy_mask()
    kw = dict(max_new_tokens=40, stop_tokens=())
    want = greedy_decode(model, params, prompts, lengths, allowed_ids=allowed,
                         repetition_penalty=penalty, repetition_window=window, **kw)
    got = verified_decode(model, params, heads, hp, prompts, lengths,
                          DecodeConfig(max_new_tokens=40, num_draft_tokens=K,
                                       repetition_penalty=penalty, repetition_window=window),
                          stop_tokens=(), allowed_ids=allowed)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    masked = greedy_decode(model, params, prompts, lengths, allowed_ids=allowed, **kw)
    free = greedy_decode(model, params, prompts, lengths, **kw)
    assert not np.array_equal(masked.tokens, want.tokens)  # the penalty matters
    assert not np.array_equal(free.tokens, masked.tokens)  # the mask matters
    assert allowed[np.asarray(got.tokens)].all()
    assert decode_stats(got)["tokens_per_step"] > 1.2  # drafts under the mask still land


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens))["logits"]


@pytest.mark.parametrize("constrained", [False, True])
def test_speculative_sampling_matches_the_exact_distribution(trained, constrained):
    """First three sampled tokens vs their exact joint law under the filtered target
    (temperature 3, top-k 3, so 27 outcomes), computed by enumeration; constrained: the
    target is the masked and penalized distribution (loop reference), whose penalty history
    for x3 is (x1, x2). Sequential heads: their drafts are sampled inside the MTP chain
    (speculative_accept itself is design-free and has its own test in
    test_decoding_sampling.py)."""
    model, params, head_sets = trained
    heads, hp = head_sets["sequential"]
    settings = DecodeConfig(max_new_tokens=3, temperature=3.0, top_k=3, num_draft_tokens=K,
                            repetition_penalty=0.3 if constrained else 1.0,
                            repetition_window=2 if constrained else 0)
    n = 4000
    prompt, _ = TASK.prompts(np.random.default_rng(2), 1, 6, min_length=6)
    # Constrained: the likeliest first token is disallowed.
    allowed = _toy_mask((int(TASK.successor[prompt[0, -1] - TASK.first_id]),))
    allowed = allowed if constrained else None
    out = verified_decode(model, params, heads, hp, jnp.asarray(np.repeat(prompt, n, 0)),
                          jnp.full((n,), 6, jnp.int32), settings, stop_tokens=(),
                          rng=jax.random.key(4), allowed_ids=allowed)

    def probs(lg, history):
        lg = np.asarray(lg)
        if constrained:
            lg = np_constrain(lg, history, allowed, settings.repetition_penalty,
                              settings.repetition_window)
        return np.asarray(sampling_probs(lg, settings.temperature, settings.top_k))

    # Exact law: p(x1) p(x2 | x1) p(x3 | x1, x2) by scoring every continuation in the support.
    p1 = probs(_logits(model, params, jnp.asarray(prompt))[0, -1], [])
    first = np.flatnonzero(p1)
    pairs = [(a, b) for a in first for b in range(p1.size)]
    seqs = np.array([np.r_[prompt[0], a, b] for a, b in pairs], np.int32)
    table = {}
    logits = np.asarray(_logits(model, params, jnp.asarray(seqs)))
    for row, (a, b) in enumerate(pairs):
        p2 = probs(logits[row, 6], [a])
        if p2[b] > 0:
            p3 = probs(logits[row, 7], [a, b])
            for c in np.flatnonzero(p3):
                table[(a, b, c)] = float(p1[a]) * float(p2[b]) * float(p3[c])
    assert len(table) == 27 and abs(sum(table.values()) - 1) < 1e-4
    samples = [tuple(t) for t in np.asarray(out.tokens)]
    assert all(s in table for s in samples)  # never outside the filtered support
    cells = sorted(table, key=table.get, reverse=True)
    expected = np.array([n * table[c] for c in cells])
    observed = np.array([samples.count(c) for c in cells])
    rare = expected < 5  # pooled into one cell (sorted, so they are the tail)
    if rare.any():
        observed = np.r_[observed[~rare], observed[rare].sum()]
        expected = np.r_[expected[~rare], expected[rare].sum()]
    expected *= n / expected.sum()  # exact to float64 rounding (the law sums to 1 +- 1e-6)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # Both paths of the acceptance rule happen: some drafts accepted, some rejected.
    accepted = np.asarray(out.num_accepted)
    assert 0 < accepted.mean() < np.asarray(out.num_forwards).mean() * K
