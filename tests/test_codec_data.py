"""The codec stages' batches from a chorus_speech dataset: fixed shapes, the held-out voices
never trained on, too long utterances skipped and counted, CTC-infeasible ones skipped by
name, exact resume."""

import dataclasses

import numpy as np
import pytest
from codec_fixtures import experiment_mapping

from chorus.codec import text
from chorus.config import ConfigError, settings_from
from data_pipelines.records import DEFAULT_LIMITS, Record, Skip, field_text, read_record
from data_pipelines.sources import DEFAULT_FIELDS, open_source
from data_pipelines.voices import VOICES
from experiments.codec import data
from experiments.codec.settings import CodecSettings


@pytest.fixture(scope="module")
def corpus(tiny_asr_corpus):
    source = open_source("chorus_speech", tiny_asr_corpus, "train")
    speakers = [field_text(source[i], DEFAULT_FIELDS.speaker) for i in range(len(source))]
    # Hold out the two most frequent voices of the tiny corpus (so the filter has work).
    counts = {s: speakers.count(s) for s in set(speakers)}
    heldout = sorted(counts, key=lambda s: (-counts[s], s))[:2]
    return tiny_asr_corpus, source, [VOICES[int(s)].name for s in heldout], speakers


def _settings(corpus, *overrides):
    data_dir, _, heldout, _ = corpus
    mapping = experiment_mapping(*overrides)
    return settings_from(CodecSettings, {**mapping, "data_dir": data_dir,
                                         "heldout_voices": heldout})


def _batches(settings, stage, n, batch_size=4, **kwargs):
    it = data.train_iterator(settings, stage, batch_size, 0, 1, seed=3, **kwargs)
    try:
        return [next(it) for _ in range(n)], it
    finally:
        it.close()


def test_stage_batches_have_fixed_shapes_and_no_heldout_voice(corpus):
    settings = _settings(corpus)
    heldout = {int(s) for s in settings.heldout_speaker_ids}
    batches, _ = _batches(settings, "speaker", 3)
    crop = settings.speaker.crop_frames
    for b in batches:
        assert b["mel"].shape == (4, crop, 128) and b["mel_mask"].shape == (4, crop)
        assert b["speaker"].dtype == np.int32 and not set(b["speaker"].tolist()) & heldout
    batches, _ = _batches(settings, "tokenizer", 2)
    frames = settings.tokenizer.max_frames
    for b in batches:
        assert b["mel"].shape == (4, frames, 128) and b["labels"].shape == (4, frames // 4)
        for row in range(4):  # labels are characters of a transcript, then padding
            n = int(b["label_mask"][row].sum())
            assert n > 0 and text.decode(b["labels"][row, :n]).strip()
            assert not b["labels"][row, n:].any()
            assert b["mel_mask"][row].sum() <= frames
    (b,), _ = _batches(settings, "vocoder", 1)
    assert b["wave"].shape == (4, settings.vocoder.segment_frames * 160)
    assert np.abs(b["wave"]).max() <= 1.0


def test_normalized_mel_is_the_shared_definition(corpus):
    settings = _settings(corpus)
    _, source, _, _ = corpus
    record = read_record(source[0], DEFAULT_FIELDS, DEFAULT_LIMITS)
    from chorus.audio import mel

    np.testing.assert_allclose(data._normalized_mel(settings, record),
                               (mel.log_mel(record.wave) + 8.0) / 4.0, rtol=1e-6)


def test_too_long_and_ctc_infeasible_utterances_are_skipped(corpus):
    # 2 s of frames: the longer clips are skipped by the reader, and counted.
    settings = _settings(corpus, "experiment.tokenizer.max_frames=200")
    it = data.train_iterator(settings, "tokenizer", 4, 0, 1, seed=0)
    with it:
        next(it)
        next(it)
        skipped = it.skipped
    assert skipped["too_long_audio"] > 0
    # A transcript with more CTC frames than its clip has codes is skipped by the example.
    examples = data.TokenizerExamples(settings, 4)
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)  # 13 codes
    record = Record(wave=wave, text="a" * 7, speaker="0", id="r", instruction="",
                    tagged_text="", persona="", answer="")
    assert set(examples(record, np.random.default_rng(0))) == {"mel", "labels"}  # 13 = 7 + 6
    skip = examples(dataclasses.replace(record, text="a" * 8), np.random.default_rng(0))
    assert skip == Skip("too_long_for_seq_len", "8 characters do not fit 13 codes (CTC)")
    labels = text.encode("aab")
    assert data.ctc_feasible(labels, 4) and not data.ctc_feasible(labels, 3)  # a, blank, a, b
    assert data.ctc_feasible(text.encode("abc"), 3)


def test_records_too_short_for_one_code_are_not_encoded():
    from experiments.codec.corpus_codes import encodable_records

    rng = np.random.default_rng(0)

    def raw(samples, record_id, speaker=b"7"):
        return {"speech": rng.uniform(-0.5, 0.5, samples).astype(np.float32), "text": b"hi",
                "speaker_id": speaker, "id": record_id.encode()}

    source = [raw(639, "short"), raw(640, "one_code"), raw(16000, "ok"),
              {**raw(16000, "no_text"), "text": b" "}]
    assert [r.id for r in encodable_records(source, 640)] == ["one_code", "ok"]
    skip = read_record(source[0], DEFAULT_FIELDS, dataclasses.replace(DEFAULT_LIMITS,
                                                                      min_samples=640))
    assert skip.reason == "too_short_audio" and "at least 640 samples" in skip.detail
    record = read_record(source[2], DEFAULT_FIELDS, DEFAULT_LIMITS)
    assert (record.speaker, record.id) == ("7", "ok")  # bytes fields decoded (field_text)
    assert field_text({"speaker_id": None}, "speaker_id") == field_text({}, None) == ""


def test_iterator_resumes_at_the_next_batch(corpus):
    settings = _settings(corpus)
    it = data.train_iterator(settings, "speaker", 4, 0, 1, seed=1)
    with it:
        next(it)
        state = it.get_state()
        expected = [next(it) for _ in range(2)]
    again = data.train_iterator(settings, "speaker", 4, 0, 1, seed=1)
    with again:
        again.set_state(state)
        for want in expected:
            got = next(again)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])


def test_data_errors_name_the_field(corpus, tmp_path):
    settings = settings_from(CodecSettings, {"data_dir": str(tmp_path / "none")})
    with pytest.raises(FileNotFoundError, match="experiment.data_dir: expected the dataset"):
        data.train_iterator(settings, "speaker", 4, 0, 1, seed=0)
    with pytest.raises(ValueError, match="train.batch_size: expected a multiple of the 3"):
        data.train_iterator(_settings(corpus), "speaker", 4, 0, 3, seed=0)
    with pytest.raises(ValueError, match="speaker_classes=3"):
        _batches(_settings(corpus, "experiment.speaker_classes=3"), "speaker", 1)
    with pytest.raises(ConfigError, match="experiment.eval_splits: expected splits other"):
        settings_from(CodecSettings, {"eval_splits": ["train"]})
