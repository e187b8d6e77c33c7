"""chorus.analysis estimators on analytic games with known answers, against brute-force
references written straight from the formulas (REFERENCES, "Multi-order interactions and
Shapley values"), and the identities: efficiency, I_Shapley = mean over orders, the
decomposition φ = μ + weighted interactions, linearity, dummy, symmetry.

Exact estimators are float64 sums of at most 2**6 terms of O(1): 1e-12 absolute is ~1e3 ulp.
Sampled estimators must land within 4 standard errors of the exact value (fixed seeds, so
deterministic), and their standard errors must shrink as 1/sqrt(K) (ratio 2 for 4x samples,
accepted in [1.7, 2.3]: the sample std itself fluctuates by a few percent).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from chorus.analysis import (
    MAX_EXACT_PLAYERS,
    Estimate,
    Game,
    all_pairs,
    coalition_masks,
    interaction_strength,
    order_decomposition,
    order_interactions,
    order_interactions_sampled,
    orders_from_ratios,
    relative_strength,
    shapley,
    shapley_interaction,
    shapley_interaction_sampled,
    shapley_sampled,
    shapley_values,
    value_table,
)
from chorus.config import ConfigError

TOL = 1e-12


# ---------------------------------------------------------------- games and references

def table_of(n: int, f) -> np.ndarray:
    """Value table [2**n] of f(frozenset) by bitmask."""
    return np.array([f(frozenset(i for i in range(n) if r >> i & 1)) for r in range(2**n)],
                    dtype=np.float64)


def game_of(table: np.ndarray, batch_size: int = 64) -> Game:
    """A Game whose value function looks masks up in `table` (counts the forwards)."""
    n = table.shape[0].bit_length() - 1
    weights = 1 << np.arange(n)

    def value(masks: np.ndarray) -> np.ndarray:
        value.calls += masks.shape[0]
        return table[masks.astype(np.int64) @ weights]

    value.calls = 0
    return Game(num_players=n, value=value, batch_size=batch_size)


def random_table(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=2**n)


def lookup(table: np.ndarray):
    return lambda s: table[sum(1 << i for i in s)]


def bf_shapley(f, n: int) -> np.ndarray:
    out = np.zeros(n)
    for i in range(n):
        rest = [p for p in range(n) if p != i]
        for s in range(n):
            w = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
            for S in itertools.combinations(rest, s):
                out[i] += w * (f(frozenset(S) | {i}) - f(frozenset(S)))
    return out


def bf_delta(f, i: int, j: int, S) -> float:
    S = frozenset(S)
    return f(S | {i, j}) - f(S | {i}) - f(S | {j}) + f(S)


def bf_order(f, n: int, m: int, i: int, j: int) -> float:
    rest = [p for p in range(n) if p not in (i, j)]
    contexts = list(itertools.combinations(rest, m))
    return sum(bf_delta(f, i, j, S) for S in contexts) / len(contexts)


def bf_shapley_interaction(f, n: int, i: int, j: int) -> float:
    rest = [p for p in range(n) if p not in (i, j)]
    total = 0.0
    for s in range(n - 1):
        w = math.factorial(s) * math.factorial(n - s - 2) / math.factorial(n - 1)
        total += w * sum(bf_delta(f, i, j, S) for S in itertools.combinations(rest, s))
    return total


def upper(matrix_per_order: np.ndarray) -> np.ndarray:
    """[O, n, n] -> [O, P] over all_pairs(n)."""
    ii, jj = np.array(all_pairs(matrix_per_order.shape[1])).T
    return matrix_per_order[:, ii, jj]


# ---------------------------------------------------------------- exact vs brute force

@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_exact_estimators_match_brute_force(n):
    table = random_table(n, seed=n)
    f = lookup(table)
    np.testing.assert_allclose(shapley_values(table), bf_shapley(f, n), rtol=0, atol=TOL)
    orders = order_interactions(table)
    assert orders.shape == (n - 1, n, n)
    want = np.zeros((n - 1, n, n))
    want_shapley = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        want_shapley[i, j] = bf_shapley_interaction(f, n, i, j)
        for m in range(n - 1):
            want[m, i, j] = bf_order(f, n, m, i, j)
    np.testing.assert_allclose(orders, want, rtol=0, atol=TOL)
    # The Shapley interaction index from its own weights equals the mean over orders.
    np.testing.assert_allclose(shapley_interaction(table), want_shapley, rtol=0, atol=TOL)
    np.testing.assert_allclose(want_shapley, want.mean(axis=0), rtol=0, atol=TOL)
    picked = order_interactions(table, orders=(n - 2, 0))
    np.testing.assert_allclose(picked, want[[n - 2, 0]], rtol=0, atol=TOL)


# ---------------------------------------------------------------- analytic games

def test_additive_game():
    n, w = 5, np.array([0.5, -1.0, 2.0, 0.0, 3.25])
    table = table_of(n, lambda s: sum(w[i] for i in s))
    np.testing.assert_allclose(shapley_values(table), w, rtol=0, atol=TOL)
    np.testing.assert_allclose(order_interactions(table), 0.0, rtol=0, atol=TOL)
    np.testing.assert_allclose(shapley_interaction(table), 0.0, rtol=0, atol=TOL)
    mu, weighted = order_decomposition(table)
    np.testing.assert_allclose(mu, w, rtol=0, atol=TOL)
    np.testing.assert_allclose(weighted, 0.0, rtol=0, atol=TOL)


def test_pairwise_game():
    n = 6
    a = np.triu(np.random.default_rng(3).normal(size=(n, n)), 1)
    a = a + a.T
    table = table_of(n, lambda s: sum(a[i, j] for i, j in itertools.combinations(sorted(s), 2)))
    np.testing.assert_allclose(shapley_values(table), a.sum(axis=1) / 2, rtol=0, atol=TOL)
    orders = order_interactions(table)
    np.testing.assert_allclose(orders, np.broadcast_to(a, orders.shape), rtol=0, atol=TOL)
    np.testing.assert_allclose(shapley_interaction(table), a, rtol=0, atol=TOL)
    strength = interaction_strength(orders)
    np.testing.assert_allclose(strength, np.abs(upper(a[None]))[0].mean(), rtol=0, atol=TOL)
    np.testing.assert_allclose(relative_strength(strength), 1.0, rtol=0, atol=TOL)


@pytest.mark.parametrize("T", [(0, 1), (1, 3, 4), (0, 2, 3, 5)])
def test_and_game(T):
    """f = 1 iff S ⊇ T: φ = 1/|T| on T; for i, j ∈ T, I^(m) = P(m-subset ⊇ T∖{i,j})."""
    n, t = 6, len(T)
    table = table_of(n, lambda s: float(set(T) <= s))
    np.testing.assert_allclose(shapley_values(table),
                               [1 / t if i in T else 0.0 for i in range(n)], rtol=0, atol=TOL)
    orders = order_interactions(table)
    for m in range(n - 1):
        inside = math.comb(n - t, m - (t - 2)) / math.comb(n - 2, m) if m >= t - 2 else 0.0
        want = np.array([[inside if i in T and j in T and i != j else 0.0 for j in range(n)]
                         for i in range(n)])
        np.testing.assert_allclose(orders[m], want, rtol=0, atol=TOL)
    inside = shapley_interaction(table)[T[0], T[1]]
    assert inside == pytest.approx(1 / (t - 1), abs=TOL)  # unanimity game: 1/(|T|−1)


@pytest.mark.parametrize("T", [(0, 1), (1, 3, 4)])
def test_or_game(T):
    """f = 1 iff S ∩ T ≠ ∅: φ = 1/|T| on T; for i, j ∈ T, I^(m) = −P(m-subset misses T)."""
    n, t = 6, len(T)
    table = table_of(n, lambda s: float(bool(set(T) & s)))
    np.testing.assert_allclose(shapley_values(table),
                               [1 / t if i in T else 0.0 for i in range(n)], rtol=0, atol=TOL)
    orders = order_interactions(table)
    for m in range(n - 1):
        inside = -math.comb(n - t, m) / math.comb(n - 2, m)
        want = np.array([[inside if i in T and j in T and i != j else 0.0 for j in range(n)]
                         for i in range(n)])
        np.testing.assert_allclose(orders[m], want, rtol=0, atol=TOL)


# ---------------------------------------------------------------- identities

def test_efficiency_and_decomposition():
    for n in (2, 4, 7):
        table = random_table(n, seed=10 + n)
        phi = shapley_values(table)
        assert phi.sum() == pytest.approx(table[-1] - table[0], abs=TOL)
        mu, weighted = order_decomposition(table)
        np.testing.assert_allclose(mu, table[1 << np.arange(n)] - table[0], rtol=0, atol=TOL)
        np.testing.assert_allclose(mu + weighted, phi, rtol=0, atol=TOL)
        # Efficiency of the orders: f(N) − f(∅) = Σ μ + Σ_{i≠j} Σ_m (n−1−m)/(n(n−1)) I^(m).
        assert (mu + weighted).sum() == pytest.approx(table[-1] - table[0], abs=TOL)


def test_linearity():
    n = 5
    f, g = random_table(n, 1), random_table(n, 2)
    h = 2.5 * f - 0.75 * g
    np.testing.assert_allclose(shapley_values(h), 2.5 * shapley_values(f)
                               - 0.75 * shapley_values(g), rtol=0, atol=TOL)
    np.testing.assert_allclose(order_interactions(h), 2.5 * order_interactions(f)
                               - 0.75 * order_interactions(g), rtol=0, atol=TOL)
    np.testing.assert_allclose(shapley_interaction(f + g),
                               shapley_interaction(f) + shapley_interaction(g), rtol=0, atol=TOL)


def test_dummy_player():
    n, dummy = 6, 2
    base = random_table(n, 4)
    table = base[np.arange(2**n) & ~(1 << dummy)]  # f(S) ignores the dummy
    assert shapley_values(table)[dummy] == pytest.approx(0.0, abs=TOL)
    orders = order_interactions(table)
    np.testing.assert_allclose(orders[:, dummy, :], 0.0, rtol=0, atol=TOL)
    np.testing.assert_allclose(shapley_interaction(table)[dummy], 0.0, rtol=0, atol=TOL)
    assert np.abs(orders).max() > 0.1  # the others do interact


def _swap(rows: np.ndarray, a: int, b: int) -> np.ndarray:
    bit_a, bit_b = (rows >> a) & 1, (rows >> b) & 1
    return rows & ~((1 << a) | (1 << b)) | (bit_a << b) | (bit_b << a)


def test_symmetry_and_equivariance():
    n, a, b = 6, 1, 4
    rows = np.arange(2**n)
    base = random_table(n, 5)
    table = base + base[_swap(rows, a, b)]  # symmetric in a, b
    phi = shapley_values(table)
    assert phi[a] == pytest.approx(phi[b], abs=TOL)
    orders = order_interactions(table)
    others = [j for j in range(n) if j not in (a, b)]
    np.testing.assert_allclose(orders[:, a, others], orders[:, b, others], rtol=0, atol=TOL)
    np.testing.assert_allclose(orders, orders.transpose(0, 2, 1), rtol=0, atol=0)
    # Relabelling players of any game relabels its values and interactions.
    swapped = base[_swap(rows, a, b)]
    perm = np.arange(n)
    perm[[a, b]] = [b, a]
    np.testing.assert_allclose(shapley_values(swapped), shapley_values(base)[perm],
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(order_interactions(swapped),
                               order_interactions(base)[:, perm][:, :, perm], rtol=0, atol=TOL)


# ---------------------------------------------------------------- orders and strength

def test_orders_from_ratios():
    assert orders_from_ratios([0.0, 0.5, 1.0], 12) == (0, 5, 10)
    assert orders_from_ratios([1.0, 0.0, 0.02, 0.25], 10) == (0, 2, 8)  # 0.02*8 rounds to 0
    assert orders_from_ratios([0.3125], 10) == (3,)  # 2.5 rounds half up
    with pytest.raises(ConfigError, match=r"ratios: expected values in \[0, 1\]"):
        orders_from_ratios([0.5, 1.5], 10)
    with pytest.raises(ConfigError, match="orders: expected ints"):
        order_interactions(random_table(4, 0), orders=(3,))


def test_strength_forms_and_errors():
    orders = order_interactions(random_table(5, 6))
    pairs = [(0, 3), (4, 1)]
    want = np.abs(orders[:, [0, 4], [3, 1]]).mean(axis=1)
    np.testing.assert_allclose(interaction_strength(orders, pairs), want, rtol=0, atol=TOL)
    np.testing.assert_allclose(interaction_strength(upper(orders)),
                               interaction_strength(orders), rtol=0, atol=TOL)
    rel = relative_strength(interaction_strength(orders))
    assert rel.mean() == pytest.approx(1.0, abs=TOL)
    with pytest.raises(ConfigError, match="strength: expected a positive mean"):
        relative_strength(np.zeros(3))
    with pytest.raises(ConfigError, match="pairs: expected None"):
        interaction_strength(upper(orders), pairs)


# ---------------------------------------------------------------- sampled estimators

def _z(estimate: Estimate, exact: np.ndarray) -> float:
    err = np.abs(estimate.mean - exact)
    exact_rows = estimate.stderr == 0
    assert np.all(err[exact_rows] < TOL)  # single-context orders are evaluated exactly
    return float((err[~exact_rows] / estimate.stderr[~exact_rows]).max())


def _shrinks(small: Estimate, big: Estimate) -> float:
    keep = small.stderr > 0
    return float(small.stderr[keep].mean() / big.stderr[keep].mean())


def test_shapley_sampled_converges():
    n = 7
    table = random_table(n, 7)
    exact = shapley_values(table)
    seen = []
    game = game_of(table, batch_size=50)
    small = shapley_sampled(game, 500, seed=0, progress=lambda d, t: seen.append((d, t)))
    assert game.value.calls == 2 + 500 * (n - 1)
    assert seen[-1] == (2 + 500 * (n - 1),) * 2
    big = shapley_sampled(game_of(table), 2000, seed=1)
    assert _z(small, exact) < 4 and _z(big, exact) < 4
    assert 1.7 < _shrinks(small, big) < 2.3
    assert small.samples == 500 and not small.exact
    # Every permutation's marginals sum to f(N) − f(∅): efficient exactly.
    assert big.mean.sum() == pytest.approx(table[-1] - table[0], abs=TOL)
    # Reproducible for a seed, whatever the batch size.
    again = shapley_sampled(game_of(table, batch_size=7), 500, seed=0)
    np.testing.assert_array_equal(again.mean, small.mean)


def test_order_interactions_sampled_converges():
    n = 7
    table = random_table(n, 8)
    orders = (0, 2, 4, 5)  # 0 and n−2 = 5 have a single context each
    pairs = [(0, 1), (2, 6), (5, 3)]
    exact = order_interactions(table, orders)[:, [0, 2, 5], [1, 6, 3]]
    game = game_of(table, batch_size=33)
    small = order_interactions_sampled(game, orders, 300, seed=0, pairs=pairs)
    assert small.mean.shape == small.stderr.shape == (4, 3)
    assert game.value.calls == 4 * len(pairs) * (2 * 300 + 2)
    big = order_interactions_sampled(game_of(table), orders, 1200, seed=1, pairs=pairs)
    assert _z(small, exact) < 4 and _z(big, exact) < 4
    assert 1.7 < _shrinks(small, big) < 2.3
    np.testing.assert_array_equal(small.stderr[[0, 3]], 0.0)
    full = order_interactions_sampled(game_of(table), orders, 400, seed=2)
    assert full.mean.shape == (4, len(all_pairs(n)))
    assert _z(full, upper(order_interactions(table, orders))) < 4


def test_shapley_interaction_sampled_converges():
    n = 7
    table = random_table(n, 9)
    exact = upper(shapley_interaction(table)[None])[0]
    seen = []
    small = shapley_interaction_sampled(game_of(table), 1000, seed=0,
                                        progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (4 * 1000 * len(exact),) * 2
    big = shapley_interaction_sampled(game_of(table), 4000, seed=1)
    assert _z(small, exact) < 4 and _z(big, exact) < 4
    assert 1.7 < _shrinks(small, big) < 2.3
    pairs = [(6, 0)]
    one = shapley_interaction_sampled(game_of(table), 1000, seed=3, pairs=pairs)
    assert _z(one, shapley_interaction(table)[[6], [0]]) < 4


def test_shapley_dispatch():
    n = 13
    rng = np.random.default_rng(11)
    w, a = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)
    weights = 1 << np.arange(n)

    def value(masks):  # pairwise game, cheap for any n: φ_i = w_i + Σ_j a_ij / 2
        x = masks.astype(np.float64)
        return x @ w + np.einsum("bi,ij,bj->b", x, a, x)

    exact = w + (a + a.T).sum(axis=1) / 2
    sampled = shapley(Game(n, value, batch_size=1000), exact_max=12, permutations=400)
    assert not sampled.exact and _z(sampled, exact) < 4
    whole = shapley(Game(n, value, batch_size=4096), exact_max=13)
    assert whole.exact and whole.samples == 0
    np.testing.assert_allclose(whole.mean, exact, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(whole.stderr, 0.0)
    # Row r of the coalition masks holds player i iff bit i of r is set.
    assert (coalition_masks(n).astype(np.int64) @ weights == np.arange(2**n)).all()


# ---------------------------------------------------------------- Game and Estimate

def test_game_values_chunks_and_progress():
    calls, seen = [], []
    game = Game(3, lambda m: (calls.append(m.shape[0]), m.sum(axis=1))[1], batch_size=3)
    masks = coalition_masks(3)
    out = game.values(np.concatenate([masks, masks[:2]]), progress=lambda d, t: seen.append((d, t)))
    assert out.dtype == np.float64 and out.tolist() == [0, 1, 1, 2, 1, 2, 2, 3, 0, 1]
    assert calls == [3, 3, 3, 1] and seen == [(3, 10), (6, 10), (9, 10), (10, 10)]
    np.testing.assert_array_equal(value_table(game), [0, 1, 1, 2, 1, 2, 2, 3])
    assert game.values(np.zeros((0, 3), bool)).shape == (0,)


def test_game_validation():
    with pytest.raises(ConfigError, match="game.num_players: expected an int >= 2"):
        Game(1, lambda m: m.sum(1))
    with pytest.raises(ConfigError, match="game.player_names: expected 3 names or none"):
        Game(3, lambda m: m.sum(1), player_names=("a", "b"))
    with pytest.raises(ConfigError, match="game.batch_size: expected an int >= 1"):
        Game(3, lambda m: m.sum(1), batch_size=0)
    game = Game(3, lambda m: m.sum(1), player_names=("a", "b", "c"), batch_size=4)
    with pytest.raises(ConfigError, match=r"masks: expected shape \[B, 3\]"):
        game.values(np.zeros((2, 4), bool))
    with pytest.raises(ConfigError, match="masks: expected dtype bool"):
        game.values(np.zeros((2, 3), np.int32))
    bad_shape = Game(3, lambda m: np.zeros(m.shape[0] + 1), batch_size=4)
    with pytest.raises(ConfigError, match=r"game.value on rows 0:4 of 8: expected shape \(4,\)"):
        value_table(bad_shape)
    nan_late = Game(3, lambda m: np.where(m.all(axis=1), np.nan, 0.0), batch_size=4)
    with pytest.raises(ConfigError, match="game.value on rows 4:8 of 8: expected finite values"):
        value_table(nan_late)
    too_many = Game(MAX_EXACT_PLAYERS + 1, lambda m: pytest.fail("must not be called"))
    with pytest.raises(ConfigError, match="game.num_players: expected <= 16"):
        value_table(too_many)
    with pytest.raises(ConfigError, match="table: expected a 1-D array of length 2\\*\\*n"):
        shapley_values(np.zeros(6))
    with pytest.raises(ConfigError, match="permutations: expected an int >= 2"):
        shapley_sampled(game, 1, seed=0)
    with pytest.raises(ConfigError, match="pairs: expected pairs of distinct players"):
        shapley_interaction_sampled(game, 10, seed=0, pairs=[(1, 1)])


def test_estimate_to_dict():
    est = Estimate(mean=np.array([[1.0, 2.0]]), stderr=np.array([[0.1, 0.2]]), samples=5)
    assert json.loads(json.dumps(est.to_dict())) == {
        "mean": [[1.0, 2.0]], "stderr": [[0.1, 0.2]], "samples": 5, "exact": False}
    with pytest.raises(ConfigError, match="estimate.stderr: expected the shape of mean"):
        Estimate(mean=np.zeros(2), stderr=np.zeros(3), samples=1)
