"""experiments/realtime/session.py on a tiny random backbone + a random codec: the streamed turn
equals the offline path (prefill of the whole prompt with the whole clip, then greedy decode
under the same grammar), barge-in, history across turns and eviction at the context limit,
turns ended by the VAD. The first test of a run compiles the programs (~45 s here)."""

import jax.numpy as jnp
import numpy as np
import pytest
from backbones import random_backbone
from codec_fixtures import random_codec

from chorus.audio.mel import log_mel
from chorus.audio.vad import VadConfig
from chorus.config import load_config
from chorus.decoding.verified import greedy_decode, uncached_tokens
from chorus.model import UnifiedAudioLM, init_cache
from chorus.vocab import VocabLayout, num_audio_placeholders
from data_pipelines.synthesis import synthesize
from experiments.realtime.session import Session, SessionConfig

CFG = load_config("cpu-tiny", ["model.num_layers=1", "audio.num_layers=1",
                               "audio.chunk_size=4", "model.max_seq_len=512"])
LAYOUT = VocabLayout.from_model_config(CFG.model)
SETTINGS = SessionConfig(max_turn_seconds=4, max_text_tokens=5, max_codes=12)
CARD = "name: Ada. age: 30. home: Oslo."
START, END = LAYOUT.special("<tts_start>"), LAYOUT.special("<tts_end>")


class CharTokenizer:
    def encode(self, text):
        return [ord(c) % LAYOUT.text_size for c in text]

    def decode(self, ids):
        return "".join(chr(32 + int(i) % 90) for i in ids)


@pytest.fixture(scope="module")
def parts():
    model, params = random_backbone(CFG, 0)
    return model, params, random_codec()


def _session(parts, settings=SETTINGS, speaker=None):
    model, params, codec = parts
    return Session(model, params, CharTokenizer(), codec, CARD, speaker, settings)


def _wave(n, seed):
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def _push(session, wave, seed=0):
    rng, i = np.random.default_rng(seed), 0
    while i < wave.size:
        n = int(rng.integers(1, 2500))
        session.push_audio(wave[i:i + n])
        i += n


def _clips(waves):
    """Log-mel clips [1, A, T, 128] (padded to a multiple of 8) + mask, and their
    placeholder counts."""
    mels = [log_mel(w) for w in waves]
    t = max(-(-len(m) // 8) * 8 for m in mels)
    feats = np.zeros((1, len(mels), t, 128), np.float32)
    mask = np.zeros((1, len(mels), t), bool)
    for a, m in enumerate(mels):
        feats[0, a, :len(m)], mask[0, a, :len(m)] = m, True
    return jnp.asarray(feats), jnp.asarray(mask), [num_audio_placeholders(len(m)) for m in mels]


def _user(n):
    return [LAYOUT.special("<user>"), *[LAYOUT.audio_placeholder_id] * n,
            LAYOUT.special("<assistant>")]


def _system():
    return [LAYOUT.special("<chat>"), LAYOUT.special("<persona>"), *CharTokenizer().encode(CARD)]


def _mask(*groups):
    m = np.zeros(LAYOUT.size, bool)
    for g in groups:
        m[g] = True
    return jnp.asarray(m)


CODES = LAYOUT.audio_code_ids(np.arange(LAYOUT.num_audio_codes))
TEXT = np.arange(LAYOUT.text_size)


def _offline_answer(model, params, prompt, feats, mask, settings=SETTINGS):
    """The offline path: prefill the whole prompt with the whole clips, greedy decode under
    the session's grammar (text | <tts_start>, a code, codes | <tts_end>), with chorus.decoding
    and its cache continuation."""
    tokens, lengths = jnp.asarray([prompt], jnp.int32), jnp.asarray([len(prompt)], jnp.int32)
    r1 = greedy_decode(model, params, tokens, lengths, max_new_tokens=settings.max_text_tokens,
                       stop_tokens=(START,), capacity=512, audio_features=feats,
                       audio_mask=mask, allowed_ids=_mask(TEXT, [START]))
    answer = list(np.asarray(r1.tokens[0, :int(r1.lengths[0])]))
    window, counts = uncached_tokens(r1, lengths)
    window = list(np.asarray(window[0, :int(counts[0])]))
    if answer[-1] != START:  # max_text_tokens reached: the grammar forces <tts_start>
        answer.append(START)
        window.append(START)
    r2 = greedy_decode(model, params, jnp.asarray([window], jnp.int32),
                       jnp.asarray([len(window)], jnp.int32), max_new_tokens=1,
                       stop_tokens=(), cache=r1.cache, allowed_ids=_mask(CODES))
    answer.append(int(r2.tokens[0, 0]))
    w2, c2 = uncached_tokens(r2, r1.cache.lengths + len(window))
    r3 = greedy_decode(model, params, w2[:, :int(c2[0])], c2,
                       max_new_tokens=settings.max_codes - 1, stop_tokens=(END,),
                       cache=r2.cache, allowed_ids=_mask(CODES, [END]))
    answer += list(np.asarray(r3.tokens[0, :int(r3.lengths[0])]))
    if answer[-1] != END:
        answer.append(END)
    return [int(x) for x in answer]


def _prefill(model, params, tokens, feats, mask):
    cache = init_cache(model.config, 1, 512)
    logits, _, cache = model.apply({"params": params}, jnp.asarray([tokens], jnp.int32),
                                   jnp.asarray([len(tokens)], jnp.int32), cache, feats, mask,
                                   method=UnifiedAudioLM.prefill)
    return logits[0, len(tokens) - 1], cache


def _probe(model, params, cache):
    """Logits of one probe token decoded on `cache`: equal iff the caches hold the same rows."""
    logits, _, _ = model.apply({"params": params}, jnp.asarray([[7]], jnp.int32), cache,
                               method=UnifiedAudioLM.decode)
    return np.asarray(logits[0, 0])


def _answer(session):
    events = list(session.respond())
    assert events[-1].kind == "end"
    return events


@pytest.mark.slow  # compiles the session's programs (~45 s on 2 busy cores)
def test_streamed_turn_equals_the_offline_prefill_and_decode(parts):
    model, params, _ = parts
    wave = _wave(20_801, 1)  # 1.3 s, not a whole number of frames or pieces
    session = _session(parts)
    _push(session, wave)
    feats, mask, (n,) = _clips([wave])
    # The audio went into the cache while it arrived: only the tail is left at end of speech.
    assert session.length >= len(_system()) + 1 + n - session.tail_width
    session.end_turn()
    prompt = _system() + _user(n)
    assert session.length == len(prompt)
    want_logits, _ = _prefill(model, params, prompt, feats, mask)
    np.testing.assert_allclose(np.asarray(session.next_logits[0]), np.asarray(want_logits),
                               atol=1e-4, rtol=1e-4)
    events = _answer(session)
    turn = events[-1].turn
    got = [*turn.text_ids.tolist(), START, *LAYOUT.audio_code_ids(turn.codes).tolist(), END]
    assert got == _offline_answer(model, params, prompt, feats, mask)
    # Events: text tokens, then audio packets before the last code, then the end.
    kinds = [e.kind for e in events]
    assert kinds == sorted(kinds, key=["text", "audio", "end"].index)
    audio = [e for e in events if e.kind == "audio"]
    assert audio[0].codes_sampled < len(turn.codes) and len(audio) > 1
    assert turn.wave.size == len(turn.codes) * 640
    np.testing.assert_array_equal(np.concatenate([e.samples for e in audio]), turn.wave)
    lat = turn.latency
    assert 0 < lat.first_audio_ms <= lat.answer_ms and lat.speech_s == pytest.approx(1.3, 1e-3)
    parts_ms = (lat.encoder_tail_ms + lat.prefill_ms + lat.text_decode_ms
                + lat.first_code_chunk_ms + lat.detokenizer_ms)
    assert parts_ms == pytest.approx(lat.first_audio_ms, rel=1e-6)
    # The whole turn (answer included) is in the cache: the same rows as a prefill of it all.
    _, want_cache = _prefill(model, params, prompt + got, feats, mask)
    assert session.length == len(prompt + got)
    np.testing.assert_allclose(_probe(model, params, session.cache),
                               _probe(model, params, want_cache), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # compiles the session's programs (~45 s on 2 busy cores)
def test_history_across_turns_and_barge_in(parts):
    """Turn 1 is cut after its first packet by new audio (kept in the history, closed with
    <tts_end>); that audio opens turn 2, whose answer is the offline one given the history."""
    model, params, _ = parts
    w1, w2 = _wave(12_000, 2), _wave(9_000, 3)
    session = _session(parts)
    _push(session, w1)
    session.end_turn()
    events = session.respond()
    first = [next(events)]
    while first[-1].kind != "audio":
        first.append(next(events))
    session.push_audio(w2[:4000])  # barge-in
    cut = next(events)
    assert cut.kind == "barge_in" and cut.turn.barged_in and cut.turn.latency is None
    assert next(events, None) is None
    kept = session.turns[0].tokens
    assert kept[-1] == END and 0 < len(cut.turn.codes) < SETTINGS.max_codes
    _push(session, w2[4000:])
    session.end_turn()
    feats, mask, (n1, n2) = _clips([w1, w2])
    history = _system() + _user(n1) + kept[len(_user(n1)):] + _user(n2)
    assert kept[:len(_user(n1))] == _user(n1) and session.length == len(history)
    turn = _answer(session)[-1].turn
    got = [*turn.text_ids.tolist(), START, *LAYOUT.audio_code_ids(turn.codes).tolist(), END]
    assert got == _offline_answer(model, params, history, feats, mask)
    assert not turn.barged_in and [t.index for t in session.results] == [0, 1]


@pytest.mark.slow  # compiles the session's programs (~45 s on 2 busy cores)
def test_context_limit_evicts_the_oldest_turns_and_keeps_the_card(parts):
    model, params, _ = parts
    waves = [_wave(8000 + 1000 * k, 10 + k) for k in range(3)]
    probe = _session(parts)  # greedy: the same turns as below, with room for all
    for k, w in enumerate(waves[:2]):
        _push(probe, w, k)
        probe.end_turn()
        _answer(probe)
    # Room for the card + two finished turns + one turn's worst case, not three.
    context = probe.length + probe.turn_budget - 1
    session = _session(parts, SessionConfig(max_turn_seconds=4, max_text_tokens=5,
                                            max_codes=12, context=context))
    lengths = []
    for k, w in enumerate(waves):
        _push(session, w, k)
        session.end_turn()
        lengths.append(session.length)
        _answer(session)
    assert session.evicted == 1 and len(session.turns) == 2 and len(session.results) == 3
    # Turn 3 opened after evicting turn 1: card + turn 2 re-prefilled, then turn 3 streamed.
    feats, mask, ns = _clips(waves[1:])
    kept = _system() + session.turns[0].tokens + session.turns[1].tokens
    assert session.length == len(kept) <= context
    _, want_cache = _prefill(model, params, kept, feats, mask)
    np.testing.assert_allclose(_probe(model, params, session.cache),
                               _probe(model, params, want_cache), atol=1e-4, rtol=1e-4)
    assert session.turns[0].tokens[:len(_user(ns[0]))] == _user(ns[0])


@pytest.mark.slow  # compiles the session's programs (~45 s on 2 busy cores)
def test_the_vad_ends_the_turn_and_only_speech_barges_in(parts):
    wave, _ = synthesize("Where do you live these days?", voice="en-us")
    silence = np.zeros(8000, np.float32)
    session = _session(parts, SessionConfig(max_turn_seconds=4, max_text_tokens=5,
                                            max_codes=12,
                                            vad=VadConfig(silence_ms=300, frame_ms=20)))
    start = session.length
    session.push_audio(_wave(8000, 5) * 3)  # loud noise opens no turn
    assert session.length == start and not session.turn_ready
    events = []
    for i in range(0, len(wave) + 16000, 1280):
        events += session.push_audio(np.concatenate([silence, wave, silence, silence])[i:i + 1280])
        if session.turn_ready:
            break
    assert [e.kind for e in events] == ["start", "end"] and session.turn_ready
    answer = session.respond()
    assert next(answer).kind == "text"
    session.push_audio(silence)  # silence during the answer: no barge-in
    rest = list(answer)
    assert rest[-1].kind == "end" and not rest[-1].turn.barged_in
    answer = session.respond() if session.turn_ready else None
    assert answer is None
    session.push_audio(wave[:4000])  # speech starts a turn again


def test_bad_use_is_a_clear_error(parts):
    session = _session(parts)
    with pytest.raises(ValueError, match=r"^respond: no ended user turn"):
        session.respond()
    with pytest.raises(ValueError, match=r"^end_turn: no user turn is open"):
        session.end_turn()
    with pytest.raises(ValueError, match=r"^push_audio: expected a 1-D array"):
        session.push_audio(np.zeros((2, 100)))
    with pytest.raises(ValueError, match=r"^user turn: 4.06 s exceed session.max_turn_seconds=4"):
        session.push_audio(np.zeros(65_000, np.float32))
    with pytest.raises(ValueError, match=r"^session context: expected >= \d+ rows \(persona card "
                                         r"\d+ tokens \+ one turn's worst case \d+\), got 100"):
        _session(parts, SessionConfig(context=100))
    with pytest.raises(ValueError, match=r"^session.max_codes: expected >= 1, got 0$"):
        SessionConfig(max_codes=0)
    with pytest.raises(ValueError, match=r"^speaker: expected one of \['voice0'\], got 'x'"):
        _session(parts, speaker="x")
