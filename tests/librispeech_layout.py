"""A tiny `librispeech` TFDS directory in the real on-disk layout, for the tests that read one
(tests/test_data_librispeech.py, tests/test_asr_librispeech.py).

TFDS lays LibriSpeech out as `DATA/librispeech/<config>/<version>/`: array_record shards of
tf.Example protos (`librispeech-<split>.array_record-00000-of-00001`), dataset_info.json (the
splits and their shard lengths) and features.json (`tfds.features.Audio` for `speech`). Config
`default` stores decoded int16 samples, `lazy_decode` the FLAC files themselves. Written here
without TensorFlow, with TFDS's own protobuf classes.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import soundfile
import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter
from google.protobuf import json_format
from tensorflow_datasets.core.proto import feature_pb2
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

CONFIG_VERSIONS = {"default": "2.1.1", "lazy_decode": "2.1.2"}


def flac_bytes(samples: np.ndarray) -> bytes:
    """int16 samples at 16 kHz as a FLAC file."""
    buf = io.BytesIO()
    soundfile.write(buf, samples, 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _example(samples: np.ndarray, text: str, i: int, lazy: bool) -> bytes:
    def ints(*v):
        return tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=list(v)))

    def strings(*v):
        return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=list(v)))

    speech = strings(flac_bytes(samples)) if lazy else ints(*samples.astype(np.int64).tolist())
    feature = {"speech": speech, "text": strings(text.encode()), "speaker_id": ints(84 + i),
               "chapter_id": ints(121123), "id": strings(f"{84 + i}-121123-{i:04d}".encode())}
    return tf_example_pb2.Example(features=tf_feature_pb2.Features(
        feature=feature)).SerializeToString()


def write_librispeech(data_dir: str, splits: dict[str, list[tuple[np.ndarray, str]]],
                      config: str = "default") -> str:
    """Writes `data_dir/librispeech/<config>/<version>/` with one shard per split of
    (int16 samples, transcript) utterances; returns that folder. Speaker ids are 84 + i and
    ids `{84 + i}-121123-{i:04d}` within each split."""
    folder = os.path.join(data_dir, "librispeech", config, CONFIG_VERSIONS[config])
    os.makedirs(folder)
    lazy = config == "lazy_decode"
    split_infos = []
    for split, utterances in splits.items():
        path = os.path.join(folder, f"librispeech-{split}.array_record-00000-of-00001")
        writer = ArrayRecordWriter(path, "group_size:1")
        for i, (samples, text) in enumerate(utterances):
            writer.write(_example(samples, text, i, lazy))
        writer.close()
        split_infos.append({"name": split, "shardLengths": [str(len(utterances))],
                            "numBytes": str(os.path.getsize(path)),
                            "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"})
    others = tfds.features.FeaturesDict({"text": tfds.features.Text(), "speaker_id": np.int64,
                                         "chapter_id": np.int64, "id": np.str_})
    features = others.to_json()["content"]["features"]
    audio = feature_pb2.AudioFeature(shape=feature_pb2.Shape(dimensions=[-1]), dtype="int16",
                                     file_format="flac", sample_rate=16000, encoding="none",
                                     lazy_decode=lazy)
    features["speech"] = {"pythonClassName":
                          "tensorflow_datasets.core.features.audio_feature.Audio",
                          "audio": json_format.MessageToDict(audio)}
    with open(os.path.join(folder, "features.json"), "w") as f:
        json.dump({"featuresDict": {"features": features}, "pythonClassName":
                   "tensorflow_datasets.core.features.features_dict.FeaturesDict"}, f)
    info = {"name": "librispeech", "configName": config, "version": CONFIG_VERSIONS[config],
            "fileFormat": "array_record", "supervisedKeys": {"tuple": {"items": [
                {"featureKey": "speech"}, {"featureKey": "text"}]}},
            "splits": split_infos}
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump(info, f)
    return folder
