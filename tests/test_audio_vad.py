"""chorus.audio.vad: eSpeak speech opens and closes one turn at the right times;
silence, white noise and short bursts open none."""

import numpy as np
import pytest

from chorus.audio.vad import VadConfig, VoiceActivityDetector
from data_pipelines.synthesis import synthesize

LEAD, TAIL = 8000, 16000  # samples of silence before / after the speech


@pytest.fixture(scope="module")
def speech():
    """(voice, padded wave, first audible sample, end of the last audible sample)."""
    out = []
    for text, voice in [("Where do you live these days, my friend?", "en-us"),
                        ("Tell me what you do for a living, please.", "en-gb+f3")]:
        wave, _ = synthesize(text, voice=voice)
        loud = np.flatnonzero(np.abs(wave) > 1e-3)
        padded = np.concatenate([np.zeros(LEAD, np.float32), wave,
                                 np.zeros(TAIL, np.float32)])
        out.append((voice, padded, LEAD + loud[0], LEAD + loud[-1] + 1))
    return out


def _events(vad, wave, seed=0):
    """Pushes `wave` in random-length chunks (1 .. 3000 samples)."""
    rng, events, i = np.random.default_rng(seed), [], 0
    while i < wave.size:
        n = int(rng.integers(1, 3000))
        events += vad.push(wave[i:i + n])
        i += n
    return events


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_speech_is_one_turn_ending_one_threshold_after_the_speech(speech, frame_ms):
    cfg = VadConfig(frame_ms=frame_ms, silence_ms=300)
    frame = cfg.frame_samples
    for voice, wave, start, end in speech:
        events = _events(VoiceActivityDetector(cfg), wave)
        assert [e.kind for e in events] == ["start", "end"], voice
        begin, finish = events
        # Speech ends within one frame (+ eSpeak's quiet decay) of where the wave stops being
        # audible, and starts within two (its onsets are soft); the pauses between words do
        # not end the turn.
        assert abs(begin.sample - start) <= 2 * frame + 160, (voice, begin, start)
        assert abs(finish.sample - end) <= frame + 160, (voice, finish, end)
        assert begin.detected_at - begin.sample == cfg.speech_frames * frame
        # End of speech is known the silence threshold after it, to within one frame.
        assert 0 <= finish.detected_at - finish.sample - 300 * 16 < frame


def test_chunking_does_not_change_the_events(speech):
    _, wave, _, _ = speech[0]
    whole = VoiceActivityDetector().push(wave)
    assert whole == _events(VoiceActivityDetector(), wave, seed=3)
    assert len(whole) == 2


@pytest.mark.parametrize("level", [0.0, 0.001, 0.01, 0.03, 0.1, 0.3, 0.6])
def test_silence_and_white_noise_open_no_turn(level):
    noise = (np.random.default_rng(int(level * 1000)).standard_normal(3 * 16000) * level)
    for frame_ms in (10, 30):
        vad = VoiceActivityDetector(VadConfig(frame_ms=frame_ms, aggressiveness=0))
        assert vad.push(noise.astype(np.float32)) == [] and not vad.in_speech


def test_the_flatness_gate_is_what_rejects_loud_noise():
    """WebRTC's VAD alone calls loud white noise speech: without the gate a turn opens."""
    noise = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    events = VoiceActivityDetector(VadConfig(max_flatness=1.0)).push(noise)
    assert [e.kind for e in events] == ["start"]


def test_a_burst_shorter_than_min_speech_opens_no_turn(speech):
    _, wave, start, _ = speech[0]
    burst = np.zeros(16000, np.float32)
    burst[4000:4000 + 960] = wave[start + 1600:start + 1600 + 960]  # 60 ms of voiced speech
    assert VoiceActivityDetector(VadConfig(frame_ms=10, min_speech_ms=120)).push(burst) == []
    events = VoiceActivityDetector(VadConfig(frame_ms=10, min_speech_ms=30)).push(burst)
    assert [e.kind for e in events] == ["start", "end"]


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match=r"^vad.frame_ms: expected one of \[10, 20, 30\], got 25$"):
        VadConfig(frame_ms=25)
    with pytest.raises(ValueError, match=r"^vad.aggressiveness: expected 0, 1, 2 or 3, got 4$"):
        VadConfig(aggressiveness=4)
    with pytest.raises(ValueError, match=r"^vad.silence_ms: expected >= vad.frame_ms=30, got 10"):
        VadConfig(silence_ms=10)
    with pytest.raises(ValueError, match=r"^vad.min_speech_ms: expected >= vad.frame_ms=20"):
        VadConfig(frame_ms=20, min_speech_ms=0)
    with pytest.raises(ValueError, match=r"^vad.max_flatness: expected a value in \(0, 1\]"):
        VadConfig(max_flatness=0.0)
    with pytest.raises(ValueError, match=r"^vad samples: expected a 1-D array"):
        VoiceActivityDetector().push(np.zeros((2, 160)))
