"""Bad input: every case is skipped with its reason, counted, and never breaks a batch."""

import io

import numpy as np
import pytest
import soundfile

from chorus.vocab import VocabLayout
from data_pipelines.pipeline import make_train_iterator
from data_pipelines.records import AudioLimits, Skip, read_record
from data_pipelines.sources import FieldMap
from data_pipelines.tokenizer import train_tokenizer
from experiments.asr.regime import AsrRegime

FIELDS = FieldMap()
LIMITS = AudioLimits(max_seconds=2.0)


def _tone(seconds=0.5, sr=16000, freq=220.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _encoded(wave, sr=16000, fmt="WAV"):
    buf = io.BytesIO()
    soundfile.write(buf, wave, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def _reason(audio, text="hello there", **record):
    out = read_record({"speech": audio, "text": text, **record}, FIELDS, LIMITS)
    return out.reason if isinstance(out, Skip) else None


def test_unreadable_audio_bytes_and_paths(tmp_path):
    assert _reason(b"this is not audio at all") == "unreadable_audio"
    assert _reason(str(tmp_path / "missing.wav")) == "unreadable_audio"
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + b"\x00" * 50)
    assert _reason(str(garbage)) == "unreadable_audio"


def test_truncated_audio_files():
    wav = _encoded(_tone(1.0))
    assert _reason(wav) is None
    assert _reason(wav[: len(wav) // 2]) == "truncated_audio"
    flac = _encoded(_tone(1.0), fmt="FLAC")
    assert _reason(flac) is None
    assert _reason(flac[: len(flac) // 2]) == "unreadable_audio"  # FLAC loses sync


def test_empty_silent_and_non_finite_audio():
    assert _reason(np.zeros(0, np.int16)) == "empty_audio"
    assert _reason(np.zeros(16000, np.int16)) == "silent_audio"
    nan = _tone()
    nan[100] = np.nan
    assert _reason(nan) == "non_finite_audio"
    inf = _tone()
    inf[5] = np.inf
    assert _reason(inf) == "non_finite_audio"


def test_other_sample_rates_are_resampled():
    rec = read_record({"speech": _encoded(_tone(1.0, sr=44100), sr=44100), "text": "hi"},
                      FIELDS, LIMITS)
    assert not isinstance(rec, Skip)
    assert abs(len(rec.wave) - 16000) <= 2
    # A raw sample array at a declared non-16k rate (FieldMap.sample_rate).
    rec = read_record({"speech": (_tone(1.0, sr=8000) * 32767).astype(np.int16), "text": "hi"},
                      FieldMap(sample_rate=8000), LIMITS)
    assert abs(len(rec.wave) - 16000) <= 2


def test_stereo_is_downmixed():
    left, right = _tone(0.5, freq=220), _tone(0.5, freq=330)
    stereo = np.stack([left, right], axis=1)
    rec = read_record({"speech": _encoded(stereo), "text": "hi"}, FIELDS, LIMITS)
    expected = (np.round(left * 32767) + np.round(right * 32767)) / 2 / 32768
    np.testing.assert_allclose(rec.wave, expected, atol=2e-4)
    rec = read_record({"speech": stereo, "text": "hi"}, FIELDS, LIMITS)  # (samples, channels)
    np.testing.assert_allclose(rec.wave, (left + right) / 2, atol=1e-6)


def test_too_long_audio_skipped_or_truncated():
    long_wave = _tone(3.0)
    assert _reason(long_wave) == "too_long_audio"
    rec = read_record({"speech": long_wave, "text": "hi"}, FIELDS,
                      AudioLimits(max_seconds=2.0, truncate_long=True))
    assert len(rec.wave) == 32000


def test_bad_texts():
    assert _reason(_tone(), text="   ") == "empty_text"
    assert _reason(_tone(), text="café au lait") == "non_ascii_text"
    assert _reason(_tone(), text="caf\xe9".encode("latin-1")) == "non_ascii_text"
    assert _reason(_tone(), text=b"plain bytes") is None
    assert read_record({"text": "hi"}, FIELDS, LIMITS).reason == "missing_field"
    dialogue = read_record({"speech": _tone(), "text": "hi", "persona": "", "answer": "x"},
                           FIELDS, LIMITS, required_texts=("persona", "answer"))
    assert dialogue.reason == "empty_text"


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_tokenizer(["hello there", "good morning to you", "a quick test of the pipe"] * 20,
                    200, str(path))
    return str(path)


def test_pipeline_skips_and_counts_every_bad_case(tokenizer_path, capsys):
    good = [{"speech": (_tone(0.6 + 0.1 * i) * 32767).astype(np.int16),
             "text": f"hello there {i}"} for i in range(5)]
    bad = {
        "unreadable_audio": {"speech": b"junk", "text": "hello"},
        "truncated_audio": {"speech": _encoded(_tone(1.0))[:9000], "text": "hello"},
        "empty_audio": {"speech": np.zeros(0, np.int16), "text": "hello"},
        "non_finite_audio": {"speech": np.full(800, np.nan, np.float32), "text": "hello"},
        "silent_audio": {"speech": np.zeros(8000, np.int16), "text": "hello"},
        "too_long_audio": {"speech": _tone(9.0), "text": "hello"},
        "empty_text": {"speech": _tone(), "text": ""},
        "non_ascii_text": {"speech": _tone(), "text": "naïve"},
        "too_long_for_seq_len": {"speech": _tone(), "text": "a quick test of the pipe " * 20},
    }
    records = good[:2] + list(bad.values()) + good[2:]
    layout = VocabLayout(text_size=256, num_audio_codes=16)
    it = make_train_iterator(AsrRegime(), None, "train", layout, tokenizer_path, batch_size=2,
                             seq_len=96, shard_index=0, shard_count=1, num_epochs=1,
                             shuffle=False, max_frames=800, source=records)
    batches = list(it)
    assert it.skipped == {reason: int(reason in bad) for reason in it.skipped}
    assert sum(int(b["segment_ids"].max(axis=1).sum()) for b in batches) == len(good)
    for b in batches:
        assert b["tokens"].shape == (2, 96) and b["audio_features"].shape == (2, 4, 800, 128)
        assert np.all(np.isfinite(b["audio_features"]))
        assert set(b) == {"tokens", "targets", "loss_mask", "segment_ids", "positions",
                          "audio_features", "audio_mask"}
    err = capsys.readouterr().err
    assert f"skipped {len(bad)} examples" in err and "truncated_audio=1" in err
