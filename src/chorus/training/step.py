"""The pure train / eval steps. Jitted by the caller (partitioning.py, evaluation.py).

    train_step(state, batch, rng) -> (state, metrics)    NaN/Inf guard, optax update
    eval_step(params, batch, key) -> metrics             the loss without gradients

`rng` is the run's base key (raw uint32 key data, or a typed key); each train step draws from
fold_in(rng, state.step), so randomness is a pure function of (base key, step) and a resumed
run replays it exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from chorus.training.experiment import LossFn, merge_params
from chorus.training.state import TrainState


def step_key(rng: jax.Array, step: jax.Array) -> jax.Array:
    key = rng if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else (
        jax.random.wrap_key_data(rng))
    return jax.random.fold_in(key, step)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """A step that skips (and counts) updates whose loss or gradients are not finite."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        def loss_of(trainable):
            return loss_fn(merge_params(trainable, state.frozen), batch,
                           step_key(rng, state.step))

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        nonfinite_in_a_row = jnp.where(finite, 0, state.nonfinite_in_a_row + 1)
        nonfinite_total = state.nonfinite_total + (~finite).astype(jnp.int32)
        state = state.replace(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            nonfinite_in_a_row=nonfinite_in_a_row,
            nonfinite_total=nonfinite_total,
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                       skipped=(~finite).astype(jnp.float32),
                       nonfinite_in_a_row=nonfinite_in_a_row, nonfinite_total=nonfinite_total)
        return state, metrics

    return train_step


def make_eval_step(loss_fn: LossFn):
    """(params, batch, key) -> metrics (incl. loss): the loss function without gradients.

    `params` are the merged (trainable + frozen) params; `key` is the step's key."""

    def eval_step(params: Any, batch: dict, key: jax.Array):
        loss, metrics = loss_fn(params, batch, key)
        return dict(metrics, loss=loss)

    return eval_step
