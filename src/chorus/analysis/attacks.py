"""Projected gradient ascent in an L-infinity ball (PGD, Madry et al. 2018), model-agnostic.

    x_adv, info = pgd_linf(objective, x, PGDConfig(epsilon=0.1), rng)   # objective(x) -> [B]
    objective = attack_objective(score, targeted=False)                 # push score down

Each step moves every input element by step_size in the direction of the sign of the
objective's gradient, then projects back into {x' : |x' - x| <= epsilon} (and into
[lower, upper] when given, e.g. a waveform in [-1, 1]); elements outside `mask` never move.
The gradient is that of the batch sum, and the examples of a batch are independent, so
every example climbs its own objective. Targeted or untargeted is the objective's sign
(`attack_objective`): untargeted lowers log p(reference), targeted raises log p(target).
Pure jax: it runs inside jit (the config is static) and never differentiates the caller's
parameters (close over them under stop_gradient when the call sits inside a loss).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from chorus.config import check

Objective = Callable[[jax.Array], jax.Array]  # x -> [B] per-example value to maximize


@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """epsilon: the L-infinity radius (input units); step_size: per-step move (None: 2.5 *
    epsilon / steps, which can cross the ball from the far side in the last 40% of steps);
    steps: ascent steps (0 = the random start, or x itself); random_start: start at a uniform
    point of the ball rather than at x."""

    epsilon: float
    step_size: float | None = None
    steps: int = 10
    random_start: bool = True

    def __post_init__(self):
        check(isinstance(self.epsilon, int | float) and not isinstance(self.epsilon, bool)
              and math.isfinite(self.epsilon) and self.epsilon >= 0, "pgd.epsilon",
              "a finite number >= 0", self.epsilon)
        check(isinstance(self.steps, int) and not isinstance(self.steps, bool)
              and self.steps >= 0, "pgd.steps", "an int >= 0", self.steps)
        check(self.step_size is None or (
            isinstance(self.step_size, int | float) and not isinstance(self.step_size, bool)
            and math.isfinite(self.step_size) and self.step_size > 0), "pgd.step_size",
            "a finite number > 0, or null for 2.5 * epsilon / steps", self.step_size)
        check(isinstance(self.random_start, bool), "pgd.random_start", "a bool",
              self.random_start)

    @property
    def alpha(self) -> float:
        """The step size in use."""
        if self.step_size is not None:
            return float(self.step_size)
        return 2.5 * self.epsilon / self.steps if self.steps else 0.0


def attack_objective(score_fn: Objective, targeted: bool) -> Objective:
    """The objective PGD maximizes: score_fn itself when targeted (raise log p(target)),
    its negation when not (lower log p(reference))."""
    if targeted:
        return score_fn
    return lambda x: -score_fn(x)


def pgd_linf(objective: Objective, x: jax.Array, config: PGDConfig, rng: jax.Array, *,
             lower: float | None = None, upper: float | None = None,
             mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """(x_adv, info): x_adv maximizes `objective` (x -> [B]) by signed-gradient steps inside
    |x_adv - x| <= epsilon and [lower, upper]; `mask` (broadcastable to x, bool) marks the
    elements that may move (e.g. valid frames). info: {"objective_before", "objective_after"}
    per example [B] (under jit, unused entries cost nothing)."""
    x = jax.lax.stop_gradient(jnp.asarray(x))
    keep = None if mask is None else jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
    low, high = x - config.epsilon, x + config.epsilon
    if lower is not None:
        low, high = jnp.maximum(low, lower), jnp.maximum(high, lower)
    if upper is not None:
        low, high = jnp.minimum(low, upper), jnp.minimum(high, upper)

    def project(z):
        z = jnp.clip(z, low, high)
        return z if keep is None else jnp.where(keep, z, x)

    if config.random_start and config.epsilon > 0:
        noise = jax.random.uniform(rng, x.shape, x.dtype, -config.epsilon, config.epsilon)
        start = project(x + noise)
    else:
        start = project(x)
    grad = jax.grad(lambda z: jnp.sum(objective(z)))

    def step(_, z):
        return project(z + config.alpha * jnp.sign(grad(z)).astype(z.dtype))

    x_adv = jax.lax.fori_loop(0, config.steps, step, start) if config.steps else start
    x_adv = jax.lax.stop_gradient(x_adv)
    return x_adv, {"objective_before": objective(x), "objective_after": objective(x_adv)}
