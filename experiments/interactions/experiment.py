"""The interactions experiment: do the game-theoretic findings on adversarial examples hold
for speech? (`chorus analyze experiment`)

    chorus analyze experiment --asr runs/asr_ft --robust runs/asr_adv --data CORPUS --out OUT

For each model (the normal one, `--asr`, and the adversarially fine-tuned one, `--robust`)
and each of `--utterances` held-out utterances of `--split`:

    players   `--players` equal time segments of the clip's log-mel (baseline: the
              normalized log-mel mean)
    f(S)      log p(reference transcript <eos> | clip with S kept), the model's own score
    clean     the exact I^(m)(i, j) at every order m = 0 .. n-2 (the 2^n value table)
    attacked  the same on the clip after an untargeted L-inf PGD on the log-mel against that
              model (`--epsilon`, `--steps`), and the change |I_adv^(m) - I_clean^(m)|

Strength at order m is mean_{i<j} |I^(m)(i, j)| (../shared/REFERENCES.md); each utterance's
strengths are normalized to sum to 1 over the orders before averaging (utterances differ in
scale), and the error bars are standard errors over utterances. Two questions are answered
from the numbers, in results.json and results.md:

    1. Does the attack mainly change high-order interactions? The share of the change at
       m/n >= 0.5 against the share of the clean strength there.
    2. Does adversarial training move interactions to low order? The clean strength share at
       m/n <= 0.3 of the robust model against the normal one.

With `--tts RUN`, the text side too: the first `--texts` test-split texts (of 3 to 10 words)
through that TTS run's word game, each with its word-interaction tree (figure + metrics).

Each (model, utterance) record is appended to OUT/records.jsonl as it finishes; a rerun
skips the records already there, so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import jax
import numpy as np

from chorus.analysis.attacks import PGDConfig
from chorus.analysis.game import value_table
from chorus.analysis.interactions import interaction_strength, order_interactions
from chorus.analysis.players import time_segments
from chorus.atomic import write_json, write_text
from chorus.config import ConfigError
from experiments.interactions import plots

LOW, HIGH = 0.3, 0.5  # order shares compared: m/n <= LOW and m/n >= HIGH


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    asr_run: str
    robust_run: str
    data_dir: str
    out: str
    split: str = "test"
    utterances: int = 24
    players: int = 10
    baseline: str = "mean"
    epsilon: float = 0.5  # log-mel units (natural log); the encoder divides by mel_std
    steps: int = 10
    seed: int = 0
    tts_run: str = ""
    codec_run: str = ""
    texts: int = 3

    def __post_init__(self):
        from chorus.config import check

        check(self.utterances >= 2, "--utterances", "at least 2 (error bars)", self.utterances)
        check(2 <= self.players <= 14, "--players", "2 to 14 (exact: 2^n values each)",
              self.players)
        check(self.texts >= 0, "--texts", "a number >= 0", self.texts)
        PGDConfig(epsilon=self.epsilon, steps=self.steps)  # validates both


def _records(path: str) -> dict[tuple[str, str], dict]:
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[(r["model"], r["id"])] = r
    return out


def _append(path: str, record: dict) -> None:
    # One line per record, flushed and fsynced: a crash loses at most the record in flight.
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def utterance_record(transcriber, example: dict, settings: ExperimentSettings, rng) -> dict:
    """The clean and attacked interactions of one utterance under one model."""
    from chorus.eval.text_metrics import utterance_error_rates
    from experiments.asr.adversarial import attack_log_mel, transcribe
    from experiments.asr.scoring import transcript_scorer
    from experiments.interactions.games import audio_game

    t = int(np.asarray(example["audio_mask"]).sum())
    frames = np.asarray(example["audio_features"]).reshape(-1, transcriber.config.audio.n_mels)
    frames = frames[:t]
    ids = np.asarray(example["reference_ids"], np.int32)
    scorer = transcript_scorer(transcriber.asr.backbone, transcriber.layout, t, ids)
    attack = attack_log_mel(scorer, transcriber.params["backbone"], frames[None],
                            PGDConfig(epsilon=settings.epsilon, steps=settings.steps), rng)
    adversarial = np.asarray(attack.features)[0]
    players = time_segments(t, settings.players)
    orders = tuple(range(settings.players - 1))
    out = {"id": example["id"], "frames": t, "reference": example["reference_text"]}
    inter = {}
    for name, clip in (("clean", frames), ("attacked", adversarial)):
        table = value_table(audio_game(transcriber, clip, ids, players, settings.baseline))
        inter[name] = order_interactions(table, orders)
        out[name] = {"value_full": float(table[-1]), "value_empty": float(table[0]),
                     "strength": interaction_strength(inter[name]).tolist()}
    out["change"] = interaction_strength(inter["attacked"] - inter["clean"]).tolist()
    texts = transcribe(transcriber, np.stack([frames, adversarial]))
    wer = utterance_error_rates([example["reference_text"]] * 2, texts, "wer")
    out["clean"].update(text=texts[0], wer=float(wer[0]))
    out["attacked"].update(text=texts[1], wer=float(wer[1]))
    return out


def _normalized(strength: np.ndarray) -> np.ndarray:
    """Per utterance [K, M], each row divided by its sum over the orders."""
    return strength / np.maximum(strength.sum(axis=-1, keepdims=True), 1e-30)


def _shares(strength: np.ndarray, ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance [K, M] -> (low-order share [K], high-order share [K]) of the total."""
    rel = _normalized(strength)
    return rel[:, ratios <= LOW].sum(-1), rel[:, ratios >= HIGH].sum(-1)


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def aggregate(records: list[dict], players: int) -> dict:
    """Per model: relative strength by order (clean, attacked), the change, WER, shares."""
    ratios = np.arange(players - 1) / players
    out = {"ratios": ratios.tolist(), "models": {}}
    for model in dict.fromkeys(r["model"] for r in records):
        rows = [r for r in records if r["model"] == model]
        m = {"utterances": len(rows)}
        for cond in ("clean", "attacked"):
            s = np.asarray([r[cond]["strength"] for r in rows])
            rel = _normalized(s)
            low, high = _shares(s, ratios)
            m[cond] = {"relative_mean": rel.mean(0).tolist(),
                       "relative_stderr": (rel.std(0, ddof=1) / np.sqrt(len(rows))).tolist(),
                       "absolute_mean": s.mean(0).tolist(),
                       "low_share": _mean_se(low), "high_share": _mean_se(high),
                       "wer": _mean_se([r[cond]["wer"] for r in rows]),
                       "value_full": _mean_se([r[cond]["value_full"] for r in rows])}
        c = np.asarray([r["change"] for r in rows])
        rel = _normalized(c)
        low, high = _shares(c, ratios)
        m["change"] = {"relative_mean": rel.mean(0).tolist(),
                       "relative_stderr": (rel.std(0, ddof=1) / np.sqrt(len(rows))).tolist(),
                       "absolute_mean": c.mean(0).tolist(),
                       "low_share": _mean_se(low), "high_share": _mean_se(high)}
        out["models"][model] = m
    return out


def answers(summary: dict) -> dict:
    """The two questions, answered from the numbers (mean +- standard error)."""
    out = {}
    for model, m in summary["models"].items():
        change, clean = m["change"]["high_share"], m["clean"]["high_share"]
        out[f"attack_shifts_high_order[{model}]"] = {
            "change_high_share": change, "clean_high_share": clean,
            "holds": bool(change[0] - clean[0] > 2 * np.hypot(change[1], clean[1]))}
    models = list(summary["models"])
    if len(models) == 2:
        normal, robust = (summary["models"][k]["clean"]["low_share"] for k in models)
        out["adversarial_training_moves_to_low_order"] = {
            "normal_low_share": normal, "robust_low_share": robust,
            "holds": bool(robust[0] - normal[0] > 2 * np.hypot(normal[1], robust[1]))}
    return out


def markdown(summary: dict, found: dict, settings: ExperimentSettings) -> str:
    pm = lambda v: f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = [f"Interactions experiment: {settings.split} split, {settings.players} time "
             f"segments, baseline {settings.baseline}, PGD L-inf eps {settings.epsilon} "
             f"(log-mel), {settings.steps} steps", "",
             f"| model | input | WER | log p(ref) | strength share m/n <= {LOW} | "
             f"share m/n >= {HIGH} |", "|---|---|---|---|---|---|"]
    for model, m in summary["models"].items():
        for cond in ("clean", "attacked"):
            c = m[cond]
            lines.append(f"| {model} | {cond} | {pm(c['wer'])} | {pm(c['value_full'])} | "
                         f"{pm(c['low_share'])} | {pm(c['high_share'])} |")
        ch = m["change"]
        lines.append(f"| {model} | change (attacked - clean) | | | {pm(ch['low_share'])} | "
                     f"{pm(ch['high_share'])} |")
    lines += ["", "| question | measured | holds |", "|---|---|---|"]
    for name, a in found.items():
        measured = ", ".join(f"{k} {pm(v)}" for k, v in a.items() if k != "holds")
        lines.append(f"| {name} | {measured} | {'yes' if a['holds'] else 'no'} |")
    return "\n".join(lines) + "\n"


def figures(summary: dict, out: str) -> list[str]:
    ratios = summary["ratios"]
    curves, change = {}, {}
    for model, m in summary["models"].items():
        for cond in ("clean", "attacked"):
            curves[f"{model}, {cond}"] = (ratios, m[cond]["relative_mean"],
                                          m[cond]["relative_stderr"])
        change[model] = (ratios, m["change"]["relative_mean"], m["change"]["relative_stderr"])
    return [plots.strength_curves(curves, os.path.join(out, "strength_by_order.png"),
                                  "relative strength (sums to 1 over orders)",
                                  "Interaction strength by order"),
            plots.strength_curves(change, os.path.join(out, "attack_change_by_order.png"),
                                  "relative |I_adv - I_clean| (sums to 1)",
                                  "What the attack changes, by order")]


def word_trees(settings: ExperimentSettings, out: str) -> list[dict]:
    """The text side: word games of test texts through the TTS run, with their trees."""
    from data_pipelines.sources import open_source
    from experiments.interactions.explain import explain_text

    source = open_source("chorus_speech", settings.data_dir, settings.split)
    results = []
    for i in range(len(source)):
        if len(results) >= settings.texts:
            break
        raw = source[i]
        text = raw["text"].decode() if isinstance(raw["text"], bytes) else str(raw["text"])
        if not 3 <= len(text.split()) <= 10:
            continue
        folder = os.path.join(out, f"words_{len(results)}")
        report = explain_text(settings.tts_run, text, folder, codec_run=settings.codec_run or None,
                              seed=settings.seed, show_progress=False)
        results.append({"text": text, "folder": folder, "shapley": report["shapley"]["mean"],
                        "tree": report["tree"]})
    return results


def run(settings: ExperimentSettings) -> dict:
    from experiments.asr.regime import eval_examples
    from experiments.asr.settings import asr_settings
    from experiments.asr.transcriber import load_transcriber
    from experiments.interactions.explain import ProgressBars

    os.makedirs(settings.out, exist_ok=True)
    records_path = os.path.join(settings.out, "records.jsonl")
    done = _records(records_path)
    if done:
        first = next(iter(done.values()))
        if first.get("settings") != _identity(settings):
            raise ConfigError(f"{records_path}: records of other settings "
                              f"({first.get('settings')}); use another --out")
    records = []
    for model, workdir in (("normal", settings.asr_run), ("robust", settings.robust_run)):
        transcriber, run_ = load_transcriber(workdir)
        asr = dataclasses.replace(asr_settings(run_.config), data_dir=settings.data_dir)
        examples = eval_examples(run_.config, asr, settings.split, settings.utterances)
        bar = ProgressBars(f"interactions {model}")
        for k, example in enumerate(examples):
            key = (model, str(example["id"]))
            if key not in done:
                rng = jax.random.PRNGKey(settings.seed * 100003 + k)
                record = {"model": model, "run": workdir, "settings": _identity(settings),
                          **utterance_record(transcriber, example, settings, rng)}
                record["id"] = str(record["id"])
                _append(records_path, record)
                done[key] = record
            records.append(done[key])
            bar(k + 1, len(examples))
    summary = aggregate(records, settings.players)
    found = answers(summary)
    result = {"settings": dataclasses.asdict(settings), "summary": summary, "answers": found,
              "figures": figures(summary, settings.out)}
    if settings.tts_run and settings.texts:
        result["words"] = word_trees(settings, settings.out)
    write_json(os.path.join(settings.out, "results.json"), result)
    text = markdown(summary, found, settings)
    write_text(os.path.join(settings.out, "results.md"), text)
    print(text)
    return result


def _identity(settings: ExperimentSettings) -> dict:
    """The settings that decide a record (a resumed run must share them)."""
    keep = ("asr_run", "robust_run", "split", "players", "baseline", "epsilon", "steps", "seed")
    return {k: getattr(settings, k) for k in keep}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus analyze experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asr", required=True, help="the normal ASR run")
    p.add_argument("--robust", required=True, help="the adversarially fine-tuned ASR run")
    p.add_argument("--data", required=True, help="the corpus (chorus data synth --out DIR)")
    p.add_argument("--out", required=True)
    p.add_argument("--tts", default="", help="a TTS run: word games of test texts too")
    p.add_argument("--codec", default="", help="the TTS run's codec run (default: its own)")
    defaults = ExperimentSettings("", "", "", "")
    for name in ("split", "utterances", "players", "baseline", "epsilon", "steps", "seed",
                 "texts"):
        value = getattr(defaults, name)
        p.add_argument(f"--{name}", type=type(value), default=value)
    args = p.parse_args(argv)
    try:
        settings = ExperimentSettings(
            asr_run=args.asr, robust_run=args.robust, data_dir=args.data, out=args.out,
            tts_run=args.tts, codec_run=args.codec,
            **{k: getattr(args, k) for k in ("split", "utterances", "players", "baseline",
                                             "epsilon", "steps", "seed", "texts")})
        run(settings)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"chorus analyze experiment: {e}", file=sys.stderr)
        return 2
    return 0
