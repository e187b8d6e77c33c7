"""The corpus as codes: each record of a split encoded once, cached beside the dataset.

After the speaker and tokenizer stages, every record of the train split is encoded once by
the trained tokenizer (25 Hz codes) and speaker encoder (an embedding of the whole clip):

    <data_dir>/caches/<producer_key>/<split>.array_record   codes int32 [n], speaker float32 [E]

(a `data_pipelines.record_cache.RecordCache`). The flow stage trains on these; TTS batches
open the same cache by its key (`experiment.cache_key`, recorded in the codec run's
`corpus_codes.json`), so no JAX runs in a grain worker. `producer_key` is the identity of
the producing checkpoints: a hash of the tokenizer's and speaker encoder's params and config
sections, so a retrained tokenizer gets a new cache and the same checkpoint (from any
directory) finds its own.

The run also gets `voices.json` (the mean embedding of each training voice over its cached
clips), so `chorus codec decode --voice NAME` needs no reference clip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence

import jax
import numpy as np

from chorus import atomic
from chorus.codec.pipeline import VOICES_NAME, Codec
from chorus.config import dataclass_to_dict
from data_pipelines.record_cache import ArraySpec, CacheError, RecordCache, write_record_cache
from data_pipelines.records import AudioLimits, Record, Skip, field_text, read_record
from data_pipelines.sources import DEFAULT_FIELDS, open_source

ENCODERS = ("speaker", "tokenizer")  # the networks whose outputs are cached
# Whole records are encoded (not the training crops): allow long ones.
ENCODE_LIMITS = AudioLimits(max_seconds=120.0)
KEY_NAME = "corpus_codes.json"  # in the codec run dir: which cache its encoders made
HINT = "it is written by the codec's flow stage or `chorus codec encode --split S`"


def producer_key(codec: Codec) -> str:
    """'codec-' + 16 hex digits of SHA-1 over the encoders' params and config sections."""
    digest = hashlib.sha1()
    sections = {name: dataclass_to_dict(getattr(codec.cfg, name))
                for name in ("mel", "fsq", *ENCODERS)}
    digest.update(json.dumps(sections, sort_keys=True).encode())
    for name in ENCODERS:
        leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(codec.network_params(name)))
        for path, leaf in leaves:
            array = np.ascontiguousarray(leaf)
            digest.update(f"{name}{jax.tree_util.keystr(path)}{array.dtype}{array.shape}"
                          .encode())
            digest.update(array.tobytes())
    return f"codec-{digest.hexdigest()[:16]}"


def encodable_records(source: Sequence[dict], min_samples: int) -> Iterator[Record]:
    """The records of `source` the codec can encode whole (readable, within ENCODE_LIMITS,
    at least `min_samples` long: one code), in order; the others are passed over."""
    limits = dataclasses.replace(ENCODE_LIMITS, min_samples=min_samples)
    for index in range(len(source)):
        record = read_record(source[index], DEFAULT_FIELDS, limits)
        if not isinstance(record, Skip):
            yield record


def _entries(codec: Codec, source: Sequence[dict]):
    """(record id, {codes, speaker}) of every encodable record."""
    for record in encodable_records(source, codec.min_samples):
        codes, speaker = codec.analyze(record.wave)
        yield record.id, {"codes": codes, "speaker": speaker}


def encode_split(codec: Codec, data_dir: str, dataset: str,
                 split: str) -> tuple[RecordCache, bool]:
    """(the split's cache for this codec, whether this call wrote it): opened if complete,
    else encoded and written.

    With several processes, process 0 encodes and the others wait for its cache."""
    key = producer_key(codec)
    try:
        return RecordCache.open(data_dir, key, split, hint=HINT), False
    except CacheError:
        pass  # missing, or left incomplete by a killed run: (re)write it
    if jax.process_index() != 0:
        return wait_for_cache(data_dir, key, split), False
    source = open_source(dataset, data_dir, split)
    cfg = codec.cfg
    cache = write_record_cache(
        data_dir, key, split, _entries(codec, source), total=len(source),
        arrays={"codes": ArraySpec("int32", (None,)),
                "speaker": ArraySpec("float32", (cfg.speaker.embed_dim,))},
        attrs={"num_codes": cfg.fsq.num_codes, "fsq_levels": list(cfg.fsq.levels),
               "codes_per_second": cfg.mel.sample_rate // cfg.mel.samples_per_code,
               "dataset": dataset})
    return cache, True


def wait_for_cache(data_dir: str, key: str, split: str, hint: str = HINT,
                   timeout_s: float = 3600.0) -> RecordCache:
    """The cache another process is writing, once its meta lands (CacheError after
    timeout_s)."""
    began = time.monotonic()
    while True:
        try:
            return RecordCache.open(data_dir, key, split, hint=hint)
        except CacheError:
            if time.monotonic() - began > timeout_s:
                raise
            time.sleep(5.0)


def corpus_codes(run_dir: str, data_dir: str, split: str,
                 dataset: str = "chorus_speech") -> tuple[RecordCache, bool]:
    """(the RecordCache of `split` made by the codec trained in `run_dir`, whether this call
    encoded it): encoded if needed.

    Also records the key in `run_dir/corpus_codes.json` ({"producer_key", "data_dir",
    "splits"}), where a TTS run finds its `experiment.cache_key`."""
    codec = Codec.load(run_dir, networks=ENCODERS)
    cache, written = encode_split(codec, data_dir, dataset, split)
    if jax.process_index() == 0:
        path = os.path.join(run_dir, KEY_NAME)
        record = {"producer_key": cache.meta.producer_key, "data_dir": os.path.abspath(
            os.path.expanduser(data_dir)), "splits": [split]}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            if (old.get("producer_key"), old.get("data_dir")) == (record["producer_key"],
                                                                  record["data_dir"]):
                record["splits"] = sorted({*old.get("splits", []), split})
        atomic.write_json(path, record)
    return cache, written


def voice_table(cache: RecordCache, source: Sequence[dict],
                heldout_speaker_ids: frozenset[str]) -> dict[str, list[float]]:
    """Voice -> unit-norm mean embedding of its cached clips (held-out voices left out).

    A voice is named by the record's `voice` field when the dataset has one (chorus_speech:
    'en-gb+f2'), else by its speaker id."""
    sums: dict[str, np.ndarray] = {}
    for index in range(len(source)):
        raw = source[index]
        speaker = field_text(raw, DEFAULT_FIELDS.speaker)
        if speaker in heldout_speaker_ids:
            continue
        entry = cache.get(field_text(raw, DEFAULT_FIELDS.id))
        if entry is None:
            continue
        name = field_text(raw, "voice") or speaker
        sums[name] = sums.get(name, 0.0) + entry["speaker"].astype(np.float64)
    return {name: (total / max(np.linalg.norm(total), 1e-12)).astype(np.float32).tolist()
            for name, total in sorted(sums.items())}


def write_voice_table(run_dir: str, cache: RecordCache, data_dir: str, dataset: str,
                      split: str, heldout_speaker_ids: frozenset[str]) -> None:
    """run_dir/voices.json: the voice table of `split` (written by process 0)."""
    if jax.process_index() == 0:
        table = voice_table(cache, open_source(dataset, data_dir, split), heldout_speaker_ids)
        atomic.write_json(os.path.join(run_dir, VOICES_NAME), table)
