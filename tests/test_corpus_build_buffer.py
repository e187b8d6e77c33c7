"""The TFDS build of a corpus larger than TFDS's in-memory shuffle buffer: TFDS spills past it
through tf.io.gfile (TensorFlow, not installed), which made `chorus data synth --hours 24`
fail at the build step. Shrinking the buffer below a tiny corpus reproduces that here."""

import pytest
from tensorflow_datasets.core import shuffle

from data_pipelines import tfds_builder
from data_pipelines.corpus_plan import CorpusConfig
from data_pipelines.synth_corpus import synth_corpus


def test_a_corpus_larger_than_the_shuffle_buffer_builds_without_tensorflow(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 4096)  # far below any split here
    synth_corpus(str(tmp_path), CorpusConfig(hours=0.02, shard_size=8), workers=1,
                 progress=False)
    assert tfds_builder.is_built(str(tmp_path))
    assert shuffle.MAX_MEM_BUFFER_SIZE > 4096


def test_a_split_beyond_the_machines_memory_is_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_builder.os, "sysconf", lambda name: 1024)  # a 1 MiB machine
    synth_dir = tmp_path / "c"
    with pytest.raises(ValueError, match="build buffer .* synthesize fewer hours"):
        synth_corpus(str(synth_dir), CorpusConfig(hours=0.02, shard_size=8), workers=1,
                     progress=False)
