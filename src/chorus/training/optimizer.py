"""AdamW with linear warmup + cosine decay, global-norm clipping, and a decay mask."""

from __future__ import annotations

import jax
import optax

from chorus.config import OptimizerConfig

# Parameter leaf names that are never decayed: norm scales and biases.
_NO_DECAY = ("scale", "bias")


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """LR per optimizer update. With gradient accumulation an update spans
    `grad_accum_steps` train steps, so the default decay covers total_steps / accum updates."""
    updates = -(-total_steps // cfg.grad_accum_steps)
    decay_steps = cfg.decay_steps or updates
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=max(decay_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.end_lr_ratio)


def decay_mask(params):
    def keep(path, _):
        name = getattr(path[-1], "key", getattr(path[-1], "name", ""))
        return str(name) not in _NO_DECAY
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW (decoupled decay, masked off norms/biases) after global-norm clipping."""
    chain = []
    if cfg.clip_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.clip_norm))
    chain.append(optax.adamw(learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2,
                             eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask))
    tx = optax.chain(*chain)
    if cfg.grad_accum_steps > 1:
        # Averages gradients over k successive train steps (batches), updates on the k-th.
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
    return tx
