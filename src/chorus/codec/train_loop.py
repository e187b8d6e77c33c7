"""A small optax training loop shared by the codec models, with atomic resumable checkpoints.

Each model is a `Stage`: how to initialize its params, its loss, and how to draw a batch.
A stage whose checkpoint already reached `steps` is skipped; an interrupted one resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from chorus.codec import checkpoint
from chorus.codec.compile import jit
from chorus.codec.config import StageTrainConfig

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    init_params: Callable[[jax.Array], Any]
    loss_fn: LossFn
    next_batch: Callable[[np.random.Generator], dict]
    train: StageTrainConfig


def make_optimizer(cfg: StageTrainConfig) -> optax.GradientTransformation:
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1), end_value=cfg.learning_rate * cfg.end_lr_ratio)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


def run_stage(stage: Stage, folder: str, seed: int, log: Callable[[str], None] = print) -> Any:
    """Trains `stage` to `stage.train.steps` and returns its params (checkpointed in folder)."""
    cfg = stage.train
    os.makedirs(folder, exist_ok=True)
    ckpt_path = os.path.join(folder, f"{stage.name}.ckpt")
    log_path = os.path.join(folder, f"{stage.name}.log.jsonl")
    key = jax.random.PRNGKey(seed)
    optimizer = make_optimizer(cfg)

    def fresh_state(k):
        params = stage.init_params(k)
        return {"params": params, "opt_state": optimizer.init(params), "step": 0}

    if os.path.isfile(ckpt_path):
        # Only the structure is needed to restore: eval_shape avoids compiling the init.
        state = checkpoint.load(ckpt_path, jax.eval_shape(fresh_state, key))
        if int(state["step"]) >= cfg.steps:
            log(f"[{stage.name}] done at step {int(state['step'])}: {ckpt_path}")
            return state["params"]
        log(f"[{stage.name}] resuming from step {int(state['step'])}")
    else:
        # One jitted init: eager flax init compiles each random op per shape (slow on CPU).
        state = jit(fresh_state)(jax.random.fold_in(key, 0))

    @jit
    def train_step(params, opt_state, batch, rng):
        grad_fn = jax.value_and_grad(stage.loss_fn, has_aux=True)
        (loss, metrics), grads = grad_fn(params, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return optax.apply_updates(params, updates), opt_state, metrics

    params, opt_state, start = state["params"], state["opt_state"], int(state["step"])
    began = time.perf_counter()
    for step in range(start + 1, cfg.steps + 1):
        # Batches are a function of (seed, step): a resumed run sees what an unbroken one would.
        batch = stage.next_batch(np.random.default_rng([seed, step]))
        params, opt_state, metrics = train_step(params, opt_state, batch,
                                                jax.random.fold_in(key, step))
        if step % cfg.log_every == 0 or step == cfg.steps:
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(f"[{stage.name}] step {step}: loss is {values['loss']}"
                                         f"; expected a finite loss (try a lower learning_rate)")
            values.update(step=step, seconds=round(time.perf_counter() - began, 2))
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(values) + "\n")
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "step")
            log(f"[{stage.name}] step {step}/{cfg.steps} {shown}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint.save(ckpt_path, {"params": params, "opt_state": opt_state, "step": step})
    return params
