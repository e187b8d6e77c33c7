"""The judge's accuracy tables (`chorus eval --workdir W`: W/eval/judge_eval.{json,md}).

    pointwise  per persona split (train_personas: cards from the training lexicon;
               held_out_personas: names and places never on a training card) and per answer
               type (consistent + every perturbation, the held-out types marked): accuracy of
               reward > 0.5 against the label, mean reward, and how often the greedy rationale
               is the constructed one (exact) or checks the same thing (its "checked X:" head)
    summary    balanced accuracy (consistent vs trained perturbations) per split, and the
               accuracy on the held-out perturbation types (held-out personas)
    pairwise   held-out personas, a consistent vs a perturbed answer per type: accuracy of
               the order-averaged reward, and of each single ordering (position bias)
Examples are a pure function of the run's seed, so two runs (with and without rationales)
are judged on the same exchanges.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.personas import split_lexicon
from experiments.judge.labels import (
    CONSISTENT,
    KINDS,
    PERTURBATIONS,
    make_example,
    make_pair,
)
from experiments.judge.scoring import JudgeScorer
from experiments.judge.settings import JudgeSettings

SPLITS = ("train_personas", "held_out_personas")


def _head(text: str) -> str:
    return text.split(":", 1)[0].strip()


def pointwise_table(scorer: JudgeScorer, settings: JudgeSettings, lexicon, split_index: int,
                    seed: int) -> dict:
    table = {}
    for t, kind in enumerate(KINDS):
        rng = np.random.default_rng([seed, 2, split_index, t])
        examples = [make_example(rng, kind, lexicon) for _ in range(settings.eval_examples)]
        judged = scorer.pointwise([e.persona.card() for e in examples],
                                  [e.question for e in examples], [e.answer for e in examples])
        labels = np.array([e.label for e in examples])
        written = [r[0] for r in judged.rationales]
        table[kind] = {
            "accuracy": float(np.mean((judged.reward > 0.5) == labels)),
            "mean_reward": float(judged.reward.mean()),
            "verdict_mass": float(judged.verdict_mass.mean()),
            "held_out_type": kind in settings.held_out_perturbations,
            "examples": len(examples)}
        if settings.rationale:
            table[kind]["rationale_exact"] = float(np.mean(
                [w.strip() == e.rationale for w, e in zip(written, examples, strict=True)]))
            table[kind]["rationale_same_check"] = float(np.mean(
                [_head(w) == _head(e.rationale) for w, e in zip(written, examples,
                                                                  strict=True)]))
            table[kind]["sample"] = {"answer": examples[0].answer,
                                     "expected": examples[0].rationale, "written": written[0]}
    return table


def pairwise_table(scorer: JudgeScorer, settings: JudgeSettings, lexicon, seed: int) -> dict:
    table = {}
    for t, kind in enumerate(PERTURBATIONS):
        rng = np.random.default_rng([seed, 3, t])
        pairs = [make_pair(rng, kind, lexicon) for _ in range(settings.eval_examples)]
        judged = scorer.pairwise([p.persona.card() for p in pairs], [p.question for p in pairs],
                                 [p.answer_a for p in pairs], [p.answer_b for p in pairs])
        a_better = np.array([p.better == "a" for p in pairs])
        table[kind] = {
            "accuracy": float(np.mean((judged["reward"] > 0.5) == a_better)),
            "accuracy_one_order": float(np.mean((judged["a_first"] > 0.5) == a_better)),
            "accuracy_swapped_order": float(np.mean((judged["b_first"] < 0.5) == a_better)),
            "held_out_type": kind in settings.held_out_perturbations,
            "examples": len(pairs)}
    return table


def accuracy_tables(scorer: JudgeScorer, settings: JudgeSettings, seed: int = 0) -> dict:
    lexicons = dict(zip(SPLITS, split_lexicon(every=settings.held_out_every), strict=True))
    report = {"rationale": settings.rationale,
              "held_out_perturbations": list(settings.held_out_perturbations)}
    for i, split in enumerate(SPLITS):
        report[split] = pointwise_table(scorer, settings, lexicons[split], i, seed)
    trained = settings.trained_perturbations
    report["summary"] = {
        split: {"balanced_accuracy_trained_types": float(
                    0.5 * report[split][CONSISTENT]["accuracy"]
                    + 0.5 * np.mean([report[split][k]["accuracy"] for k in trained]))}
        for split in SPLITS}
    held = settings.held_out_perturbations
    if held:
        report["summary"]["held_out_types_accuracy"] = float(np.mean(
            [report["held_out_personas"][k]["accuracy"] for k in held]))
    report["pairwise"] = pairwise_table(scorer, settings, lexicons["held_out_personas"], seed)
    report["summary"]["pairwise_accuracy"] = float(np.mean(
        [v["accuracy"] for v in report["pairwise"].values()]))
    return report


def report_markdown(report: dict) -> str:
    rat = report["rationale"]
    lines = [f"judge (rationale: {rat}); held-out types: {report['held_out_perturbations']}", "",
             "| personas | answer | accuracy | mean reward | rationale exact | same check |",
             "|---|---|---|---|---|---|"]
    for split in SPLITS:
        for kind, r in report[split].items():
            mark = " (held out)" if r["held_out_type"] else ""
            extra = (f"{r['rationale_exact']:.2f} | {r['rationale_same_check']:.2f}" if rat
                     else "- | -")
            lines.append(f"| {split} | {kind}{mark} | {r['accuracy']:.3f} | "
                         f"{r['mean_reward']:.3f} | {extra} |")
    lines += ["", "| pairwise (held-out personas) | accuracy | one order | swapped order |",
              "|---|---|---|---|"]
    for kind, r in report["pairwise"].items():
        mark = " (held out)" if r["held_out_type"] else ""
        lines.append(f"| {kind}{mark} | {r['accuracy']:.3f} | {r['accuracy_one_order']:.3f} | "
                     f"{r['accuracy_swapped_order']:.3f} |")
    s = report["summary"]
    lines += ["", "summary: " + ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else
        f"{k}: balanced={v['balanced_accuracy_trained_types']:.3f}" for k, v in s.items())]
    return "\n".join(lines) + "\n"
