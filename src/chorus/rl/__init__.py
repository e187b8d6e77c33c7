"""RLHF on the shared backbone: model-agnostic losses, rewards, rollouts, algorithms, sweeps.

    logprobs       sequence_logprobs (logits -> per-token logps), token_entropy
    masked         masked reductions and the loss aggregation modes
    surrogate      clipped ratio surrogate, KL estimators (k1, k3)
    dpo            DPO / label-smoothed DPO / IPO / hinge          (DPOConfig, dpo_loss)
    grpo           group advantages (mean | RLOO), GRPO loss       (GRPOConfig, grpo_loss)
    ppo            KL-shaped rewards, GAE, clipped policy + value  (PPOConfig, ppo_loss)
    rewards        reward registry (functions, model-holding classes) and weighted mixes
    model_rewards  reward components that hold models (backbone_logprob)
    task           Task protocol, Prompts, Completion (ids, text, audio codes)
    rollout        sampling and teacher-forced scoring on the params' own mesh
    engine         prompts -> rollouts -> completions -> rewards; held-out evaluation
    algorithms     the algorithm registry: sft, dpo, grpo, ppo (batch, advantages, loss)
    settings       RLSettings (typed `experiment.*` keys)
    experiment     build_rl_experiment: any registered algorithm over any Task
    init_from      policy and companions from another run's exported params
    ablate         `chorus ablate`: YAML sweeps -> runs -> tables and plots

Modules are imported directly (`from chorus.rl.grpo import grpo_loss`); this package imports
nothing so that `chorus ablate` starts without JAX.
"""
