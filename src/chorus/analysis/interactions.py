"""Pairwise interactions of different orders, the Shapley interaction index, and samplers.

Δf(i,j,S) = f(S∪{i,j}) − f(S∪{i}) − f(S∪{j}) + f(S) for S ⊆ N∖{i,j}:
- order-m interaction I^(m)(i,j) = E_{|S|=m} Δf(i,j,S), 0 ≤ m ≤ n−2 (context of m players);
- Shapley interaction index I(i,j) = Σ_S |S|!(n−|S|−2)!/(n−1)! Δf = (1/(n−1)) Σ_m I^(m)(i,j);
- φ(i) = μ_i + Σ_{j≠i} Σ_m (n−1−m)/(n(n−1)) I^(m)(i,j), μ_i = f({i}) − f(∅).
(REFERENCES, "Multi-order interactions and Shapley values".) Exact estimators take a value
table [2**n]; the sampled ones call a Game with four coalitions per drawn context, as the public
code does: fixed-order contexts (S uniform among m-subsets) or the r ~ U(0, 1) trick (keep each
other player with probability 1 − r), whose mean is unbiased for I(i,j).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from chorus.analysis.game import Estimate, Game, Progress, popcounts, table_players
from chorus.analysis.shapley import MASK_BLOCK, evaluate_blocks
from chorus.config import check

Pair = tuple[int, int]


def all_pairs(n: int) -> tuple[Pair, ...]:
    """Every pair i < j of n players, row-major: the default `pairs` of the samplers."""
    return tuple((i, j) for i in range(n) for j in range(i + 1, n))


def _check_orders(orders: Sequence[int] | None, n: int) -> tuple[int, ...]:
    if orders is None:
        return tuple(range(n - 1))
    orders = tuple(orders)
    check(len(orders) >= 1, "orders", "at least one order", orders)
    for m in orders:
        check(isinstance(m, int | np.integer) and 0 <= m <= n - 2, "orders",
              f"ints in [0, {n - 2}] (n = {n})", orders)
    return tuple(int(m) for m in orders)


def _check_pairs(pairs: Sequence[Pair] | None, n: int) -> tuple[Pair, ...]:
    if pairs is None:
        return all_pairs(n)
    pairs = tuple((int(i), int(j)) for i, j in pairs)
    check(len(pairs) >= 1, "pairs", "at least one pair", pairs)
    for i, j in pairs:
        check(0 <= i < n and 0 <= j < n and i != j, "pairs",
              f"pairs of distinct players in [0, {n})", (i, j))
    return pairs


def order_interactions(table: np.ndarray, orders: Sequence[int] | None = None) -> np.ndarray:
    """Exact I^(m)(i,j) as [len(orders), n, n] (symmetric, zero diagonal); orders default 0..n−2.

    One vectorized pass over the 2**(n−2) contexts of each pair: Δf summed per context size
    (bincount) and divided by C(n−2, m).
    """
    table = np.asarray(table, dtype=np.float64)
    n = table_players(table)
    orders = _check_orders(orders, n)
    rows = np.arange(2**n, dtype=np.int64)
    size = popcounts(n)
    count = np.array([math.comb(n - 2, m) for m in range(n - 1)], dtype=np.float64)
    pick = np.array(orders)
    out = np.zeros((len(orders), n, n), dtype=np.float64)
    for i, j in all_pairs(n):
        bi, bj = 1 << i, 1 << j
        s = rows[(rows & (bi | bj)) == 0]
        delta = table[s | bi | bj] - table[s | bi] - table[s | bj] + table[s]
        mean = np.bincount(size[s], weights=delta, minlength=n - 1)[: n - 1] / count
        out[:, i, j] = out[:, j, i] = mean[pick]
    return out


def shapley_interaction(table: np.ndarray) -> np.ndarray:
    """Exact Shapley interaction index I(i,j) [n, n] = the mean of I^(m) over m = 0..n−2."""
    return order_interactions(table).mean(axis=0)


def orders_from_ratios(ratios: Sequence[float], n: int) -> tuple[int, ...]:
    """Orders m = round(r·(n−2)), half up, for ratios r = m/(n−2) in [0, 1]; sorted, unique."""
    check(isinstance(n, int) and n >= 2, "n", "an int >= 2", n)
    ratios = tuple(float(r) for r in ratios)
    check(len(ratios) >= 1, "ratios", "at least one ratio", ratios)
    for r in ratios:
        check(0.0 <= r <= 1.0, "ratios", "values in [0, 1]", ratios)
    return tuple(sorted({math.floor(r * (n - 2) + 0.5) for r in ratios}))


def _four(context: np.ndarray, i: int, j: int) -> np.ndarray:
    """[D, n] contexts -> [4D, n] coalitions S∪{i,j}, S∪{i}, S∪{j}, S (interleaved per draw)."""
    both, only_i, only_j = context.copy(), context.copy(), context.copy()
    both[:, [i, j]] = True
    only_i[:, i] = True
    only_j[:, j] = True
    return np.stack([both, only_i, only_j, context], axis=1).reshape(-1, context.shape[1])


def _delta(values: np.ndarray) -> np.ndarray:
    v = values.reshape(-1, 4)
    return v[:, 0] - v[:, 1] - v[:, 2] + v[:, 3]


def _run_units(game: Game, units: list[tuple], draw, progress: Progress | None) -> list:
    """Evaluate per-unit contexts in blocks; `draw(unit)` -> [D, n] contexts (drawn in order)."""
    n = game.num_players
    rows = [4 * u[-1] for u in units]
    total = sum(rows)
    per_block = max(1, MASK_BLOCK // (4 * n * max(u[-1] for u in units)))
    groups = [units[s: s + per_block] for s in range(0, len(units), per_block)]

    def blocks() -> Iterator[np.ndarray]:
        for group in groups:
            yield np.concatenate([_four(draw(u), u[0], u[1]) for u in group], axis=0)

    deltas = []
    for group, values in zip(groups, evaluate_blocks(game, blocks(), total, progress),
                             strict=True):
        d = _delta(values)
        offsets = np.cumsum([0] + [u[-1] for u in group])
        deltas.extend(d[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True))
    return deltas


def _mean_stderr(d: np.ndarray) -> tuple[float, float]:
    if d.shape[0] == 1:  # a single possible context: the exact value
        return float(d[0]), 0.0
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.shape[0]))


def order_interactions_sampled(game: Game, orders: Sequence[int], samples: int, seed: int,
                               pairs: Sequence[Pair] | None = None,
                               progress: Progress | None = None) -> Estimate:
    """Sampled I^(m)(i,j) with standard errors, mean/stderr [len(orders), P] (pairs default i<j).

    Each draw is a context S uniform among the m-subsets of N∖{i,j}, four forwards. An order
    with a single possible context (m = 0 or m = n−2) is evaluated once, exactly (stderr 0).
    """
    n = game.num_players
    orders = _check_orders(orders, n)
    pairs = _check_pairs(pairs, n)
    check(isinstance(samples, int) and samples >= 2, "samples", "an int >= 2", samples)
    rng = np.random.default_rng(seed)
    units = [(i, j, m, 1 if math.comb(n - 2, m) == 1 else samples)
             for m in orders for i, j in pairs]

    def draw(unit: tuple) -> np.ndarray:
        i, j, m, count = unit
        keys = rng.random((count, n))
        keys[:, [i, j]] = 2.0  # never among the m smallest
        rank = np.argsort(np.argsort(keys, axis=1), axis=1)
        return rank < m

    stats = np.array([_mean_stderr(d) for d in _run_units(game, units, draw, progress)])
    shape = (len(orders), len(pairs))
    return Estimate(mean=stats[:, 0].reshape(shape), stderr=stats[:, 1].reshape(shape),
                    samples=samples)


def shapley_interaction_sampled(game: Game, samples: int, seed: int,
                                pairs: Sequence[Pair] | None = None,
                                progress: Progress | None = None) -> Estimate:
    """Sampled Shapley interaction index I(i,j) [P]: r ~ U(0,1), keep each other player w.p. 1 − r.

    P(S) = ∫ (1−r)^|S| r^(n−2−|S|) dr = |S|!(n−2−|S|)!/(n−1)!, the Shapley interaction weight,
    so the mean of Δf over draws is unbiased for I(i,j).
    """
    n = game.num_players
    pairs = _check_pairs(pairs, n)
    check(isinstance(samples, int) and samples >= 2, "samples", "an int >= 2", samples)
    rng = np.random.default_rng(seed)
    units = [(i, j, samples) for i, j in pairs]

    def draw(unit: tuple) -> np.ndarray:
        i, j, count = unit
        r = rng.random((count, 1))
        keep = rng.random((count, n)) < 1.0 - r
        keep[:, [i, j]] = False
        return keep

    stats = np.array([_mean_stderr(d) for d in _run_units(game, units, draw, progress)])
    return Estimate(mean=stats[:, 0], stderr=stats[:, 1], samples=samples)


def interaction_strength(interactions: np.ndarray,
                         pairs: Sequence[Pair] | None = None) -> np.ndarray:
    """Strength per order [O]: the mean over pairs of |I^(m)(i,j)| (REFERENCES' statistic).

    Takes exact [O, n, n] (pairs default all i < j) or sampled [O, P] (already per pair; `pairs`
    must be None). With sampled inputs |mean| is biased upwards by the noise (≈ stderr when the
    true value is 0): compare strengths at equal sample counts.
    """
    interactions = np.asarray(interactions, dtype=np.float64)
    if interactions.ndim == 2:
        check(pairs is None, "pairs", "None for per-pair [O, P] interactions", pairs)
        return np.abs(interactions).mean(axis=1)
    check(interactions.ndim == 3 and interactions.shape[1] == interactions.shape[2],
          "interactions", "[O, n, n] or [O, P]", interactions.shape)
    pairs = _check_pairs(pairs, interactions.shape[1])
    ii, jj = np.array(pairs).T
    return np.abs(interactions[:, ii, jj]).mean(axis=1)


def relative_strength(strength: np.ndarray) -> np.ndarray:
    """Strength normalized by its mean over orders (last axis): J^(m) / mean_m' J^(m').

    Comparable across inputs and models of different output scale; average the raw strengths
    over inputs first, then normalize, to weigh inputs by their interaction scale.
    """
    strength = np.asarray(strength, dtype=np.float64)
    scale = strength.mean(axis=-1, keepdims=True)
    check(bool(np.all(scale > 0)), "strength", "a positive mean over orders", scale.ravel())
    return strength / scale


def order_decomposition(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ [n], weighted [n]) with φ(i) = μ_i + weighted_i: the Shapley value split into the
    player alone, μ_i = f({i}) − f(∅), and Σ_{j≠i} Σ_m (n−1−m)/(n(n−1)) · I^(m)(i,j)."""
    table = np.asarray(table, dtype=np.float64)
    n = table_players(table)
    orders = order_interactions(table)
    m = np.arange(n - 1, dtype=np.float64)
    coef = (n - 1 - m) / (n * (n - 1))
    weighted = np.einsum("m,mij->i", coef, orders)
    mu = table[1 << np.arange(n)] - table[0]
    return mu, weighted
