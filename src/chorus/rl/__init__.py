"""RLHF core: model-agnostic losses over per-token log-probs, rewards and sweeps.

    logprobs   sequence_logprobs (logits -> per-token logps), token_entropy
    masked     masked reductions and the loss aggregation modes
    surrogate  clipped ratio surrogate, KL estimators (k1, k3)
    dpo        DPO / label-smoothed DPO / IPO / hinge          (DPOConfig, dpo_loss)
    grpo       group advantages (mean | RLOO), GRPO loss       (GRPOConfig, grpo_loss)
    ppo        KL-shaped rewards, GAE, clipped policy + value  (PPOConfig, ppo_loss)
    rewards    reward registry and weighted, normalized mixes
    ablate     `chorus ablate`: YAML sweeps -> runs -> tables and plots

Modules are imported directly (`from chorus.rl.grpo import grpo_loss`); this package imports
nothing so that `chorus ablate` starts without JAX.
"""
