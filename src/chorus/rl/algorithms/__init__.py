"""The RL experiment's algorithms, registered by name (`experiment.algo`).

    base   Algorithm (batch builder, loss, params), OnPolicyAlgorithm (+ scoring and the
           advantage estimator of sampled batches), register_algorithm / get_algorithm
    sft    the supervised warm-up: cross-entropy on the task's reference answers
    dpo    preference pairs (chosen = reference, rejected = corrupted) vs the reference policy
    grpo   G samples per prompt, group-relative advantages, clipped ratio + KL loss
    ppo    a value head, KL-shaped rewards, GAE, clipped policy + value loss

Adding an algorithm is one module with one `@register_algorithm("name")` class, imported
before the experiment is built (an experiment module may define it itself).
"""

from chorus.rl.algorithms import dpo, grpo, ppo, sft  # noqa: F401  (registers the built-ins)
from chorus.rl.algorithms.base import (  # noqa: F401
    Algorithm,
    OnPolicyAlgorithm,
    available_algorithms,
    get_algorithm,
    register_algorithm,
)
