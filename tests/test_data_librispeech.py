"""A prepared TFDS dataset read by name: a tiny `librispeech` in the real on-disk layout.

The dataset is written the way TFDS lays out LibriSpeech (tests/librispeech_layout.py:
array_record shards of tf.Example protos, dataset_info.json, features.json with
`tfds.features.Audio`), both configs: `default` (decoded int16 samples) and `lazy_decode`
(the FLAC files themselves).
"""

import os

import numpy as np
import pytest
from librispeech_layout import write_librispeech

from chorus.audio import mel
from chorus.audio.io import from_int16, to_int16
from chorus.vocab import VocabLayout
from data_pipelines.pipeline import make_eval_iterator, make_train_iterator
from data_pipelines.sources import (
    LIBRISPEECH_FIELDS,
    RawArrayRecordSource,
    SourceError,
    open_source,
)
from data_pipelines.synthesis import synthesize
from data_pipelines.tokenizer import train_tokenizer
from experiments.asr.regime import AsrRegime

TEXTS = ["HE HOPED THERE WOULD BE STEW FOR DINNER", "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM",
         "AFTER EARLY NIGHTFALL THE YELLOW LAMPS", "HELLO BERTIE ANY GOOD IN YOUR MIND",
         "NUMBER TEN FRESH NELLY IS WAITING ON YOU"]


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    utterances = []
    for i, text in enumerate(TEXTS):
        wave, _ = synthesize(text.lower(), voice="en-us+m3", rate=220, seed=i)
        utterances.append((to_int16(wave), text))
    write_librispeech(data_dir, {"test_clean": utterances}, "default")
    write_librispeech(data_dir, {"test_clean": utterances}, "lazy_decode")
    tok = os.path.join(data_dir, "tokenizer.model")
    train_tokenizer(TEXTS * 4, 150, tok)
    return data_dir, utterances, tok


def test_open_by_name_reads_records(librispeech):
    data_dir, utterances, _ = librispeech
    source = open_source("librispeech", data_dir, "test_clean")
    # No TensorFlow here: LibriSpeech's Audio feature cannot be built, so the raw reader serves.
    assert isinstance(source, RawArrayRecordSource) and len(source) == len(TEXTS)
    assert {"speech", "text", "speaker_id", "chapter_id", "id"} <= set(source.field_names)
    for i, (samples, text) in enumerate(utterances):
        record = source[i]
        np.testing.assert_array_equal(record["speech"], samples)
        assert record["speech"].dtype == np.int16
        assert record["text"] == text and record["speaker_id"] == 84 + i
        assert record["id"] == f"{84 + i}-121123-{i:04d}"
    lazy = open_source("librispeech/lazy_decode", data_dir, "test_clean")
    assert isinstance(lazy[0]["speech"], bytes)  # the FLAC file itself
    with pytest.raises(SourceError, match="test_clean"):
        open_source("librispeech", data_dir, "train_clean100")
    with pytest.raises(SourceError, match="no prepared copy"):
        open_source("librispeech", data_dir + "-missing", "test_clean")


@pytest.mark.parametrize("name", ["librispeech", "librispeech/lazy_decode"])
def test_asr_pipelines_on_librispeech(librispeech, name):
    data_dir, utterances, tok_path = librispeech
    from data_pipelines.tokenizer import TextTokenizer

    tok = TextTokenizer.from_file(tok_path)
    layout = VocabLayout(text_size=150, num_audio_codes=8)
    with make_train_iterator(AsrRegime(), data_dir, "test_clean", layout, tok_path, batch_size=2,
                             seq_len=160, shard_index=0, shard_count=1, num_epochs=1,
                             dataset_name=name, fields=LIBRISPEECH_FIELDS,
                             max_frames=480) as it:
        batches = list(it)
    transcripts = []
    for batch in batches:
        for b in range(2):
            seg = batch["segment_ids"][b]
            for k in range(1, seg.max() + 1):
                tokens = batch["tokens"][b, seg == k]
                start = int(np.flatnonzero(tokens == layout.special("<transcript>"))[0]) + 1
                transcripts.append(tok.decode(tokens[start:-1]))
    assert sorted(transcripts) == sorted(TEXTS)
    examples = list(make_eval_iterator(AsrRegime(), data_dir, "test_clean", layout, tok_path,
                                       shard_index=0, shard_count=1, dataset_name=name,
                                       fields=LIBRISPEECH_FIELDS, max_frames=480))
    assert [e["reference_text"] for e in examples] == TEXTS
    for ex, (samples, _) in zip(examples, utterances, strict=True):
        n = int(ex["audio_mask"].sum())
        np.testing.assert_allclose(ex["audio_features"][0, :n],
                                   mel.log_mel(from_int16(samples)), atol=1e-4)


def test_joined_splits_read_one_after_another(tmp_path):
    """`train_clean100+train_clean360+train_other500` is the 960 h training set."""
    rng = np.random.default_rng(0)
    splits = {name: [((rng.standard_normal(800) * 3000).astype(np.int16), f"{name.upper()} {i}")
                     for i in range(n)]
              for name, n in (("train_clean100", 2), ("train_clean360", 3),
                              ("train_other500", 1))}
    write_librispeech(str(tmp_path), splits)
    source = open_source("librispeech", str(tmp_path), "+".join(splits))
    expected = [u for utterances in splits.values() for u in utterances]
    assert len(source) == len(expected) == 6
    for i, (samples, text) in enumerate(expected):
        assert source[i]["text"] == text
        np.testing.assert_array_equal(source[i]["speech"], samples)
    with pytest.raises(SourceError, match=r"several joined by '\+'\), got "
                                          r"'train_clean100\+dev_clean'"):
        open_source("librispeech", str(tmp_path), "train_clean100+dev_clean")
