"""The judge: a generative reward model on the shared backbone (its own params), text only.

    labels.py      perturbations of persona answers (wrong fact, wrong style, out of character,
                   refusal) with the rationale built from the fact checked; held-out persona
                   names / places and held-out perturbation types
    settings.py    JudgeSettings (`--set experiment.<field>=...`)
    prompt.py      the token layout
                   <judge> <rubric> .. <persona> card <user> question <assistant> answer
                   <rationale> | rationale .. <verdict> <yes>|<no> <eos>
                   (pairwise: <choice_a> .. <choice_b> .. <verdict> <choice_a>|<choice_b>)
    experiment.py  `chorus train --experiment judge`: generated batches, the loss on the
                   rationale + verdict, eval, the tokenizer as a run asset
    scoring.py     the reward p(yes) / (p(yes) + p(no)) after a greedy or K sampled rationales;
                   the pairwise reward averaged over both orderings
    evaluate.py    `chorus eval`: accuracy per answer type on held-out personas, the held-out
                   types, with the rationale's fidelity; pairwise accuracy and position bias
    rewards.py     the RL reward component "judge" (`rewards={"judge": {"weight": 1,
                   "run": "runs/judge"}}`)

    chorus data synth --out DATA --hours 0.05        # only its tokenizer is used
    chorus train --experiment judge --preset cpu-tiny --workdir runs/judge --data DATA
    chorus train --experiment judge --workdir runs/judge_direct --data DATA \
        --set experiment.rationale=false
    chorus eval --workdir runs/judge
"""

from __future__ import annotations


def build(config):
    from experiments.judge.experiment import build as build_judge

    return build_judge(config)
