"""eSpeak NG synthesis: output format, controls, voices, determinism, binary fallback."""

import os
import stat
import subprocess
import sys
import textwrap

import librosa
import numpy as np
import pytest

from data_pipelines import espeak
from data_pipelines.synthesis import SAMPLE_RATE, Segment, synthesize, synthesize_segments
from data_pipelines.voices import VOICES, get_voice

TEXT = "The train to Oslo leaves at seven forty five."


def test_synthesize_returns_16k_mono_float32_and_metadata():
    wave, meta = synthesize(TEXT, voice="en-gb+f3", rate=160, pitch=60, volume=90, seed=3)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert np.all(np.isfinite(wave)) and np.abs(wave).max() <= 1.0
    assert 1.5 < len(wave) / SAMPLE_RATE < 6.0
    assert meta.sample_rate == 16000 and meta.duration == pytest.approx(len(wave) / 16000)
    assert (meta.text, meta.voice, meta.rate, meta.pitch, meta.volume, meta.seed) == (
        TEXT, "en-gb+f3", 160, 60, 90, 3)
    assert meta.speaker_id == get_voice("en-gb+f3").speaker_id
    assert np.abs(wave).max() > 0.05  # audible speech, not silence


def test_every_catalog_voice_loads_and_speaks():
    assert len(VOICES) >= 100 and len({v.speaker_id for v in VOICES}) == len(VOICES)
    for voice in VOICES:
        wave, meta = synthesize("Hi.", voice=voice.name)
        assert len(wave) > 1600, voice.name
        assert meta.speaker_id == voice.speaker_id


def _median_f0(wave):
    f0 = librosa.yin(wave, fmin=60, fmax=500, sr=SAMPLE_RATE, frame_length=1024)
    return float(np.median(f0))


def test_controls_change_the_audio():
    slow, _ = synthesize(TEXT, rate=100)
    fast, _ = synthesize(TEXT, rate=300)
    assert len(slow) > 2.0 * len(fast)
    quiet, _ = synthesize(TEXT, volume=40)
    loud, _ = synthesize(TEXT, volume=160)
    assert np.sqrt(np.mean(loud**2)) > 2.5 * np.sqrt(np.mean(quiet**2))
    low, _ = synthesize(TEXT, pitch=10)
    high, _ = synthesize(TEXT, pitch=90)
    assert _median_f0(high) > 1.3 * _median_f0(low)


def test_segments_concatenate_with_a_pause():
    first = Segment("Turn left at the bank", voice="en-us", rate=170)
    second = Segment("then stop", voice="en-us+whisper", rate=230)
    joined = synthesize_segments([first, second], seed=0)
    parts = [synthesize_segments([s], seed=0) for s in (first, second)]
    expected = len(parts[0]) + len(parts[1]) + int(0.15 * SAMPLE_RATE)
    assert abs(len(joined) - expected) < 0.02 * expected  # eSpeak jitters by a few samples


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="rate"):
        synthesize(TEXT, rate=10)
    with pytest.raises(ValueError, match="pitch"):
        synthesize(TEXT, pitch=120)
    with pytest.raises(ValueError, match="voice"):
        synthesize(TEXT, voice="klingon")
    with pytest.raises(ValueError, match="text"):
        synthesize("   ")


_DETERMINISM_SCRIPT = textwrap.dedent("""
    import hashlib
    from data_pipelines.synthesis import synthesize
    for voice, seed in [("en-us", 0), ("en-gb-scotland+croak", 1), ("en-029+whisperf", 2)]:
        wave, _ = synthesize("Is the sleepy fox asleep?", voice=voice, seed=seed)
        print(hashlib.sha256(wave.tobytes()).hexdigest())
""")


def test_same_calls_in_a_fresh_process_are_bit_exact():
    runs = [subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT], capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert len(runs[0]) == 3 and runs[0] == runs[1]


_FAKE_ESPEAK = textwrap.dedent("""\
    #!{python}
    import io, sys
    import numpy as np, soundfile
    with open({log!r}, "w") as f:
        f.write(" ".join(sys.argv[1:]))
    t = np.arange(len(sys.argv[-1]) * 400) / 22050
    buf = io.BytesIO()
    soundfile.write(buf, 0.5 * np.sin(2 * np.pi * 200 * t), 22050, format="WAV",
                    subtype="PCM_16")
    sys.stdout.buffer.write(buf.getvalue())
""")


def test_binary_fallback_when_the_library_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="espeakng-loader"):
        espeak.load_engine(library_path=str(tmp_path / "missing.so"), data_path="x")
    log = tmp_path / "args.txt"
    fake = tmp_path / "espeak-ng"
    fake.write_text(_FAKE_ESPEAK.format(python=sys.executable, log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    engine = espeak.load_engine(library_path=str(tmp_path / "missing.so"), data_path="x")
    assert isinstance(engine, espeak.BinaryEngine)
    samples = engine.synthesize("hello", "en-gb+f3", 150, 40, 90, seed=0)
    assert samples.dtype == np.int16 and len(samples) == 5 * 400
    assert engine.sample_rate == 22050
    assert log.read_text() == "-v en-gb+f3 -s 150 -p 40 -a 90 --stdout hello"
    assert os.access(fake, os.X_OK)
