"""Backbone correctness: shapes, causality, RoPE, KV cache, window rollback, audio splice."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus.config import load_config
from chorus.model import UnifiedAudioLM, example_batch, init_cache, init_params, splice_audio
from chorus.model.layers import apply_rope
from chorus.vocab import VocabLayout, num_audio_placeholders

CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1"])
LAYOUT = VocabLayout.from_model_config(CFG.model)


@pytest.fixture(scope="module")
def model_and_params():
    model, params, _ = init_params(CFG, jax.random.key(0))
    return model, params


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, tokens, audio=None, mask=None):
    b, length = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(length), (b, length))
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens), audio,
                       mask)


@functools.partial(jax.jit, static_argnums=0)
def _prefill(model, params, tokens, lengths, cache):
    return model.apply({"params": params}, tokens, lengths, cache, method=UnifiedAudioLM.prefill)


@functools.partial(jax.jit, static_argnums=0)
def _decode(model, params, tokens, cache):
    return model.apply({"params": params}, tokens, cache, method=UnifiedAudioLM.decode)


def _random_tokens(seed, shape):
    return jax.random.randint(jax.random.key(seed), shape, 0, LAYOUT.text_size)


def test_forward_shapes(model_and_params):
    model, params = model_and_params
    batch = example_batch(CFG, 2, 24, num_clips=2, mel_frames=64)
    out = model.apply({"params": params}, batch["tokens"], batch["positions"],
                      batch["segment_ids"], batch["audio_features"], batch["audio_mask"])
    assert out["logits"].shape == (2, 24, LAYOUT.size)
    assert out["logits"].dtype == jnp.float32
    assert out["hidden"].shape == (2, 24, CFG.model.d_model)


def test_causality(model_and_params):
    model, params = model_and_params
    tokens = _random_tokens(1, (1, 20))
    changed = tokens.at[0, 12].set((tokens[0, 12] + 1) % LAYOUT.text_size)
    a = _forward(model, params, tokens)["logits"]
    b = _forward(model, params, changed)["logits"]
    np.testing.assert_allclose(a[:, :12], b[:, :12], rtol=0, atol=1e-6)
    assert not np.allclose(a[:, 12:], b[:, 12:], atol=1e-4)


def test_rope_depends_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

    def score(m, n):
        qm = apply_rope(q, jnp.array([[m]]), 10_000.0)
        kn = apply_rope(k, jnp.array([[n]]), 10_000.0)
        return float(jnp.sum(qm * kn))

    assert score(5, 2) == pytest.approx(score(105, 102), rel=1e-5)
    assert score(0, 0) == pytest.approx(float(jnp.sum(q * k)), rel=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)


def test_kv_cache_decode_equals_full_forward(model_and_params):
    """Ragged prompts: prefill, then one token at a time; logits match the full forward."""
    model, params = model_and_params
    tokens = _random_tokens(2, (2, 16))
    lengths = jnp.array([6, 9])
    full = _forward(model, params, tokens)["logits"]
    cache = init_cache(CFG, 2, 32)
    logits, _, cache = _prefill(model, params, tokens[:, :9], lengths, cache)
    for b in range(2):
        np.testing.assert_allclose(logits[b, lengths[b] - 1], full[b, lengths[b] - 1],
                                   atol=1e-4, rtol=1e-4)
    for _ in range(5):
        nxt = jnp.take_along_axis(tokens, cache.lengths[:, None], axis=1)
        pos = cache.lengths
        step_logits, _, cache = _decode(model, params, nxt, cache)
        want = jnp.take_along_axis(full, pos[:, None, None], axis=1)[:, 0]
        np.testing.assert_allclose(step_logits[:, 0], want, atol=1e-4, rtol=1e-4)


def test_window_write_and_rollback_equal_fresh_decode(model_and_params):
    model, params = model_and_params
    tokens = _random_tokens(3, (2, 12))
    prompt_len = jnp.array([5, 7])
    cache0 = init_cache(CFG, 2, 32)
    _, _, cache = _prefill(model, params, tokens[:, :7], prompt_len, cache0)
    window = _random_tokens(4, (2, 4))
    _, _, after = _decode(model, params, window, cache)
    np.testing.assert_array_equal(after.lengths, prompt_len + 4)
    # Accept 1 draft in row 0 and 3 in row 1: roll back to prompt + accepted.
    accepted = jnp.array([1, 3])
    rolled = after.replace(lengths=prompt_len + accepted)
    follow = _random_tokens(5, (2, 2))
    got, _, _ = _decode(model, params, follow, rolled)
    for b in range(2):
        kept = jnp.concatenate([tokens[b, : prompt_len[b]], window[b, : accepted[b]],
                                follow[b]])
        fresh = _forward(model, params, kept[None])["logits"][0, -2:]
        np.testing.assert_allclose(got[b], fresh, atol=1e-4, rtol=1e-4)


def _splice_loop(embeds, tokens, placeholder, frames, mask):
    out = np.array(embeds)
    for b in range(tokens.shape[0]):
        valid = [frames[b, a, f] for a in range(frames.shape[1]) for f in range(frames.shape[2])
                 if mask[b, a, f]]
        k = 0
        for t in range(tokens.shape[1]):
            if tokens[b, t] == placeholder:
                out[b, t] = valid[k]
                k += 1
    return out


def test_splice_puts_frame_k_at_placeholder_k():
    rng = np.random.default_rng(0)
    b, length, a, f, d = 3, 30, 2, 6, 4
    frames = rng.normal(size=(b, a, f, d)).astype(np.float32)
    valid_counts = [(3, 4), (6, 0), (2, 2)]
    mask = np.zeros((b, a, f), bool)
    tokens = rng.integers(0, 100, size=(b, length))
    for i, counts in enumerate(valid_counts):
        for j, c in enumerate(counts):
            mask[i, j, :c] = True
        where = rng.choice(length, size=sum(counts), replace=False)
        tokens[i, where] = 999
    embeds = rng.normal(size=(b, length, d)).astype(np.float32)
    merged, excess = splice_audio(jnp.asarray(embeds), jnp.asarray(tokens), 999,
                                  jnp.asarray(frames), jnp.asarray(mask))
    np.testing.assert_array_equal(merged, _splice_loop(embeds, tokens, 999, frames, mask))
    np.testing.assert_array_equal(excess, 0)


def test_audio_placeholders_match_encoder_frames_and_padding_is_invisible(model_and_params):
    """A clip's adaptor frames do not depend on how much padding follows it."""
    model, params = model_and_params
    valid = 150
    assert num_audio_placeholders(valid) == 19
    mel = jax.random.normal(jax.random.key(7), (1, 1, 160, CFG.audio.n_mels))
    mask = jnp.arange(160)[None, None, :] < valid
    padded = jnp.concatenate([mel, jax.random.normal(jax.random.key(8), (1, 1, 80, 128))], 2)
    padded_mask = jnp.arange(240)[None, None, :] < valid
    tokens = jnp.full((1, 24), 3).at[0, 2:21].set(LAYOUT.audio_placeholder_id)
    a = _forward(model, params, tokens, mel, mask)
    b = _forward(model, params, tokens, padded, padded_mask)
    assert int(a["audio_placeholder_excess"][0]) == 0
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-4, rtol=1e-4)


def test_unscanned_layers_match_scanned():
    cfg = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=1",
                                   "model.scan_layers=false", "model.remat_policy=full"])
    model, params, _ = init_params(cfg, jax.random.key(0))
    tokens = _random_tokens(9, (1, 10))
    out = _forward(model, params, tokens)
    assert out["logits"].shape == (1, 10, LAYOUT.size)
    assert "layers_1" in params["decoder"]


def test_chunked_causal_encoder_ignores_future_chunks():
    """Streaming mode: a frame's encoding depends on its own and earlier chunks only."""
    from chorus.model.audio_encoder import AudioEncoder

    cfg = load_config("cpu-tiny", ["audio.num_layers=1", "audio.chunk_size=4"]).audio
    enc = AudioEncoder(cfg, out_dim=32)
    mel = jax.random.normal(jax.random.key(0), (1, 64, cfg.n_mels))
    mask = jnp.ones((1, 64), bool)
    params = enc.init(jax.random.key(1), mel, mask)
    run = jax.jit(lambda p, m: enc.apply(p, m, mask)[0])
    base = run(params, mel)
    # Mel frames >= 48 -> encoder frames >= 12 (chunk 3 onward) -> adaptor frames >= 6.
    changed = run(params, mel.at[:, 48:].set(3.0))
    np.testing.assert_allclose(base[:, :6], changed[:, :6], atol=1e-5)
    assert not np.allclose(base[:, 6:], changed[:, 6:], atol=1e-3)
