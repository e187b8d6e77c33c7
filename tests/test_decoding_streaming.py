"""Streaming input: the chunked-causal encoder run chunk by chunk, and `UnifiedAudioLM.extend`
(audio streamed into the KV cache, a conversation continued after decoding) against one full
forward of the whole sequence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone

from chorus.config import AudioEncoderConfig, apply_overrides, load_config
from chorus.decoding.verified import greedy_decode, uncached_tokens
from chorus.model import UnifiedAudioLM, init_cache
from chorus.model.audio_encoder import init_stream_state, stream_output_frames
from chorus.model.streaming_encoder import StreamingEncoder
from chorus.vocab import VocabLayout, num_audio_placeholders

CFG = load_config("cpu-tiny", ["model.num_layers=2", "audio.num_layers=2",
                               "audio.chunk_size=4", "model.tie_embeddings=false"])
LAYOUT = VocabLayout.from_model_config(CFG.model)
B, T = 3, 96  # three rows of up to 96 log-mel frames (0.96 s)
VALID = np.array([96, 61, 40])  # ragged: rows end their audio at different pushes


def _model(chunk_size: int) -> UnifiedAudioLM:
    """The chunk size changes the masks, not the parameters: one param set serves all."""
    return UnifiedAudioLM(apply_overrides(CFG, {"audio.chunk_size": chunk_size}))


@pytest.fixture(scope="module")
def backbone():
    return random_backbone(CFG, 0)


def _clip(seed, frames=T, valid=VALID):
    mel = jax.random.normal(jax.random.key(seed), (B, frames, CFG.audio.n_mels)) * 3.0 - 8.0
    return mel, jnp.arange(frames)[None, :] < jnp.asarray(valid)[:, None]


def _stream(model, params, mel, mask, push):
    """Pushes the clip `push` mel frames at a time; returns each push's frames + mask."""
    stream = StreamingEncoder(model, params, B)
    pieces = [stream.push(mel[:, i:i + push], mask[:, i:i + push])
              for i in range(0, mel.shape[1], push)]
    return pieces + [stream.flush()]


@pytest.mark.parametrize("chunk_size,push", [(4, 8), (1, 8), (3, 8), (4, 24), (3, 40)])
def test_streamed_encoder_frames_equal_the_full_encoder(backbone, chunk_size, push):
    _, params = backbone
    model = _model(chunk_size)
    mel, mask = _clip(1)
    full, full_mask = model.apply({"params": params}, mel[:, None], mask[:, None],
                                  method=UnifiedAudioLM.encode_audio)
    pieces = _stream(model, params, mel, mask, push)
    assert pieces[0][0].shape[1] == stream_output_frames(model.config.audio, push)
    for b in range(B):
        want = np.asarray(full[b, 0])[np.asarray(full_mask[b, 0])]
        got = np.concatenate([np.asarray(f[b])[np.asarray(m[b])] for f, m in pieces])
        assert want.shape == (num_audio_placeholders(int(VALID[b])), CFG.model.d_model)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # A frame is final only when its chunk closed: with chunks of 4 encoder frames (2 adaptor
    # frames) and 80 ms pushes (1 adaptor frame), frames come out in pairs every other push.
    if (chunk_size, push) == (4, 8):
        counts = [int(np.asarray(m[0]).sum()) for _, m in pieces]
        assert counts == [0, 2] * 6 + [0]


@functools.partial(jax.jit, static_argnums=0)
def _full(model, params, tokens, audio, audio_mask):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    return model.apply({"params": params}, tokens, positions, jnp.ones_like(tokens), audio,
                       audio_mask)["logits"]


@functools.partial(jax.jit, static_argnums=0)
def _extend(model, params, tokens, lengths, cache, frames=None, frame_mask=None):
    return model.apply({"params": params}, tokens, lengths, cache, audio_frames=frames,
                       audio_frame_mask=frame_mask, method=UnifiedAudioLM.extend)


def _rows(parts, width):
    """Per-row token lists -> right-padded [B, width] and lengths."""
    out = np.full((B, width), LAYOUT.pad_id, np.int32)
    for b, row in enumerate(parts):
        out[b, :len(row)] = row
    return jnp.asarray(out), jnp.asarray([len(r) for r in parts], jnp.int32)


@pytest.mark.parametrize("chunk_size,push", [(4, 8), (3, 24)])
def test_chunk_by_chunk_extend_equals_one_full_forward(backbone, chunk_size, push):
    """<chat> <user> <audio>xF <assistant> text: the audio streamed in as its frames become
    final (one extend per push, per-row counts), then the rest; logits at every position
    equal one full forward of the whole sequence with the clip."""
    _, params = backbone
    model = _model(chunk_size)
    mel, mask = _clip(2)
    rng = np.random.default_rng(0)
    prefix = [LAYOUT.special("<chat>"), LAYOUT.special("<user>")]
    suffixes = [[LAYOUT.special("<assistant>"), *rng.integers(0, LAYOUT.text_size, n)]
                for n in (3, 1, 5)]
    sequences = [prefix + [LAYOUT.audio_placeholder_id] * num_audio_placeholders(int(v)) + s
                 for v, s in zip(VALID, suffixes, strict=True)]
    tokens, lengths = _rows(sequences, 24)
    want = np.asarray(_full(model, params, tokens, mel[:, None], mask[:, None]))

    cache = init_cache(model.config, B, 32)
    got = [[] for _ in range(B)]

    def extend(parts, frames=None, frame_mask=None):
        nonlocal cache
        window, counts = _rows(parts, max(1, max(len(p) for p in parts)))
        logits, _, cache = _extend(model, params, window, counts, cache, frames, frame_mask)
        for b in range(B):
            got[b].extend(np.asarray(logits[b, :int(counts[b])]))

    extend([prefix] * B)
    for frames, frame_mask in _stream(model, params, mel, mask, push):
        counts = np.asarray(frame_mask).sum(axis=1)
        extend([[LAYOUT.audio_placeholder_id] * int(c) for c in counts], frames, frame_mask)
    extend(suffixes)
    np.testing.assert_array_equal(cache.lengths, lengths)
    for b in range(B):
        np.testing.assert_allclose(np.stack(got[b]), want[b, :int(lengths[b])], atol=1e-4,
                                   rtol=1e-4)


def test_a_conversation_continues_after_decoding(backbone):
    """Turn 1 (text + clip) is decoded greedily; turn 2 (the tokens the cache does not hold
    yet, then <user> <audio>xF <assistant> with a second clip, a window wider than 16) is
    appended with extend: its logits equal a full forward of prompt + answer + turn 2 with
    both clips, and decoding on from that cache (cache=) equals decoding the whole history
    as one prompt."""
    model, params = backbone
    rng = np.random.default_rng(1)
    mel1, mask1 = _clip(3, 40, [40, 24, 33])
    mel2, mask2 = _clip(4, 160, [150, 131, 160])
    n1 = [num_audio_placeholders(v) for v in (40, 24, 33)]
    n2 = [num_audio_placeholders(v) for v in (150, 131, 160)]
    turn1 = [[LAYOUT.special("<asr>"), *[LAYOUT.audio_placeholder_id] * n,
              *rng.integers(0, LAYOUT.text_size, 2)] for n in n1]
    prompts, prompt_lengths = _rows(turn1, 10)
    first = greedy_decode(model, params, prompts, prompt_lengths, max_new_tokens=6,
                          stop_tokens=(), capacity=64, audio_features=mel1[:, None],
                          audio_mask=mask1[:, None])
    pending, counts = uncached_tokens(first, prompt_lengths)
    answers = np.asarray(first.tokens)
    turn2 = [[LAYOUT.special("<user>"), *[LAYOUT.audio_placeholder_id] * n,
              LAYOUT.special("<assistant>")] for n in n2]
    window = [list(np.asarray(pending)[b, :int(counts[b])]) + turn2[b] for b in range(B)]
    tokens, lengths = _rows(window, max(map(len, window)))
    assert tokens.shape[1] > 16  # the wide-window path of decode attention
    audio = jnp.stack([jnp.pad(mel1, ((0, 0), (0, 120), (0, 0))), mel2], axis=1)
    audio_mask = jnp.stack([jnp.pad(mask1, ((0, 0), (0, 120))), mask2], axis=1)

    logits, _, cache = model.apply({"params": params}, tokens, lengths, first.cache,
                                   mel2[:, None], mask2[:, None], method=UnifiedAudioLM.extend)
    history = [turn1[b] + list(answers[b]) + turn2[b] for b in range(B)]
    full_tokens, full_lengths = _rows(history, 48)
    want = np.asarray(_full(model, params, full_tokens, audio, audio_mask))
    start = np.asarray(first.cache.lengths)
    np.testing.assert_array_equal(cache.lengths, full_lengths)
    for b in range(B):
        np.testing.assert_allclose(logits[b, :int(lengths[b])],
                                   want[b, start[b]:int(full_lengths[b])], atol=1e-4, rtol=1e-4)

    # Decoding on from the cache = decoding the whole history as one prompt.
    on = greedy_decode(model, params, tokens, lengths, max_new_tokens=5, stop_tokens=(),
                       cache=first.cache, audio_features=mel2[:, None],
                       audio_mask=mask2[:, None])
    whole = greedy_decode(model, params, full_tokens, full_lengths, max_new_tokens=5,
                          stop_tokens=(), audio_features=audio, audio_mask=audio_mask)
    np.testing.assert_array_equal(on.tokens, whole.tokens)


def test_capacity_and_stream_errors_are_clear(backbone):
    model, params = backbone
    cache = init_cache(CFG, B, 16).replace(lengths=jnp.asarray([3, 12, 0], jnp.int32))
    tokens = jnp.zeros((B, 5), jnp.int32)
    with pytest.raises(ValueError, match=r"cache capacity: expected >= 17 \(cache length 12 \+ "
                                         r"window 5\), got 16"):
        model.apply({"params": params}, tokens, jnp.full((B,), 5), cache,
                    method=UnifiedAudioLM.extend)
    with pytest.raises(ValueError, match=r"extend: lengths: expected values in \[0, 5\]"):
        model.apply({"params": params}, tokens, jnp.asarray([1, 6, 0]),
                    cache.replace(lengths=jnp.zeros(B, jnp.int32)),
                    method=UnifiedAudioLM.extend)
    prompts, lengths = jnp.ones((B, 4), jnp.int32), jnp.full((B,), 4)
    with pytest.raises(ValueError, match=r"cache capacity: expected >= 23 \(cache length 12 \+ "
                                         r"prompt width 4 \+ max_new_tokens 8 - 1 \+ 0 draft"):
        greedy_decode(model, params, prompts, lengths, max_new_tokens=8, cache=cache)
    with pytest.raises(ValueError, match=r"capacity: expected None when a cache is given"):
        greedy_decode(model, params, prompts, lengths, max_new_tokens=2, cache=cache,
                      capacity=16)
    with pytest.raises(ValueError, match=r"audio.chunk_size: expected > 0"):
        init_stream_state(AudioEncoderConfig(chunk_size=0), B)
    small = UnifiedAudioLM(apply_overrides(CFG, {"audio.max_frames": 6}))
    stream = StreamingEncoder(small, params, B)
    mel, mask = _clip(5, 16, [16, 16, 16])
    stream.push(mel, mask)  # 4 encoder frames
    with pytest.raises(ValueError, match=r"audio stream: 8 encoder frames exceed "
                                         r"audio.max_frames=6"):
        stream.push(mel, mask)
    with pytest.raises(ValueError, match=r"audio_features: expected a positive frame count "
                                         r"divisible by 8"):
        stream.push(mel[:, :4], mask[:, :4])
    stream.flush()
    with pytest.raises(ValueError, match=r"push after flush"):
        stream.push(mel, mask)
