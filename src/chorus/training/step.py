"""The pure train step: (state, batch, rng) -> (state, metrics). Jitted by the caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    nonfinite_in_a_row: jax.Array
    nonfinite_total: jax.Array

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation) -> TrainState:
        zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the state is donated
        return cls(step=zero(), params=params, opt_state=tx.init(params),
                   nonfinite_in_a_row=zero(), nonfinite_total=zero())


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """A step that skips (and counts) updates whose loss or gradients are not finite."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, rng)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        state = TrainState(
            step=state.step + 1,
            params=keep(new_params, state.params),
            opt_state=keep(new_opt_state, state.opt_state),
            nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
            nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
        )
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                       skipped=(~finite).astype(jnp.float32))
        return state, metrics

    return train_step
