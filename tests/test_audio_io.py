"""The one audio reader / writer: errors name the source, expected and got; one int16 scale."""

import os

import numpy as np
import pytest
import soundfile as sf

from chorus.audio.io import AudioError, check_wave, from_int16, load_wave, to_int16, write_wav


def test_check_wave_errors_name_source_expected_got():
    with pytest.raises(AudioError, match=r"clip.wav: expected audio, got 0 samples") as e:
        check_wave(np.zeros(0), "clip.wav", 640)
    assert e.value.reason == "empty_audio"
    with pytest.raises(AudioError, match=r"expected at least 640 samples at 16 kHz, got 100"):
        check_wave(np.zeros(100), "clip.wav", 640)
    bad = np.zeros(1000)
    bad[3] = np.nan
    bad[5] = np.inf
    with pytest.raises(AudioError, match=r"expected finite samples, got 2 NaN/Inf") as e:
        check_wave(bad, "clip.wav", 640)
    assert e.value.reason == "non_finite_audio"
    with pytest.raises(AudioError, match=r"expected a mono 1-D waveform, got shape \(2, 900\)"):
        check_wave(np.zeros((2, 900)), "clip.wav", 640)


def test_int16_convention_round_trips():
    x = np.array([-1.0, -0.5, 0.0, 0.25, 1.0], np.float32)
    pcm = to_int16(x)
    np.testing.assert_array_equal(pcm, [-32768, -16384, 0, 8192, 32767])
    np.testing.assert_allclose(from_int16(pcm), x, atol=1 / 32768)
    # Every int16 value survives float and back exactly.
    every = np.arange(-32768, 32768, dtype=np.int16)
    np.testing.assert_array_equal(to_int16(from_int16(every)), every)


def test_write_wav_round_trip_and_atomicity(tmp_path, monkeypatch):
    wave = (0.5 * np.sin(np.linspace(0, 200, 4000))).astype(np.float32)
    path = str(tmp_path / "out.wav")
    write_wav(path, wave)
    np.testing.assert_array_equal(load_wave(path), from_int16(to_int16(wave)))
    assert sf.info(path).subtype == "PCM_16"
    # Invalid audio raises before anything is written, at any rate.
    for rate in (16_000, 22_050):
        with pytest.raises(AudioError, match="NaN"):
            write_wav(str(tmp_path / "bad.wav"), np.full(100, np.nan), rate)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]

    # A write that fails half-way leaves no temp file behind (nor a partial bad.wav).
    def fail_midway(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"RIFF")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_wav(str(tmp_path / "bad.wav"), wave)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]


def test_load_wave_errors_and_resampling(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: expected an existing audio file"):
        load_wave(str(tmp_path / "missing.wav"))
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(AudioError, match="junk.wav: expected a readable audio file") as e:
        load_wave(str(tmp_path / "junk.wav"))
    assert e.value.reason == "unreadable_audio"
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="got 0 samples"):
        load_wave(str(tmp_path / "empty.wav"))
    stereo = np.stack([np.ones(2205), np.zeros(2205)], axis=1).astype(np.float32) * 0.5
    sf.write(str(tmp_path / "st.wav"), stereo, 22050)
    wave = load_wave(str(tmp_path / "st.wav"), min_samples=640)
    assert wave.shape == (1600,)  # 0.1 s at 16 kHz, channels averaged
    assert abs(float(np.median(wave)) - 0.25) < 1e-2
