"""The reward model's accuracy tables (`chorus eval --workdir W`:
W/eval/reward_model_eval.{json,md}).

    per persona split (train_personas: cards of the training names and places;
    held_out_personas: only the held-out ones) and per perturbation type (held-out types
    marked): pairwise accuracy, r(consistent) > r(perturbed), and the mean sigmoid(r) of each
    side. The held-out-persona pairs are the judge's pairwise table's own (the same rng
    streams, experiments/judge/evaluate.py), so the two arms are compared on one set.
    summary  mean pairwise accuracy over the trained types per split, over the held-out types
             (held-out personas), and over every type (held-out personas)
"""

from __future__ import annotations

import numpy as np

from data_pipelines.personas import split_lexicon
from experiments.judge.labels import PERTURBATIONS, consistent_and_perturbed, make_pair
from experiments.reward_model.scoring import RewardModelScorer, sigmoid
from experiments.reward_model.settings import RewardModelSettings

SPLITS = ("train_personas", "held_out_personas")
STREAM = {"held_out_personas": 3, "train_personas": 4}  # 3: the judge's pairwise stream


def pair_table(scorer: RewardModelScorer, settings: RewardModelSettings, lexicon,
               split: str, seed: int) -> dict:
    table = {}
    for t, kind in enumerate(PERTURBATIONS):
        rng = np.random.default_rng([seed, STREAM[split], t])
        pairs = [make_pair(rng, kind, lexicon) for _ in range(settings.eval_examples)]
        good, bad = zip(*(consistent_and_perturbed(p) for p in pairs), strict=True)
        cards, questions = [p.persona.card() for p in pairs], [p.question for p in pairs]
        r_good = scorer.rewards(cards, questions, list(good))
        r_bad = scorer.rewards(cards, questions, list(bad))
        table[kind] = {"accuracy": float(np.mean(r_good > r_bad)),
                       "mean_reward_consistent": float(sigmoid(r_good).mean()),
                       "mean_reward_perturbed": float(sigmoid(r_bad).mean()),
                       "held_out_type": kind in settings.held_out_perturbations,
                       "examples": len(pairs)}
    return table


def accuracy_tables(scorer: RewardModelScorer, settings: RewardModelSettings,
                    seed: int = 0) -> dict:
    lexicons = dict(zip(SPLITS, split_lexicon(every=settings.held_out_every), strict=True))
    report = {"held_out_perturbations": list(settings.held_out_perturbations)}
    for split in SPLITS:
        report[split] = pair_table(scorer, settings, lexicons[split], split, seed)
    trained = settings.trained_perturbations
    summary = {f"{split}_trained_types_accuracy": float(np.mean(
        [report[split][k]["accuracy"] for k in trained])) for split in SPLITS}
    held = settings.held_out_perturbations
    if held:
        summary["held_out_types_accuracy"] = float(np.mean(
            [report["held_out_personas"][k]["accuracy"] for k in held]))
    summary["pairwise_accuracy"] = float(np.mean(
        [v["accuracy"] for v in report["held_out_personas"].values()]))
    report["summary"] = summary
    return report


def report_markdown(report: dict) -> str:
    lines = [f"Bradley-Terry reward model; held-out types: {report['held_out_perturbations']}",
             "", "| personas | perturbation | pairwise accuracy | reward consistent | "
             "reward perturbed |", "|---|---|---|---|---|"]
    for split in SPLITS:
        for kind, r in report[split].items():
            mark = " (held out)" if r["held_out_type"] else ""
            lines.append(f"| {split} | {kind}{mark} | {r['accuracy']:.3f} | "
                         f"{r['mean_reward_consistent']:.3f} | "
                         f"{r['mean_reward_perturbed']:.3f} |")
    lines += ["", "summary: " + ", ".join(f"{k}={v:.3f}"
                                          for k, v in report["summary"].items())]
    return "\n".join(lines) + "\n"
