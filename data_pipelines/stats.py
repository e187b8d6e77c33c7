"""`chorus data stats`: hours, lengths, voices and categories per split of a prepared dataset."""

from __future__ import annotations

import collections

import numpy as np

from chorus.audio.io import load_wave
from data_pipelines.corpus_plan import SPLITS
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap, SourceError, open_source


def split_stats(source, fields: FieldMap = DEFAULT_FIELDS) -> dict:
    seconds, words = [], []
    voices, speakers, categories = set(), set(), collections.Counter()
    controls = {"rate": [], "pitch": []}  # chorus_speech's: shows test_prosody's ranges
    unreadable = 0
    for i in range(len(source)):
        record = source[i]
        if "duration" in record:
            seconds.append(float(record["duration"]))
        else:
            try:
                seconds.append(len(load_wave(record[fields.audio], fields.sample_rate)) / 16_000)
            except Exception:  # counted, a stats pass never stops on one bad record
                unreadable += 1
        text = record.get(fields.text, b"")
        words.append(len((text.decode() if isinstance(text, bytes) else str(text)).split()))
        for key, bucket in (("voice", voices), (fields.speaker, speakers)):
            if key and key in record:
                value = record[key]
                bucket.add(value.decode() if isinstance(value, bytes) else str(value))
        for key, values in controls.items():
            if key in record:
                values.append(int(record[key]))
        if "category" in record:
            value = record["category"]
            categories[value.decode() if isinstance(value, bytes) else str(value)] += 1
    s = np.asarray(seconds) if seconds else np.zeros(1)
    return {"examples": len(source), "hours": float(s.sum() / 3600),
            "seconds_min": float(s.min()), "seconds_mean": float(s.mean()),
            "seconds_p50": float(np.percentile(s, 50)), "seconds_p95": float(np.percentile(s, 95)),
            "seconds_max": float(s.max()), "words_mean": float(np.mean(words)) if words else 0.0,
            "voices": len(voices), "speakers": len(speakers),
            "categories": dict(sorted(categories.items())), "unreadable": unreadable,
            **{f"{k}_min_max": [min(v), max(v)] for k, v in controls.items() if v}}


def dataset_stats(data_dir: str, name: str = "chorus_speech",
                  splits: tuple[str, ...] = SPLITS, fields: FieldMap = DEFAULT_FIELDS) -> dict:
    out = {}
    for split in splits:
        try:
            out[split] = split_stats(open_source(name, data_dir, split), fields)
        except SourceError as e:
            out[split] = {"error": str(e)}
    return out


def format_stats(stats: dict) -> str:
    lines = ["| split | examples | hours | s min / mean / p95 / max | words | voices | speakers "
             "| rate | pitch |", "|---|---|---|---|---|---|---|---|---|"]
    span = lambda s, key: "{}-{}".format(*s[key]) if key in s else ""  # noqa: E731
    for split, s in stats.items():
        if "error" in s:
            lines.append(f"| {split} | error: {s['error']} | | | | | | | |")
            continue
        lines.append(f"| {split} | {s['examples']} | {s['hours']:.3f} | "
                     f"{s['seconds_min']:.2f} / {s['seconds_mean']:.2f} / {s['seconds_p95']:.2f}"
                     f" / {s['seconds_max']:.2f} | {s['words_mean']:.1f} | {s['voices']} | "
                     f"{s['speakers']} | {span(s, 'rate_min_max')} | {span(s, 'pitch_min_max')} |")
    categories = collections.Counter()
    for s in stats.values():
        categories.update(s.get("categories", {}))
    if categories:
        lines += ["", "categories: " + ", ".join(f"{k}={v}" for k, v in sorted(categories.items()))]
    return "\n".join(lines)
