"""chorus.analysis.attacks: PGD in an L-infinity ball against objectives whose constrained
maximizer is known in closed form (linear: a corner of the box; separable quadratic: its
centre clipped into the box), the projection invariants, and the config's validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chorus.analysis.attacks import PGDConfig, attack_objective, pgd_linf
from chorus.config import ConfigError

KEY = jax.random.key(0)


def _inputs(shape=(3, 5), seed=0):
    rng = np.random.default_rng(seed)
    # |x| < 0.8: float32 rounding of x +- eps stays below 1e-7 (half an ulp of 1)
    return jnp.asarray(rng.uniform(-0.8, 0.8, shape), jnp.float32), rng


def test_linear_objective_reaches_the_corner_exactly():
    x, rng = _inputs()
    w = jnp.asarray(rng.choice([-1.0, 1.0], x.shape) * rng.uniform(0.1, 2.0, x.shape),
                    jnp.float32)
    objective = lambda z: jnp.sum(w * z, axis=-1)  # noqa: E731
    config = PGDConfig(epsilon=0.1, steps=5, random_start=False)
    x_adv, info = jax.jit(lambda z: pgd_linf(objective, z, config, KEY))(x)
    # The box maximizer of w.z is x + eps * sign(w), and the projection's clip lands on it
    # bit for bit (the step total 2.5 eps overshoots the ball).
    np.testing.assert_array_equal(np.asarray(x_adv), np.asarray(x + 0.1 * jnp.sign(w)))
    gain = 0.1 * np.abs(np.asarray(w)).sum(-1)
    np.testing.assert_allclose(info["objective_after"] - info["objective_before"], gain,
                               rtol=1e-5)  # float32 sums of 5 terms
    # from a random start too: the ascent crosses the ball in 2.5 eps / (2 eps) of the steps
    x_rand, _ = pgd_linf(objective, x, PGDConfig(epsilon=0.1, steps=5), KEY)
    np.testing.assert_array_equal(np.asarray(x_rand), np.asarray(x_adv))


def test_quadratic_objective_finds_the_clipped_centre():
    x, rng = _inputs((4, 6), seed=1)
    eps = 0.2
    # centres inside the ball on some coordinates, outside on the others
    c = x + jnp.asarray(rng.uniform(-2 * eps, 2 * eps, x.shape), jnp.float32)
    objective = lambda z: -jnp.sum(3.0 * (z - c) ** 2, axis=-1)  # noqa: E731
    step = 1e-3
    config = PGDConfig(epsilon=eps, step_size=step, steps=500, random_start=False)
    x_adv, info = pgd_linf(objective, x, config, KEY)
    expected = np.clip(np.asarray(c), np.asarray(x - eps), np.asarray(x + eps))
    outside = np.abs(np.asarray(c - x)) > eps + 1e-6
    assert outside.any() and (~outside).any()
    # a clipped coordinate sits exactly on the box face; an inside one oscillates around its
    # centre within one step (signed steps of size `step` cannot settle closer)
    np.testing.assert_array_equal(np.asarray(x_adv)[outside], expected[outside])
    assert np.abs(np.asarray(x_adv) - expected)[~outside].max() <= step + 1e-6
    assert np.all(np.asarray(info["objective_after"]) > np.asarray(info["objective_before"]))


def test_the_perturbation_stays_in_the_ball_the_bounds_and_the_mask():
    x, rng = _inputs((2, 64), seed=2)
    eps = 0.05
    # a nonlinear objective pushing half the elements up and half down
    s = jnp.asarray(rng.choice([-1.0, 1.0], x.shape), jnp.float32)
    objective = lambda z: jnp.sum(s * z + 0.1 * jnp.sin(7.0 * z), axis=-1)  # noqa: E731
    mask = np.arange(64) < 40
    x_adv, _ = pgd_linf(objective, x, PGDConfig(epsilon=eps, steps=7), jax.random.key(3),
                        lower=-0.76, upper=0.76, mask=mask)
    d = np.asarray(x_adv - x)
    assert np.abs(d).max() <= eps + 1e-7
    assert np.abs(d[:, :40]).max() > eps / 2  # it did move
    np.testing.assert_array_equal(np.asarray(x_adv)[:, 40:], np.asarray(x)[:, 40:])
    moved = np.asarray(x_adv)[:, :40]
    assert moved.min() >= -0.76 and moved.max() <= 0.76
    # some elements pressed on each bound
    assert moved.min() == np.float32(-0.76) and moved.max() == np.float32(0.76)


def test_no_steps_and_no_random_start_return_the_input():
    x, _ = _inputs()
    objective = lambda z: jnp.sum(z, axis=-1)  # noqa: E731
    same, info = pgd_linf(objective, x, PGDConfig(epsilon=0.3, steps=0, random_start=False), KEY)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(x))
    np.testing.assert_array_equal(info["objective_before"], info["objective_after"])
    zero, _ = pgd_linf(objective, x, PGDConfig(epsilon=0.0, steps=4), KEY)
    np.testing.assert_array_equal(np.asarray(zero), np.asarray(x))
    # steps = 0 with a random start: a uniform point of the ball, not x
    start, _ = pgd_linf(objective, x, PGDConfig(epsilon=0.3, steps=0), KEY)
    d = np.abs(np.asarray(start - x))
    assert d.max() <= 0.3 + 1e-7 and d.min() > 0


def test_attack_objective_signs():
    score = lambda z: jnp.sum(z, axis=-1)  # noqa: E731
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(attack_objective(score, targeted=True)(x), [3.0, 3.0])
    np.testing.assert_array_equal(attack_objective(score, targeted=False)(x), [-3.0, -3.0])
    # untargeted PGD lowers the score
    x_adv, _ = pgd_linf(attack_objective(score, False), x, PGDConfig(0.1, steps=3), KEY)
    np.testing.assert_allclose(np.asarray(x_adv), 0.9, rtol=1e-6)


@pytest.mark.parametrize("kwargs, field", [
    (dict(epsilon=-0.1), "pgd.epsilon"), (dict(epsilon=float("nan")), "pgd.epsilon"),
    (dict(epsilon=0.1, steps=-1), "pgd.steps"), (dict(epsilon=0.1, steps=2.0), "pgd.steps"),
    (dict(epsilon=0.1, step_size=0.0), "pgd.step_size"),
    (dict(epsilon=0.1, random_start="yes"), "pgd.random_start")])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}: expected"):
        PGDConfig(**kwargs)


def test_default_step_size():
    assert PGDConfig(epsilon=0.2, steps=5).alpha == pytest.approx(0.1)
    assert PGDConfig(epsilon=0.2, steps=5, step_size=0.01).alpha == 0.01
    assert PGDConfig(epsilon=0.2, steps=0).alpha == 0.0
