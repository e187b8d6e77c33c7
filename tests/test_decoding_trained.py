"""Verified decoding with briefly trained MTP heads: non-trivial acceptance, exactness, and
speculative sampling matching the exact target distribution of the trained model."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from chorus.config import DecodeConfig
from chorus.decoding.filtering import sampling_probs
from chorus.decoding.toy import TOY_CONFIG, ToyTask, train_toy
from chorus.decoding.verified import decode_stats, greedy_decode, verified_decode
from chorus.model.heads import MTPConfig

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


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens))["logits"]


def test_speculative_sampling_matches_the_exact_distribution(trained):
    """First three sampled tokens vs their exact joint law under the filtered target
    (temperature 3, top-k 3, so 27 outcomes), computed by enumeration. Sequential heads:
    their drafts are sampled inside the MTP chain (speculative_accept itself is design-free
    and has its own test in test_decoding_sampling.py)."""
    model, params, head_sets = trained
    heads, hp = head_sets["sequential"]
    settings = DecodeConfig(max_new_tokens=3, temperature=3.0, top_k=3, num_draft_tokens=K)
    n = 4000
    prompt, _ = TASK.prompts(np.random.default_rng(2), 1, 6, min_length=6)
    out = verified_decode(model, params, heads, hp, jnp.asarray(np.repeat(prompt, n, 0)),
                          jnp.full((n,), 6, jnp.int32), settings, stop_tokens=(),
                          rng=jax.random.key(4))
    # Exact law: p(x1) p(x2 | x1) p(x3 | x1, x2) by scoring every continuation in the support.
    probs = lambda lg: np.asarray(sampling_probs(lg, settings.temperature, settings.top_k))
    p1 = probs(_logits(model, params, jnp.asarray(prompt))[0, -1])
    first = np.flatnonzero(p1)
    seqs = np.array([np.r_[prompt[0], a, b] for a in first for b in range(p1.size)],
                    np.int32)
    table = {}
    logits = _logits(model, params, jnp.asarray(seqs))
    p2 = probs(logits[:, 6])
    p3 = probs(logits[:, 7])
    for row, (a, b) in enumerate((a, b) for a in first for b in range(p1.size)):
        if p2[row][b] > 0:
            for c in np.flatnonzero(p3[row]):
                table[(a, b, c)] = float(p1[a]) * float(p2[row][b]) * float(p3[row][c])
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
