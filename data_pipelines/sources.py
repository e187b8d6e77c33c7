"""Random-access sources of audio records: any prepared TFDS dataset, by name.

    source = open_source("librispeech", data_dir="~/tensorflow_datasets", split="test_clean")
    len(source), source[0]   # -> {"speech": int16[n], "text": "...", "speaker_id": 84, ...}

`open_source` first asks `tfds.data_source(name, data_dir=...)`. Datasets whose features need
TensorFlow to even be constructed (LibriSpeech's `tfds.features.Audio`) fail there without
TensorFlow, so we then read the prepared directory ourselves: `dataset_info.json` for the
splits and shard files, `features.json` for how each field is stored, the array_record shards
for the serialized tf.Example protos (parsed with TFDS's TF-free protobuf classes). Both paths
return plain dicts of numpy arrays / bytes / scalars; `FieldMap` says which keys are which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import os
import sys
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np


class SourceError(ValueError):
    """A dataset cannot be opened or a record cannot be read; names dataset, split and why."""


@dataclasses.dataclass(frozen=True)
class FieldMap:
    """Which record keys hold what. Optional fields may be absent from a dataset (read as "").

    LibriSpeech: speech (int16 @ 16 kHz), text (upper-case transcript), speaker_id, id; the
    defaults fit it and `chorus_speech` alike.
    """

    audio: str = "speech"
    text: str = "text"
    speaker: str | None = "speaker_id"
    id: str | None = "id"
    instruction: str | None = "instruction"
    tagged_text: str | None = "tagged_text"
    persona: str | None = "persona"
    answer: str | None = "answer"
    sample_rate: int = 16_000  # of raw sample arrays; encoded audio files carry their own

    def __post_init__(self):
        if not self.audio or not self.text:
            raise ValueError(f"FieldMap.audio/text: expected field names, got "
                             f"{self.audio!r}/{self.text!r}")
        if self.sample_rate <= 0:
            raise ValueError(f"FieldMap.sample_rate: expected > 0, got {self.sample_rate}")


DEFAULT_FIELDS = FieldMap()
LIBRISPEECH_FIELDS = FieldMap(instruction=None, tagged_text=None, persona=None, answer=None)


def open_source(name: str, data_dir: str | None, split: str) -> Sequence[dict]:
    """A random-access sequence of record dicts for `split` of the prepared dataset `name`."""
    import tensorflow_datasets as tfds

    prepared_dir = find_prepared_dir(name, data_dir)  # a clear error when it is not there
    if name.split("/")[0].split(":")[0] == "chorus_speech":
        from data_pipelines import tfds_builder  # noqa: F401  (registers the builder)
    # Without TensorFlow, tfds prints an "install TensorFlow" banner on stdout before failing;
    # we need no TensorFlow, and stdout may be a command's JSON (`chorus data stats --json`).
    banner = io.StringIO()
    try:
        with contextlib.redirect_stdout(banner):
            source = TfdsSource(tfds.data_source(name, data_dir=data_dir, split=split,
                                                 download=False))
    except ModuleNotFoundError as e:
        if "tensorflow" not in str(e):
            raise
    except ValueError as e:  # tfds: "Unknown split ..."
        raise SourceError(f"dataset {name!r} in {data_dir!r}: split {split!r}: {e}") from e
    else:
        sys.stderr.write(banner.getvalue())
        return source
    return RawArrayRecordSource(prepared_dir, split)


class TfdsSource(Sequence):
    """A `tfds.data_source` split, returning plain dicts (field names kept)."""

    def __init__(self, data_source):
        self._ds = data_source
        self.field_names = tuple(data_source.dataset_info.features.keys())

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, index: int) -> dict:
        return dict(self._ds[index])


# ----------------------------------------------------------------------------- raw reader


def find_prepared_dir(name: str, data_dir: str | None) -> str:
    """`data_dir/name[/config]/version` holding dataset_info.json (newest version if several).

    Without a config in `name`, a dataset prepared with configs resolves to its `default`
    config (TFDS's convention for LibriSpeech and most others) or to its only config."""
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)
    base, _, version = name.partition(":")
    candidates = glob.glob(os.path.join(data_dir, base, version or "*", "dataset_info.json"))
    if "/" not in base and not candidates:
        with_config = glob.glob(os.path.join(data_dir, base, "*", version or "*",
                                             "dataset_info.json"))
        configs = sorted({p.split(os.sep)[-3] for p in with_config})
        if len(configs) > 1 and "default" not in configs:
            raise SourceError(f"dataset {name!r} under {data_dir!r} has configs {configs}; "
                              f"name one, e.g. '{base}/{configs[0]}'")
        chosen = "default" if "default" in configs else (configs[0] if configs else None)
        candidates = [p for p in with_config if p.split(os.sep)[-3] == chosen]
    if not candidates:
        raise SourceError(f"dataset {name!r}: no prepared copy under {data_dir!r} (expected "
                          f"{data_dir}/{base}[/<config>]/<version>/dataset_info.json)")

    def version_key(path):
        parts = os.path.basename(os.path.dirname(path)).split(".")
        return tuple(int(p) if p.isdigit() else -1 for p in parts)

    return os.path.dirname(max(candidates, key=version_key))


def _feature_specs(features_json: dict) -> dict[str, dict]:
    """field -> {"kind": text|tensor|audio, "dtype", "scalar", "encoding", "lazy"}."""
    specs = {}
    for field, feature in features_json["featuresDict"]["features"].items():
        cls = feature.get("pythonClassName", "")
        if cls.endswith(".Text") or "text" in feature:
            specs[field] = {"kind": "text"}
            continue
        content = feature.get("audio") or feature.get("tensor") or {}
        if content.get("dtype") == "string":  # e.g. LibriSpeech's `id` (np.str_)
            specs[field] = {"kind": "text"}
            continue
        dims = content.get("shape", {}).get("dimensions", [])
        specs[field] = {"kind": "audio" if "audio" in feature else "tensor",
                        "dtype": content.get("dtype", "int64"), "scalar": not dims,
                        "encoding": content.get("encoding", "none").lower(),
                        "lazy": bool(content.get("lazyDecode", False))}
    return specs


def _decode_feature(feature, spec: dict) -> Any:
    kind = feature.WhichOneof("kind")
    if spec["kind"] == "text":
        return feature.bytes_list.value[0].decode("utf-8") if feature.bytes_list.value else ""
    if spec.get("lazy"):  # the encoded audio file itself
        return feature.bytes_list.value[0]
    if kind == "bytes_list":  # Tensor with bytes / zlib encoding: the raw array buffer
        raw = feature.bytes_list.value[0]
        if spec["encoding"] == "zlib":
            raw = zlib.decompress(raw)
        values = np.frombuffer(raw, dtype=spec["dtype"])
    elif kind == "int64_list":
        values = np.asarray(feature.int64_list.value, dtype=np.int64).astype(spec["dtype"])
    else:
        values = np.asarray(feature.float_list.value, dtype=np.float32).astype(spec["dtype"])
    return values.reshape(()).item() if spec["scalar"] and values.size == 1 else values


class RawArrayRecordSource(Sequence):
    """Reads a prepared array_record TFDS split without constructing its TFDS builder."""

    def __init__(self, prepared_dir: str, split: str):
        self.prepared_dir = prepared_dir
        try:
            with open(os.path.join(prepared_dir, "dataset_info.json")) as f:
                info = json.load(f)
            with open(os.path.join(prepared_dir, "features.json")) as f:
                self._specs = _feature_specs(json.load(f))
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise SourceError(f"{prepared_dir}: unreadable dataset_info.json / features.json "
                              f"({e})") from e
        if info.get("fileFormat") != "array_record":
            raise SourceError(f"{prepared_dir}/dataset_info.json fileFormat: expected "
                              f"'array_record', got {info.get('fileFormat')!r}; re-prepare with "
                              "file_format='array_record'")
        splits = {s["name"]: s for s in info.get("splits", [])}
        # "a+b+c": the splits one after another (LibriSpeech's 960 h is three train splits)
        parts = split.split("+")
        unknown = [p for p in parts if p not in splits]
        if unknown:
            raise SourceError(f"{prepared_dir}: split: expected one of {sorted(splits)} (or "
                              f"several joined by '+'), got {split!r}")
        self._length, self._paths = 0, []
        for part in parts:
            num_shards = len(splits[part]["shardLengths"])
            self._length += sum(int(n) for n in splits[part]["shardLengths"])
            self._paths += [os.path.join(prepared_dir, f"{info['name']}-{part}.array_record-"
                                                       f"{i:05d}-of-{num_shards:05d}")
                            for i in range(num_shards)]
        missing = [p for p in self._paths if not os.path.exists(p)]
        if missing:
            raise SourceError(f"{prepared_dir}: split {split!r} is missing shard files "
                              f"{missing[:3]}")
        self.field_names = tuple(self._specs)
        self._reader = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_reader"} | {"_reader": None}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict:
        from tensorflow_datasets.proto import tf_example_pb2

        if self._reader is None:
            from array_record.python.array_record_data_source import ArrayRecordDataSource

            self._reader = ArrayRecordDataSource(self._paths)
        example = tf_example_pb2.Example.FromString(self._reader[index])
        features = example.features.feature
        return {field: _decode_feature(features[field], spec)
                for field, spec in self._specs.items() if field in features}


def field_names(source: Sequence[dict]) -> tuple[str, ...]:
    """The record keys a source offers (its declared features, else those of record 0)."""
    names = getattr(source, "field_names", None)
    if names is not None:
        return tuple(names)
    return tuple(source[0].keys()) if len(source) else ()
