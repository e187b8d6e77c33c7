"""`chorus_speech`: the synthesized corpus as a TFDS dataset (array_record, no TensorFlow).

Layout: `<data_dir>/chorus_speech/1.0.0/` with the splits of corpus_plan.SPLITS (train /
validation / test / test_compositional / test_voices / test_prosody; a corpus made before
the last two existed lacks them, and opening one raises SourceError naming split and
directory). Read it like any prepared TFDS dataset:

    tfds.data_source("chorus_speech", data_dir=DIR)["train"][0]
    -> {"speech": int16[n] @ 16 kHz, "text": b"...", "speaker_id": 12, "duration": 2.4, ...}

Field names follow LibriSpeech where they overlap (`speech`, `text`, `speaker_id`, `id`), so
the same default field mapping reads both. Only TF-free features are used (a raw int16 tensor,
not `tfds.features.Audio`, whose constructor needs TensorFlow).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.corpus_plan import SPLITS
from data_pipelines.shards import read_shard

NAME = "chorus_speech"
TEXT_FIELDS = ("id", "text", "tagged_text", "instruction", "voice", "category", "persona",
               "answer", "question_kind")
INT_FIELDS = ("speaker_id", "rate", "pitch", "volume")


class ChorusSpeech(tfds.core.GeneratorBasedBuilder):
    """eSpeak NG speech with transcripts, TTS controls and persona dialogue turns."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def __init__(self, *, shard_paths: dict[str, list[str]] | None = None, **kwargs):
        self._shard_paths = shard_paths  # split -> shard files; only needed to build
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"speech": tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                                   encoding=tfds.features.Encoding.BYTES),
                    "duration": tfds.features.Scalar(np.float32)}
        features |= {k: tfds.features.Text() for k in TEXT_FIELDS}
        features |= {k: tfds.features.Scalar(np.int32) for k in INT_FIELDS}
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
            supervised_keys=("speech", "text"),
            metadata=tfds.core.MetadataDict(sample_rate=16000))

    def _split_generators(self, dl_manager):
        if self._shard_paths is None:
            raise ValueError(f"{NAME}: building needs shard_paths (run `chorus data synth`)")
        return {split: self._generate_examples(self._shard_paths[split]) for split in SPLITS}

    def _generate_examples(self, paths: list[str]):
        for path in paths:
            for record in read_shard(path):
                meta = record["meta"]
                example = {"speech": record["audio"], "duration": meta["duration"],
                           "id": meta["uid"]}
                example |= {k: meta[k] for k in TEXT_FIELDS if k != "id"}
                example |= {k: int(meta[k]) for k in INT_FIELDS}
                yield meta["uid"], example


def _fit_shuffle_buffer(shard_paths: dict[str, list[str]]) -> None:
    """TFDS buffers each split's serialized examples in memory up to
    `tfds.core.shuffle.MAX_MEM_BUFFER_SIZE` (1 GB) and then spills them to disk through
    `tf.io.gfile` — which needs TensorFlow, so without it a corpus of more than ~9 h of train
    audio failed mid-build ("No module named 'tensorflow'"). Raise the buffer to hold the
    largest split (its shards' samples as int16, with room for the serialization), or say
    up front that the machine's memory cannot."""
    from tensorflow_datasets.core import shuffle

    def samples_bytes(path: str) -> int:  # the offsets alone: no audio is read
        with np.load(path) as data:
            offsets = data["offsets"]
        return 2 * int(offsets[-1]) + 1024 * (len(offsets) - 1)

    largest = max((sum(samples_bytes(p) for p in paths) for paths in shard_paths.values()),
                  default=0)
    needed = int(largest * 1.25) + (64 << 20)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory // 2:
        raise ValueError(f"{NAME}: the largest split needs a {needed / 2**30:.1f} GiB build "
                         f"buffer (TFDS spills larger ones through TensorFlow, which is not "
                         f"installed); expected at most half of this machine's "
                         f"{memory / 2**30:.1f} GiB: synthesize fewer hours")
    shuffle.MAX_MEM_BUFFER_SIZE = max(shuffle.MAX_MEM_BUFFER_SIZE, needed)


def build(data_dir: str, shard_paths: dict[str, list[str]]) -> str:
    """Writes `<data_dir>/chorus_speech/1.0.0` from the given shard files; returns its path."""
    _fit_shuffle_buffer(shard_paths)
    builder = ChorusSpeech(data_dir=data_dir, file_format="array_record",
                           shard_paths=shard_paths)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(download_mode=(
            tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)))
    return str(builder.data_dir)


def is_built(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, NAME, str(ChorusSpeech.VERSION),
                                       "dataset_info.json"))
