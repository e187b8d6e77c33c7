"""The codec's speech corpus: eSpeak NG voices as speakers, held-out sentences for evaluation.

Splits:
  train        `train_utterances_per_voice` random sentences per training voice
  eval         `eval_sentences` held-out sentences spoken by every training voice
  eval_unseen  the same held-out sentences spoken by voices never seen in training

Speech comes from `data_pipelines.synthesis` (eSpeak NG, voices named as in
`data_pipelines.voices`). Built once per workdir and cached (int16 audio in one .npz per
split). `--data DIR` reads a prepared corpus instead, either
  * a `chorus data synth` folder (DIR/shards/<split>-*.npz): train -> train,
    validation + test -> eval (speaker = the utterance's voice), or
  * DIR/manifest.jsonl, lines {"audio": path relative to DIR, "text": str, "speaker": str,
    "split": "train" | "eval" | "eval_unseen"}.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np

from chorus import atomic
from chorus.audio.io import AudioError, from_int16, load_wave, to_int16
from chorus.codec.config import CorpusConfig
from chorus.codec.sentences import distinct_sentences

SPLITS = ("train", "eval", "eval_unseen")


@dataclasses.dataclass
class Corpus:
    waves: list[np.ndarray]
    texts: list[str]
    speakers: list[str]
    sample_rate: int

    def __post_init__(self):
        if not len(self.waves) == len(self.texts) == len(self.speakers):
            raise ValueError(f"Corpus: expected equal lengths, got {len(self.waves)} waves, "
                             f"{len(self.texts)} texts, {len(self.speakers)} speakers")

    def __len__(self) -> int:
        return len(self.waves)

    @property
    def seconds(self) -> float:
        return sum(w.size for w in self.waves) / self.sample_rate

    def save(self, path: str) -> None:
        lengths = np.asarray([w.size for w in self.waves], np.int64)
        audio = np.concatenate(self.waves) if self.waves else np.zeros((0,), np.float32)
        pcm = to_int16(audio)
        meta = json.dumps({"texts": self.texts, "speakers": self.speakers,
                           "sample_rate": self.sample_rate})
        atomic.write_npz(path, pcm=pcm, lengths=lengths, meta=np.asarray(meta))

    @classmethod
    def load(cls, path: str) -> Corpus:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            audio = from_int16(data["pcm"])
            bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        waves = [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return cls(waves, meta["texts"], meta["speakers"], meta["sample_rate"])


def synthesize_corpus(cfg: CorpusConfig, sample_rate: int) -> dict[str, Corpus]:
    rng = np.random.default_rng(cfg.seed)
    eval_texts = distinct_sentences(rng, cfg.eval_sentences, cfg.min_words, cfg.max_words)
    train_count = cfg.train_utterances_per_voice * len(cfg.voices)
    train_texts = distinct_sentences(rng, train_count, cfg.min_words, cfg.max_words,
                                     exclude=set(eval_texts))
    low, high = cfg.rate_wpm
    splits = {name: Corpus([], [], [], sample_rate) for name in SPLITS}

    from data_pipelines.synthesis import SAMPLE_RATE, synthesize

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"corpus sample_rate: expected {SAMPLE_RATE} (synthesis), got "
                         f"{sample_rate}")

    def add(split: str, text: str, voice: str, rate: int) -> None:
        wave, _ = synthesize(text, voice=voice, rate=rate, seed=len(splits[split].waves))
        splits[split].waves.append(wave)
        splits[split].texts.append(text)
        splits[split].speakers.append(voice)

    for i, text in enumerate(train_texts):
        add("train", text, cfg.voices[i % len(cfg.voices)], int(rng.integers(low, high + 1)))
    for text in eval_texts:
        for voice in cfg.voices:
            add("eval", text, voice, (low + high) // 2)
        for voice in cfg.heldout_voices:
            add("eval_unseen", text, voice, (low + high) // 2)
    return splits


SHARD_SPLITS = {"train": "train", "validation": "eval", "test": "eval"}


def read_shards_dir(data_dir: str, sample_rate: int, min_samples: int) -> dict[str, Corpus]:
    """A `chorus data synth` corpus: int16 16 kHz shards with JSON metadata per utterance."""
    from data_pipelines.shards import SHARDS_DIRNAME, read_shard

    splits = {name: Corpus([], [], [], sample_rate) for name in SPLITS}
    for path in sorted(glob.glob(os.path.join(data_dir, SHARDS_DIRNAME, "*.npz"))):
        split = SHARD_SPLITS.get(os.path.basename(path).rsplit("-", 1)[0])
        if split is None:
            continue  # e.g. test_compositional: not needed by the codec
        for record in read_shard(path):
            meta = record["meta"]
            wave = from_int16(record["audio"])
            if wave.size < min_samples or not meta.get("text", "").strip():
                continue
            splits[split].waves.append(wave)
            splits[split].texts.append(meta["text"])
            splits[split].speakers.append(meta["voice"])
    for name in ("train", "eval"):
        if not splits[name].waves:
            sources = sorted(k for k, v in SHARD_SPLITS.items() if v == name)
            raise ValueError(f"{data_dir}/{SHARDS_DIRNAME}: expected utterances for codec "
                             f"split {name!r} (shard splits {sources}), got none")
    return splits


def read_manifest_dir(data_dir: str, sample_rate: int, min_samples: int) -> dict[str, Corpus]:
    path = os.path.join(data_dir, "manifest.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected a manifest.jsonl or a shards/ folder in "
                                f"--data {data_dir}")
    splits = {name: Corpus([], [], [], sample_rate) for name in SPLITS}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: expected a JSON object per line, got: {e}") from None
            for key in ("audio", "text", "speaker"):
                if not isinstance(row.get(key), str) or not row[key]:
                    raise ValueError(f"{where}: field {key!r}: expected a non-empty string, "
                                     f"got {row.get(key)!r}")
            split = row.get("split", "train")
            if split not in SPLITS:
                raise ValueError(f"{where}: field 'split': expected one of {list(SPLITS)}, "
                                 f"got {split!r}")
            audio_path = os.path.join(data_dir, row["audio"])
            try:
                wave = load_wave(audio_path, min_samples=min_samples)
            except AudioError as e:
                raise ValueError(f"{where}: {e}") from None
            splits[split].waves.append(wave)
            splits[split].texts.append(row["text"])
            splits[split].speakers.append(row["speaker"])
    for name in ("train", "eval"):
        if not splits[name].waves:
            raise ValueError(f"{path}: expected utterances with split {name!r}, got none")
    return splits


def prepare_corpus(folder: str, cfg: CorpusConfig, sample_rate: int, min_samples: int,
                   data_dir: str | None = None) -> dict[str, Corpus]:
    """Loads the cached corpus in `folder`, else builds it (synthesis or `data_dir`) and caches."""
    paths = {name: os.path.join(folder, f"{name}.npz") for name in SPLITS}
    if all(os.path.isfile(p) for p in paths.values()):
        return {name: Corpus.load(p) for name, p in paths.items()}
    if data_dir and os.path.isdir(os.path.join(data_dir, "shards")):
        splits = read_shards_dir(data_dir, sample_rate, min_samples)
    elif data_dir:
        splits = read_manifest_dir(data_dir, sample_rate, min_samples)
    else:
        splits = synthesize_corpus(cfg, sample_rate)
    for name, corpus in splits.items():
        corpus.save(paths[name])
    return splits
