"""The Bradley-Terry reward model: the judge's input scored by a scalar head, trained on pairs.

The realtime ablation's third arm beside the generative judge (experiments/judge/) and the
exact persona checker (experiments/realtime/checker.py). Same labels as the judge (a
consistent answer and a perturbed one to the same question, experiments/judge/labels.py),
same input up to where the judge would start its rationale, but no words: one scalar r per
exchange, trained with the Bradley-Terry loss -log sigmoid(r(consistent) - r(perturbed)).

    settings.py    RewardModelSettings (`--set experiment.<field>=...`)
    experiment.py  `chorus train --experiment reward_model`: generated pair batches (exact
                   resume), the loss, eval, the tokenizer as a run asset
    scoring.py     r per exchange: the scalar head on the backbone's hidden state at the last
                   prompt token (`<rationale>`)
    evaluate.py    `chorus eval`: pairwise accuracy per perturbation type on training and
                   held-out personas (held-out types marked), mean reward per answer type
    rewards.py     the RL reward component "reward_model" (sigmoid(r) in (0, 1))

    chorus train --experiment reward_model --preset cpu-tiny --workdir runs/rm --data DATA
    chorus eval --workdir runs/rm
"""

from __future__ import annotations


def build(config):
    from experiments.reward_model.experiment import build as build_reward_model

    return build_reward_model(config)
