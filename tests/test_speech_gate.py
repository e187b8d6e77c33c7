"""chorus.audio.speech_gate and experiments/asr/speech_gate.py: silence, noise and too-short
clips hold no speech; eSpeak speech (whispered voices included) and every tiny-corpus clip do;
the clip's regions are the VAD's frame decisions, checked against a brute-force run finder;
with the gate on, ASR gives "" for no speech without decoding."""

import numpy as np
import pytest

from chorus.audio.io import AudioError
from chorus.audio.speech_gate import (
    SpeechGate,
    gate_decision,
    has_speech,
    speech_activity,
)
from chorus.audio.vad import VoiceActivityDetector
from chorus.config import ConfigError, settings_from
from data_pipelines.synthesis import synthesize
from experiments.asr.settings import AsrSettings

SR = 16000


def _noise(rms, seconds=2.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * rms).astype(
        np.float32)


@pytest.fixture(scope="module")
def utterances():
    """{(voice, text): wave} of eSpeak speech: plain, female and whispered voices; a one-word
    and a sentence-long utterance each."""
    out = {}
    for voice in ("en-us", "en-gb+f3", "en-us+whisper", "en-gb+whisperf"):
        for text in ("Hi.", "Where do you live these days, my friend?"):
            out[voice, text] = synthesize(text, voice=voice)[0]
    return out


NO_SPEECH = {
    "silence_2s": (lambda: np.zeros(2 * SR, np.float32), "no_speech"),
    "noise_rms_0.001": (lambda: _noise(0.001), "no_speech"),
    "white_noise_rms_0.03": (lambda: _noise(0.03, seed=1), "no_speech"),
    "white_noise_rms_0.1": (lambda: _noise(0.1, seed=2), "no_speech"),
    "white_noise_rms_0.3": (lambda: _noise(0.3, seed=3), "no_speech"),
    "10ms": (lambda: _noise(0.1, seconds=0.01), "too_short"),
    "empty": (lambda: np.zeros(0, np.float32), "empty"),
}


@pytest.mark.parametrize("case", sorted(NO_SPEECH))
def test_silence_noise_and_too_short_clips_hold_no_speech(case):
    make, reason = NO_SPEECH[case]
    decision = gate_decision(make())
    assert (decision.speech, decision.reason) == (False, reason)
    if reason == "no_speech":
        assert decision.activity.regions == () and decision.activity.voiced_seconds == 0
        assert decision.activity.clip_seconds == 2.0


def test_the_flatness_criterion_is_what_rejects_white_noise():
    """Without it (max_flatness=1) WebRTC's frames call white noise speech."""
    decision = gate_decision(_noise(0.1, seed=2), SpeechGate(max_flatness=1.0))
    assert decision.speech and decision.activity.speech_seconds > 1.9


def test_speech_passes_and_its_region_is_where_the_wave_is_audible(utterances):
    for (voice, text), wave in utterances.items():
        for noisy in (False, True):
            clip = wave + _noise(0.03, seconds=wave.size / SR, seed=4)[: wave.size] * noisy
            decision = gate_decision(clip)
            assert decision.speech and decision.reason == "speech", (voice, text, noisy)
        activity = speech_activity(wave)
        loud = np.flatnonzero(np.abs(wave) > 1e-2)
        frame = SpeechGate().vad.frame_samples
        start, end = activity.regions[0][0], activity.regions[-1][1]
        # The speech spans the audible wave to within two frames either side (soft onsets,
        # eSpeak's quiet decay).
        assert abs(start - loud[0]) <= 2 * frame and abs(end - (loud[-1] + 1)) <= 2 * frame, \
            (voice, text, activity.regions, loud[0], loud[-1])
        assert activity.voiced_seconds <= activity.clip_seconds


def _brute_force_regions(speech: list[bool], frame: int, open_frames: int, gap_frames: int):
    """Regions [(start, end) samples]: a run of >= open_frames speech frames opens one at the
    run's first frame; gap_frames non-speech frames in a row close it at the last speech
    frame's end; the clip's end closes an open one."""
    regions, i, n = [], 0, len(speech)
    while i < n:
        j = i
        while j < n and speech[j]:
            j += 1
        if j - i < open_frames:
            i = j + 1
            continue
        start, last = i, j  # `last`: one past the last speech frame
        k = j
        while k < n:
            if speech[k]:
                last = k + 1
            elif k - last + 1 >= gap_frames:
                break
            k += 1
        regions.append((start * frame, last * frame))
        i = k + 1 if k < n else n
    return regions


@pytest.mark.parametrize("frame_ms", [10, 30])
def test_regions_and_voiced_seconds_match_a_brute_force_count(utterances, frame_ms):
    gate = SpeechGate(frame_ms=frame_ms, min_speech_ms=60, gap_ms=90)
    rng = np.random.default_rng(5)
    pieces = []  # speech with silences and noise between: several regions
    for wave in list(utterances.values())[:5]:
        pieces += [wave, np.zeros(int(rng.integers(0, 6000)), np.float32),
                   _noise(0.05, seconds=0.2, seed=int(rng.integers(100)))]
    clip = np.concatenate(pieces)
    n = gate.vad.frame_samples
    vad = VoiceActivityDetector(gate.vad)
    speech = [vad.frame_is_speech(clip[i:i + n]) for i in range(0, clip.size - n + 1, n)]
    activity = speech_activity(clip, gate)
    expected = _brute_force_regions(speech, n, gate.vad.speech_frames, gate.vad.silence_frames)
    assert len(expected) >= 4
    assert list(activity.regions) == expected
    assert activity.voiced_seconds == pytest.approx(sum(speech) * frame_ms / 1000, abs=1e-9)
    assert activity.speech_seconds == pytest.approx(sum(e - s for s, e in expected) / SR)


def test_min_clip_and_min_speech_are_the_boundaries(utterances):
    wave = utterances["en-us", "Where do you live these days, my friend?"]
    gate = SpeechGate(min_clip_ms=500)
    loud = int(np.flatnonzero(np.abs(wave) > 1e-2)[0]) + 1600
    clip = wave[loud:loud + SR // 2]  # exactly 500 ms of speech
    assert gate_decision(clip, gate).speech
    assert gate_decision(clip[:-1], gate).reason == "too_short"
    # One voiced region of 60 ms: a 90 ms minimum does not open it, a 60 ms one does.
    burst = np.zeros(SR, np.float32)
    burst[4800:4800 + 960] = wave[loud:loud + 960]
    tens = dict(frame_ms=10, gap_ms=30)
    assert gate_decision(burst, SpeechGate(min_speech_ms=120, **tens)).reason == "no_speech"
    assert gate_decision(burst, SpeechGate(min_speech_ms=30, **tens)).speech


def test_bad_settings_and_waves_name_the_field():
    with pytest.raises(ConfigError, match=r"speech_gate\.frame_ms.*one of \[10, 20, 30\].*25"):
        SpeechGate(frame_ms=25)
    with pytest.raises(ConfigError, match=r"speech_gate\.min_speech_ms.*>= speech_gate"):
        SpeechGate(min_speech_ms=10)
    with pytest.raises(ConfigError, match=r"speech_gate\.max_flatness"):
        SpeechGate(max_flatness=0.0)
    with pytest.raises(ConfigError, match=r"speech_gate\.min_clip_ms"):
        SpeechGate(min_clip_ms=-1)
    with pytest.raises(AudioError, match=r"^clip\.wav: .*non-finite|^clip\.wav: .*NaN"):
        gate_decision(np.full(SR, np.nan, np.float32), source="clip.wav")
    with pytest.raises(AudioError, match=r"^clip\.wav: expected a mono 1-D waveform"):
        gate_decision(np.zeros((2, SR), np.float32), source="clip.wav")


def test_the_asr_setting_is_on_by_default_and_null_turns_it_off():
    assert settings_from(AsrSettings, {}).speech_gate == SpeechGate()
    assert settings_from(AsrSettings, {"speech_gate": None}).speech_gate is None
    merged = settings_from(AsrSettings, {"speech_gate": {"min_speech_ms": 150}}).speech_gate
    assert merged == SpeechGate(min_speech_ms=150)
    with pytest.raises(ConfigError, match="speech_gate.aggressiveness"):
        settings_from(AsrSettings, {"speech_gate": {"aggressiveness": 7}})


# ----------------------------------------------------------------------------- corpus and run


@pytest.fixture(scope="module")
def corpus_clips(tiny_asr_corpus):
    """[(voice, wave)] of every readable clip of the tiny corpus, all splits."""
    from data_pipelines.graph import open_records
    from data_pipelines.records import DEFAULT_LIMITS, Skip, field_text, read_record
    from data_pipelines.sources import DEFAULT_FIELDS

    out = []
    for split in ("train", "validation", "test", "test_compositional"):
        records = open_records(tiny_asr_corpus, split, "chorus_speech", None, DEFAULT_FIELDS)
        for i in range(len(records)):
            record = read_record(records[i], DEFAULT_FIELDS, DEFAULT_LIMITS)
            if not isinstance(record, Skip):
                out.append((field_text(records[i], "voice"), record.wave))
    return out


def test_every_tiny_corpus_clip_passes_whispered_ones_included(corpus_clips):
    from experiments.asr.speech_gate import gate_eval

    assert len(corpus_clips) >= 20
    report = gate_eval([w for _, w in corpus_clips], SpeechGate())
    assert report["rejected"] == 0 and report["total"] == len(corpus_clips), report
    assert report["reasons"]["speech"] == len(corpus_clips)
    whispered = [w for v, w in corpus_clips if "whisper" in v]
    assert whispered, "the tiny corpus has whispered clips"
    assert all(has_speech(w) for w in whispered)


def test_gate_eval_counts_rejections_by_reason():
    from experiments.asr.speech_gate import gate_eval

    waves = {"speech": synthesize("Good morning.", voice="en-us")[0],
             "silence": np.zeros(SR, np.float32), "noise": _noise(0.1, seconds=1.0),
             "blip": _noise(0.1, seconds=0.01)}
    report = gate_eval(waves, SpeechGate())
    assert report["rejected"] == 3 and report["total"] == 4
    assert report["rejected_ids"] == ["silence", "noise", "blip"]
    assert report["reasons"] == {"speech": 1, "empty": 0, "too_short": 1, "no_speech": 2}
    assert report["ms_per_clip"] > 0


@pytest.fixture(scope="module")
def transcribers(tiny_asr_run):
    from experiments.asr.transcriber import load_transcriber

    return {"on": load_transcriber(str(tiny_asr_run))[0],
            "off": load_transcriber(str(tiny_asr_run), ["experiment.speech_gate=null"])[0]}


def test_asr_skips_decoding_when_the_gate_hears_no_speech(transcribers, monkeypatch):
    from chorus.audio.mel import log_mel
    from experiments.asr.speech_gate import clip_gate, transcribe_wave

    on, off = transcribers["on"], transcribers["off"]
    speech = synthesize("Turn off the lights.", voice="en-us")[0]
    expected = on.texts(on.decode(on.request(log_mel(speech)), "greedy"))[0]
    calls = []
    for t in (on, off):
        real = t.decode
        monkeypatch.setattr(t, "decode", lambda req, mode="verified", real=real:
                            calls.append(mode) or real(req, mode))
    silence = np.zeros(2 * SR, np.float32)
    text, decision = transcribe_wave(on, silence)
    assert (text, decision.reason, calls) == ("", "no_speech", [])
    text, decision = transcribe_wave(on, _noise(0.03))
    assert (text, decision.reason, calls) == ("", "no_speech", [])
    text, decision = transcribe_wave(on, speech, mode="greedy")
    assert (text, decision.speech, calls) == (expected, True, ["greedy"])
    assert clip_gate(off, silence) is None
    _, decision = transcribe_wave(off, silence, mode="greedy")
    assert decision is None and calls == ["greedy", "greedy"]


def test_eval_waves_are_the_eval_examples_own_clips(tiny_asr_run, tiny_asr_corpus):
    from chorus.audio.mel import log_mel
    from chorus.training.restore import read_run_config
    from experiments.asr.regime import eval_examples
    from experiments.asr.settings import asr_settings
    from experiments.asr.speech_gate import eval_waves, gate_eval

    config = read_run_config(str(tiny_asr_run))
    settings = asr_settings(config)
    examples = eval_examples(config, settings, "test", 4)
    waves = eval_waves(config, settings, "test", [ex["id"] for ex in examples])
    assert sorted(waves) == sorted(ex["id"] for ex in examples)
    for ex in examples:
        frames = log_mel(waves[ex["id"]])
        features = np.asarray(ex["audio_features"]).reshape(-1, frames.shape[-1])
        assert int(np.asarray(ex["audio_mask"]).sum()) == len(frames)
        np.testing.assert_allclose(frames, features[: len(frames)], rtol=0, atol=1e-5)
    assert gate_eval(waves, settings.speech_gate)["rejected"] == 0
    with pytest.raises(ValueError, match=r"^split 'test': expected records with ids \['nope'\]"):
        eval_waves(config, settings, "test", ["nope"])
