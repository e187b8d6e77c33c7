"""Bad input gets clear errors; written WAVs are valid and atomic."""

import os

import numpy as np
import pytest
import soundfile as sf

from chorus.codec import text
from chorus.codec.audio import AudioError, check_wave, read_wav, write_wav
from chorus.codec.testing import random_codec


@pytest.fixture(scope="module")
def codec():
    return random_codec()


def test_check_wave_errors_name_field_expected_got():
    with pytest.raises(AudioError, match=r"clip.wav: samples: expected audio, got an empty"):
        check_wave(np.zeros(0), "clip.wav", 640)
    with pytest.raises(AudioError, match=r"duration: expected at least 640 samples, got 100"):
        check_wave(np.zeros(100), "clip.wav", 640)
    bad = np.zeros(1000)
    bad[3] = np.nan
    bad[5] = np.inf
    with pytest.raises(AudioError, match=r"expected finite values, got 2 NaN/inf"):
        check_wave(bad, "clip.wav", 640)
    with pytest.raises(AudioError, match=r"expected a mono 1-D waveform, got shape \(2, 900\)"):
        check_wave(np.zeros((2, 900)), "clip.wav", 640)


def test_write_wav_round_trip_and_atomicity(tmp_path):
    wave = (0.5 * np.sin(np.linspace(0, 200, 4000))).astype(np.float32)
    path = str(tmp_path / "out.wav")
    write_wav(path, wave, 16000)
    back, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and back.shape == wave.shape
    np.testing.assert_allclose(back, wave, atol=1.0 / 32767)
    assert sf.info(path).subtype == "PCM_16"
    # Invalid audio raises before anything is written, and leaves no temp file behind.
    with pytest.raises(AudioError, match="NaN"):
        write_wav(str(tmp_path / "bad.wav"), np.full(100, np.nan), 16000)
    assert sorted(os.listdir(tmp_path)) == ["out.wav"]


def test_read_wav_errors_and_resampling(tmp_path):
    with pytest.raises(AudioError, match="expected an existing audio file"):
        read_wav(str(tmp_path / "missing.wav"), 16000, 640)
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(AudioError, match="expected a readable audio file"):
        read_wav(str(tmp_path / "junk.wav"), 16000, 640)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty waveform"):
        read_wav(str(tmp_path / "empty.wav"), 16000, 640)
    stereo = np.stack([np.ones(2205), np.zeros(2205)], axis=1).astype(np.float32) * 0.5
    sf.write(str(tmp_path / "st.wav"), stereo, 22050)
    wave = read_wav(str(tmp_path / "st.wav"), 16000, 640)
    assert wave.shape == (1600,)  # 0.1 s at 16 kHz, channels averaged
    assert abs(float(np.median(wave)) - 0.25) < 1e-2


def test_codec_rejects_bad_codes_and_audio(codec):
    with pytest.raises(ValueError, match=r"codes: length: expected at least 1 code, got 0"):
        codec.decode(np.zeros(0, np.int32))
    with pytest.raises(ValueError, match=r"values: expected codes in \[0, 1000\), got range"):
        codec.decode(np.asarray([1, 1000]))
    with pytest.raises(ValueError, match="dtype: expected integer codes, got float32"):
        codec.decode(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="shape: expected a 1-D array"):
        codec.decode(np.zeros((2, 3), np.int32))
    with pytest.raises(AudioError, match="too short"):
        codec.encode(np.zeros(10, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        codec.speaker_embedding(np.full(2000, np.nan, np.float32))
    with pytest.raises(ValueError, match="speaker: expected one of"):
        codec.decode(np.asarray([1, 2]), speaker="nobody")


def test_ctc_text_targets():
    assert text.normalize("Hello,  World! It's 42.") == "hello world it's 42"
    ids = text.encode("ab a")
    assert text.decode(ids) == "ab a"
    # Greedy CTC merges repeats and drops blanks: "a a _ b b _ b" -> "abb".
    a, b = text.encode("a")[0], text.encode("b")[0]
    assert text.ctc_greedy(np.asarray([a, a, 0, b, b, 0, b])) == "abb"
    assert text.character_error_rate(["abcd"], ["abed"]) == pytest.approx(0.25)

