"""`chorus bench tts-controls`: are the TTS control measurements (experiments.tts.controls)
to be trusted as rewards? Measured on the corpus' own eSpeak audio, whose controls are known
exactly.

    chorus bench tts-controls --data DIR [--split validation] [--examples N] [--out DIR]

Rows: each record's whole-utterance measures against the parameters eSpeak spoke it with
(records with a tag at the start count with the tag's parameters, data_pipelines.corpus_plan;
records with a mid-text tag are left out here: two settings in one wave) —
  f0 vs pitch         Pearson of log f0 and Spearman, over all voiced records, per gender,
                      and within a voice variant (both sides less the variant's mean)
  wpm, cps vs rate    Pearson / Spearman (cps, letters per second, is the rate control)
  loudness vs volume  Pearson of dBFS vs 20 log10(volume) / Spearman, and within a variant
  voicing fraction    whisper voices vs the rest: means, point-biserial r, and the AUC (share
                      of (whisper, other) pairs where the whisper is less voiced)
and per inline tag, over the records with it mid-text: the share whose tagged stretch moved
the tag's way by at least controls.MIN_CHANGE, and the mean change; and the null (the
controls a record's tag leaves alone: how often plain speech "moves" as much). Writes
tts_controls.json
and tts_controls.md into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Iterable

import numpy as np

from chorus.atomic import write_json, write_text


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    from scipy.stats import rankdata

    return pearson(rankdata(x), rankdata(y)) if len(x) >= 3 else math.nan


def auc_lower(positives, negatives) -> float:
    """P(a positive's value < a negative's), ties half: 1 = the positives all lower."""
    p, n = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if not p.size or not n.size:
        return math.nan
    less = (p[:, None] < n[None, :]).mean()
    ties = (p[:, None] == n[None, :]).mean()
    return float(less + 0.5 * ties)


def effective(target) -> tuple[str, int, int, int] | None:
    """(voice, rate, pitch, volume) eSpeak spoke the whole record with; None when a tag
    changes them mid-text."""
    from data_pipelines.corpus_plan import _apply_tag
    from data_pipelines.synthesis import Segment

    base = Segment(target.text, target.voice, target.rate, target.pitch, target.volume)
    tag = target.tag
    if tag is None:
        return base.voice, base.rate, base.pitch, base.volume
    if not target.tagged_text.startswith(tag):
        return None
    s = _apply_tag(tag, base)
    return s.voice, s.rate, s.pitch, s.volume


def _corr(name: str, x, y, n_key: str = "n", transform=None) -> dict:
    tx = transform(np.asarray(x, np.float64)) if transform else x
    return {"measure": name, n_key: len(x), "pearson": pearson(tx, y), "spearman":
            spearman(x, y)}


def validate(records: Iterable[tuple[object, np.ndarray]]) -> dict:
    """The benchmark's results over (SpeechTarget, 16 kHz wave) pairs."""
    from data_pipelines.voices import get_voice
    from experiments.tts import controls as C

    rows, tags = [], {}
    for target, wave in records:
        track = C.analyze(wave)
        eff = effective(target)
        if eff is None:
            change = C.inline_change(track, target.tagged_text)
            if change is not None:
                tags.setdefault(change.tag, []).append(change)
            continue
        voice, rate, pitch, volume = eff
        v = get_voice(voice)
        rows.append({"m": C.measure(track, target.text), "rate": rate, "pitch": pitch,
                     "volume": volume, "gender": v.gender, "variant": v.variant,
                     "whisper": v.variant in ("whisper", "whisperf")})
    results = {"records": len(rows) + sum(len(v) for v in tags.values()),
               "utterance_records": len(rows), "correlations": [], "voicing": {}, "tags": [],
               "null": []}
    corr = results["correlations"]
    voiced = [r for r in rows if not math.isnan(r["m"].f0)]
    corr.append(_corr("log f0 vs pitch (all voiced)", [r["m"].f0 for r in voiced],
                      [r["pitch"] for r in voiced], transform=np.log))
    for gender in ("female", "male"):
        g = [r for r in voiced if r["gender"] == gender]
        corr.append(_corr(f"log f0 vs pitch ({gender})", [r["m"].f0 for r in g],
                          [r["pitch"] for r in g], transform=np.log))
    # Within a variant: the variant sets the base pitch (and level); the parameter moves it.
    by_variant: dict[str, list] = {}
    for r in voiced:
        by_variant.setdefault(r["variant"], []).append(r)
    corr.append(_corr("log f0 vs pitch (within variant)", *_within(
        by_variant, lambda r: math.log(r["m"].f0), lambda r: r["pitch"])))
    corr.append(_corr("wpm vs rate", [r["m"].wpm for r in rows], [r["rate"] for r in rows]))
    corr.append(_corr("cps vs rate (the rate control)", [r["m"].cps for r in rows],
                      [r["rate"] for r in rows]))
    db = lambda r: 20 * math.log10(max(r["volume"], 1))  # noqa: E731
    corr.append(_corr("loudness dBFS vs 20 log10 volume", [r["m"].loudness for r in rows],
                      [db(r) for r in rows]))
    all_variants: dict[str, list] = {}
    for r in rows:
        all_variants.setdefault(r["variant"], []).append(r)
    corr.append(_corr("loudness vs 20 log10 volume (within variant)", *_within(
        all_variants, lambda r: r["m"].loudness, db)))
    whisper = [r["m"].voiced for r in rows if r["whisper"]]
    other = [r["m"].voiced for r in rows if not r["whisper"]]
    results["voicing"] = {
        "whisper_n": len(whisper), "other_n": len(other),
        "whisper_mean": float(np.mean(whisper)) if whisper else math.nan,
        "other_mean": float(np.mean(other)) if other else math.nan,
        "point_biserial_r": pearson([r["m"].voiced for r in rows],
                                    [float(r["whisper"]) for r in rows]),
        "auc_whisper_lower": auc_lower(whisper, other)}
    for tag in C.INLINE_TAG_ORDER:
        changes = tags.get(tag, [])
        values = [c.change for c in changes if not math.isnan(c.change)]
        control = C.TAG_EFFECTS[tag][0]
        results["tags"].append({
            "tag": tag, "control": control, "unit": C.CHANGE_UNIT[control],
            "n": len(changes),
            "moved_share": float(np.mean([c.moved for c in changes])) if changes else math.nan,
            "mean_change": float(np.mean(values)) if values else math.nan})
    # The null: the controls a record's tag does not touch, measured the same way. How often
    # plain speech "moves" by MIN_CHANGE either way, and how much it varies.
    for control in C.CONTROLS:
        null = np.array([C.change(control, c.tagged, c.rest) for tag, cs in tags.items()
                         for c in cs if C.TAG_EFFECTS[tag][0] != control], np.float64)
        null = null[np.isfinite(null)]
        results["null"].append({
            "control": control, "unit": C.CHANGE_UNIT[control], "n": int(null.size),
            "min_change": C.MIN_CHANGE[control],
            "std": float(null.std()) if null.size else math.nan,
            "up_share": float(np.mean(null >= C.MIN_CHANGE[control])) if null.size
            else math.nan,
            "down_share": float(np.mean(null <= -C.MIN_CHANGE[control])) if null.size
            else math.nan})
    return results


def _within(groups: dict[str, list], fx, fy) -> tuple[list, list]:
    """Both sides less their group's mean, over the groups of two or more."""
    dx, dy = [], []
    for group in groups.values():
        if len(group) < 2:
            continue
        x = np.array([fx(r) for r in group], np.float64)
        y = np.array([fy(r) for r in group], np.float64)
        dx += list(x - x.mean())
        dy += list(y - y.mean())
    return dx, dy


def read_corpus(data_dir: str, split: str, examples: int, dataset: str = "chorus_speech"):
    """(SpeechTarget, wave) of the first `examples` records of a split."""
    from chorus.audio.io import from_int16
    from data_pipelines.sources import open_source
    from experiments.tts.target import SpeechTarget

    source = open_source(dataset, data_dir, split)
    for i in range(min(examples, len(source))):
        raw = source[i]
        yield SpeechTarget.from_raw(raw), from_int16(np.asarray(raw["speech"]))


def _f(x: float, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def to_markdown(results: dict, header: dict) -> str:
    lines = [f"# TTS control measurements vs eSpeak ground truth ({header['split']}, "
             f"{results['records']} records, {header['seconds']:.1f} s)", "",
             f"data: {header['data']}; machine: {header['machine']}, {header['cpus']} CPUs", "",
             "| measure | n | Pearson | Spearman |", "|---|---|---|---|"]
    for c in results["correlations"]:
        lines.append(f"| {c['measure']} | {c['n']} | {_f(c['pearson'])} | "
                     f"{_f(c['spearman'])} |")
    v = results["voicing"]
    lines += ["", "| voicing fraction | n | mean |", "|---|---|---|",
              f"| whisper voices | {v['whisper_n']} | {_f(v['whisper_mean'])} |",
              f"| other voices | {v['other_n']} | {_f(v['other_mean'])} |", "",
              f"point-biserial r (voiced share vs whisper) {_f(v['point_biserial_r'])}, AUC "
              f"(whisper less voiced) {_f(v['auc_whisper_lower'])}", "",
              "| inline tag (mid-text) | control | n | moved its way | mean change |",
              "|---|---|---|---|---|"]
    for t in results["tags"]:
        lines.append(f"| {t['tag']} | {t['control']} | {t['n']} | {_f(t['moved_share'], 2)} | "
                     f"{_f(t['mean_change'], 2)} {t['unit']} |")
    lines += ["", "The null: controls the record's tag does not touch (plain speech, stretch vs "
              "rest).", "",
              "| control | n | std | min change | moved up | moved down |",
              "|---|---|---|---|---|---|"]
    for z in results["null"]:
        lines.append(f"| {z['control']} | {z['n']} | {_f(z['std'], 2)} {z['unit']} | "
                     f"{_f(z['min_change'], 2)} | {_f(z['up_share'], 2)} | "
                     f"{_f(z['down_share'], 2)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus bench tts-controls",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="TFDS data_dir with chorus_speech")
    p.add_argument("--split", default="validation")
    p.add_argument("--examples", type=int, default=200, help="the first N records")
    p.add_argument("--out", default="runs/bench", help="folder for the JSON + markdown")
    args = p.parse_args(argv)
    if args.examples < 1:
        p.error(f"--examples: expected an int >= 1, got {args.examples}")
    start = time.perf_counter()
    results = validate(read_corpus(args.data, args.split, args.examples))
    seconds = time.perf_counter() - start
    header = {"split": args.split, "examples": args.examples, "data": args.data,
              "seconds": seconds, "machine": platform.platform(), "cpus": os.cpu_count()}
    write_json(os.path.join(args.out, "tts_controls.json"),
               {"header": header, "results": results})
    markdown = to_markdown(results, header)
    write_text(os.path.join(args.out, "tts_controls.md"), markdown)
    print(markdown)
    print(json.dumps({"seconds": seconds, "records": results["records"]}))
    return 0
