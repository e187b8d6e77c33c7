"""Synthesized shards: the resumable unit of `chorus data synth`.

A shard is `shards/<split>-<index>.npz` holding int16 16 kHz audio (concatenated), the offsets
and the JSON metadata of `shard_size` utterances. It is written atomically, so a shard file
either exists complete or not at all, and a re-run only synthesizes the missing ones. Its
content is a pure function of (config, split, index) when synthesized in a fresh process.
"""

from __future__ import annotations

import json
import os

import numpy as np

from chorus.atomic import atomic_path
from chorus.audio.io import to_int16
from data_pipelines.corpus_plan import CorpusConfig, spec_stream
from data_pipelines.synthesis import SAMPLE_RATE, synthesize_segments
from data_pipelines.text_generator import stable_unit

SHARDS_DIRNAME = "shards"
_MAX_ATTEMPTS_PER_UTTERANCE = 20


def shard_path(out_dir: str, split: str, index: int) -> str:
    return os.path.join(out_dir, SHARDS_DIRNAME, f"{split}-{index:05d}.npz")


def synthesize_shard(config: CorpusConfig, split: str, index: int) -> list[dict]:
    """(audio int16, metadata) records of one shard; utterances outside the length bounds are
    replaced by the next spec of the stream."""
    records = []
    specs = spec_stream(config, split, index)
    for _ in range(config.shard_size * _MAX_ATTEMPTS_PER_UTTERANCE):
        if len(records) == config.shard_size:
            return records
        spec = next(specs)
        seed = int(stable_unit(config.seed, spec.uid) * 2**31)
        wave = synthesize_segments(list(spec.segments), seed=seed)
        duration = len(wave) / SAMPLE_RATE
        if not config.min_seconds <= duration <= config.max_seconds:
            continue
        meta = spec.metadata() | {"duration": duration, "seed": seed}
        records.append({"audio": to_int16(wave), "meta": meta})
    raise RuntimeError(f"shard {split}/{index}: fewer than {config.shard_size} utterances within "
                       f"[{config.min_seconds}, {config.max_seconds}] s after "
                       f"{config.shard_size * _MAX_ATTEMPTS_PER_UTTERANCE} attempts; widen "
                       "min_seconds/max_seconds or the rate range")


def write_shard(path: str, records: list[dict]) -> None:
    lengths = [len(r["audio"]) for r in records]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    audio = np.concatenate([r["audio"] for r in records]) if records else np.zeros(0, np.int16)
    meta = json.dumps([r["meta"] for r in records])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, audio=audio, offsets=offsets, meta=np.array(meta))


def read_shard(path: str) -> list[dict]:
    with np.load(path) as data:
        audio, offsets = data["audio"], data["offsets"]
        metas = json.loads(str(data["meta"]))
    return [{"audio": audio[offsets[i]:offsets[i + 1]], "meta": m} for i, m in enumerate(metas)]


def make_shard(args: tuple[CorpusConfig, str, int, str]) -> tuple[str, int, float]:
    """Pool task: synthesize + write one shard; returns (split, index, seconds of audio)."""
    config, split, index, out_dir = args
    records = synthesize_shard(config, split, index)
    write_shard(shard_path(out_dir, split, index), records)
    return split, index, sum(r["meta"]["duration"] for r in records)
