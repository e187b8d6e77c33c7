"""`chorus data synth`: synthesize shards in parallel, build the TFDS dataset, train the tokenizer.

    synth_corpus(out_dir, CorpusConfig(seed=0, hours=2.0), workers=2)

Steps (each resumable):
  1. shards   every split needs ceil(hours x fraction / shard seconds) shards; missing shard
              files are synthesized by a process pool, one fresh process per shard (eSpeak's
              state is per process, so a shard is a pure function of config, split, index).
              If the measured hours fall short of the target, more shards are added.
  2. TFDS     `<out>/chorus_speech/1.0.0` (array_record), rebuilt when the shard set changed.
  3. tokenizer `<out>/tokenizer.model` from the train split's texts, when missing or stale.
A re-run with the same settings does nothing; an interrupted run finishes what is missing.
"""

from __future__ import annotations

import glob
import json
import math
import multiprocessing
import os
import shutil
import time

from chorus.atomic import write_json
from chorus.progress import progress as progress_bar
from data_pipelines import shards, tfds_builder
from data_pipelines.corpus_plan import SPLITS, CorpusConfig
from data_pipelines.text_generator import SentenceGenerator
from data_pipelines.tokenizer import TOKENIZER_FILENAME, train_tokenizer
from data_pipelines.voices import VOICES

CONFIG_FILENAME = "corpus_config.json"
BUILD_FILENAME = "build.json"  # which shards the TFDS dataset / tokenizer were made from
_FIRST_GUESS_SECONDS = 3.0  # mean utterance length before any shard is measured
_MAX_ROUNDS = 8


def _identity(config: CorpusConfig) -> dict:
    """Everything that determines shard content (hours only decides how many shards)."""
    d = config.to_dict()
    del d["hours"]
    return d


def _check_config(out_dir: str, config: CorpusConfig) -> None:
    path = os.path.join(out_dir, CONFIG_FILENAME)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        prev_id = {k: v for k, v in previous.items() if k != "hours"}
        current = json.loads(json.dumps(_identity(config)))  # tuples -> lists, as stored
        if prev_id != current:
            changed = sorted(k for k in prev_id.keys() | current.keys()
                             if prev_id.get(k) != current.get(k))
            raise ValueError(f"{path}: this directory holds a corpus made with different "
                             f"settings {changed}; use another --out or the same settings")
    write_json(path, config.to_dict())


def _shard_seconds(path: str) -> float:
    return sum(r["meta"]["duration"] for r in shards.read_shard(path))


def _existing(out_dir: str, split: str) -> dict[int, str]:
    paths = glob.glob(os.path.join(out_dir, shards.SHARDS_DIRNAME, f"{split}-*.npz"))
    return {int(os.path.basename(p)[len(split) + 1:-4]): p for p in paths}


def _run_pool(tasks: list, workers: int, progress: bool) -> float:
    """Synthesizes the shard tasks; returns seconds of audio made."""
    if not tasks:
        return 0.0
    made = 0.0
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["data_pipelines.shards", "soxr"])
    # maxtasksperchild=1: a fresh process per shard keeps every shard deterministic.
    with (progress_bar(len(tasks), "synthesizing", "shard", enabled=progress) as bar,
          ctx.Pool(processes=min(workers, len(tasks)), maxtasksperchild=1) as pool):
        for _, _, seconds in pool.imap_unordered(shards.make_shard, tasks):
            made += seconds
            bar.update(1, audio_h=f"{made / 3600:.2f}")
    return made


def synthesize_shards(out_dir: str, config: CorpusConfig, workers: int,
                      progress: bool = True) -> tuple[dict[str, list[int]], float]:
    """Makes sure every split has enough shards; returns (split -> shard indices used,
    seconds of audio synthesized by this call)."""
    for stale in glob.glob(os.path.join(out_dir, shards.SHARDS_DIRNAME, ".tmp-*")):
        os.remove(stale)  # left by a killed run (writes are atomic, so never a real shard)
    targets = {s: config.hours * 3600 * config.split_fractions[s] for s in SPLITS}
    per_shard = {s: config.shard_size * _FIRST_GUESS_SECONDS for s in SPLITS}
    wanted = {s: max(1, math.ceil(targets[s] / per_shard[s])) for s in SPLITS}
    made = 0.0
    for _ in range(_MAX_ROUNDS):
        tasks = [(config, s, i, out_dir) for s in SPLITS for i in range(wanted[s])
                 if i not in _existing(out_dir, s)]
        made += _run_pool(tasks, workers, progress)
        short = False
        for s in SPLITS:
            paths = [_existing(out_dir, s)[i] for i in range(wanted[s])]
            seconds = sum(_shard_seconds(p) for p in paths)
            if seconds < targets[s]:
                mean_shard = seconds / len(paths)
                wanted[s] += max(1, math.ceil((targets[s] - seconds) / mean_shard))
                short = True
        if not short:
            return {s: list(range(wanted[s])) for s in SPLITS}, made
    raise RuntimeError(f"synthesis did not reach {config.hours} h in {_MAX_ROUNDS} rounds")


def tokenizer_texts(out_dir: str, config: CorpusConfig, indices: list[int]) -> list[str]:
    """Every text that enters a token stream, from the train shards, plus the grammar's
    whole vocabulary (so a small corpus still yields a tokenizer covering every word)."""
    texts = [f"speaker {v.speaker_id}" for v in VOICES]
    texts += SentenceGenerator(config.text).surface_texts()
    for i in indices:
        for record in shards.read_shard(shards.shard_path(out_dir, "train", i)):
            m = record["meta"]
            texts += [m[k] for k in ("text", "tagged_text", "instruction", "persona", "answer")
                      if m[k]]
    return texts


def synth_corpus(out_dir: str, config: CorpusConfig, workers: int | None = None,
                 vocab_size: int = 512, progress: bool = True,
                 delete_shards: bool = False) -> dict:
    """Runs the three steps; returns a summary with the measured synthesis speed."""
    workers = workers or os.cpu_count() or 1
    os.makedirs(out_dir, exist_ok=True)
    _check_config(out_dir, config)
    start = time.perf_counter()
    build_path = os.path.join(out_dir, BUILD_FILENAME)
    previous = None
    if os.path.exists(build_path):
        with open(build_path) as f:
            previous = json.load(f)
    if (previous and previous.get("shards_deleted") and tfds_builder.is_built(out_dir)
            and previous.get("hours", 0) >= config.hours
            and previous.get("vocab_size") == vocab_size):
        # Built earlier with --delete-shards and big enough: nothing to redo.
        return _summary(out_dir, config, previous["shards"], previous["hours"] * 3600,
                        0.0, workers, start, 0.0)
    used, made = synthesize_shards(out_dir, config, workers, progress)
    synth_seconds = time.perf_counter() - start
    build = {"shards": used, "vocab_size": vocab_size}
    dataset_dir = os.path.join(out_dir, tfds_builder.NAME)
    stale = previous is None or {k: previous.get(k) for k in build} != json.loads(
        json.dumps(build))
    if stale and os.path.isdir(dataset_dir):
        shutil.rmtree(dataset_dir)  # made from another shard set
    if not tfds_builder.is_built(out_dir):
        tfds_builder.build(out_dir, {s: [shards.shard_path(out_dir, s, i) for i in used[s]]
                                     for s in SPLITS})
    tokenizer_path = os.path.join(out_dir, TOKENIZER_FILENAME)
    if stale or not os.path.exists(tokenizer_path):
        train_tokenizer(tokenizer_texts(out_dir, config, used["train"]), vocab_size,
                        tokenizer_path)
    total_seconds = sum(_shard_seconds(shards.shard_path(out_dir, s, i))
                        for s in SPLITS for i in used[s])
    if delete_shards:
        shutil.rmtree(os.path.join(out_dir, shards.SHARDS_DIRNAME))
    write_json(build_path, build | {"hours": total_seconds / 3600,
                                    "shards_deleted": delete_shards})
    return _summary(out_dir, config, used, total_seconds, made, workers, start, synth_seconds)


def _summary(out_dir, config, used, total_seconds, made, workers, start, synth_seconds) -> dict:
    return {"out_dir": out_dir, "hours": total_seconds / 3600,
            "utterances": sum(len(v) for v in used.values()) * config.shard_size,
            "shards": {s: len(v) for s, v in used.items()}, "workers": workers,
            "wall_seconds": time.perf_counter() - start, "synthesis_seconds": synth_seconds,
            "synthesized_hours": made / 3600, "config": config.to_dict()}


def measured_speed(summary: dict) -> float:
    """Audio seconds synthesized per wall second of the synthesis step (0 if none was due)."""
    return summary["synthesized_hours"] * 3600 / max(summary["synthesis_seconds"], 1e-9)

