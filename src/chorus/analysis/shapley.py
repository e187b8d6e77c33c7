"""Shapley values: exact from a value table, or by permutation sampling for many players.

φ(i) = Σ_{S⊆N∖{i}} |S|!(n−|S|−1)!/n! · [f(S∪{i}) − f(S)]  (REFERENCES, "Multi-order interactions
and Shapley values"). Exact costs 2**n forwards; sampling costs n−1 forwards a permutation
(plus f(∅) and f(N) once) and its marginals sum to f(N) − f(∅) in every permutation, so the
sampled values are efficient exactly, not only in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from chorus.analysis.game import (
    Estimate,
    Game,
    Progress,
    popcounts,
    sample_estimate,
    table_players,
    value_table,
)
from chorus.config import check

MASK_BLOCK = 1 << 22
"""Mask entries (rows × players) built at a time by the samplers: bounds host memory."""


def shapley_weights(n: int) -> np.ndarray:
    """w[s] = s!(n−s−1)!/n! for s = 0..n−1: the weight of a coalition of size s without i."""
    return np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                     for s in range(n)], dtype=np.float64)


def shapley_values(table: np.ndarray) -> np.ndarray:
    """Exact Shapley values [n] of the game whose value table [2**n] is indexed by bitmask."""
    table = np.asarray(table, dtype=np.float64)
    n = table_players(table, minimum=1)
    rows = np.arange(2**n, dtype=np.int64)
    weight = shapley_weights(n)
    size = popcounts(n)
    phi = np.empty(n, dtype=np.float64)
    for i in range(n):
        without = rows[((rows >> i) & 1) == 0]
        phi[i] = np.dot(weight[size[without]], table[without | (1 << i)] - table[without])
    return phi


def evaluate_blocks(game: Game, blocks: Iterator[np.ndarray], total: int,
                    progress: Progress | None) -> Iterator[np.ndarray]:
    """game.values over a stream of mask blocks, reporting progress over all `total` rows."""
    done = 0
    for masks in blocks:
        report = None
        if progress is not None:
            report = (lambda offset: lambda d, _t: progress(offset + d, total))(done)
        yield game.values(masks, report)
        done += masks.shape[0]


def _permutation_block(n: int) -> int:
    """Permutations drawn per block: depends on n only, so draws never depend on batch_size."""
    return max(1, MASK_BLOCK // (n * n))


def shapley_sampled(game: Game, permutations: int, seed: int,
                    progress: Progress | None = None) -> Estimate:
    """Permutation-sampled Shapley values [n] with standard errors (std/sqrt(K) over permutations).

    Each permutation π contributes f(π_{<k} ∪ {π_k}) − f(π_{<k}) to player π_k; the n−1 proper
    prefixes of all permutations are evaluated as a few large mask blocks, f(∅) and f(N) once.
    """
    check(isinstance(permutations, int) and permutations >= 2, "permutations", "an int >= 2",
          permutations)
    n = game.num_players
    rng = np.random.default_rng(seed)
    block = _permutation_block(n)
    sizes = [min(block, permutations - s) for s in range(0, permutations, block)]
    orders = [np.argsort(rng.random((k, n)), axis=1) for k in sizes]
    total = 2 + permutations * (n - 1)
    ends = game.values(np.stack([np.zeros(n, bool), np.ones(n, bool)]),
                       None if progress is None else (lambda d, _t: progress(d, total)))

    def prefix_masks() -> Iterator[np.ndarray]:
        for order in orders:
            # rank[p, i] = position of player i in permutation p; prefix k keeps rank < k.
            rank = np.argsort(order, axis=1)
            k = np.arange(1, n)[None, :, None]
            yield (rank[:, None, :] < k).reshape(-1, n)

    wrapped = None if progress is None else (lambda d, _t: progress(2 + d, total))
    marginals = []
    for order, vals in zip(orders, evaluate_blocks(game, prefix_masks(),
                                                   permutations * (n - 1), wrapped),
                           strict=True):
        chain = np.concatenate([np.full((order.shape[0], 1), ends[0]),
                                vals.reshape(order.shape[0], n - 1),
                                np.full((order.shape[0], 1), ends[1])], axis=1)
        gain = np.diff(chain, axis=1)  # gain[p, k]: marginal of player order[p, k]
        phi = np.empty_like(gain)
        np.put_along_axis(phi, order, gain, axis=1)
        marginals.append(phi)
    return sample_estimate(np.concatenate(marginals, axis=0))


def shapley(game: Game, exact_max: int = 12, permutations: int = 1000, seed: int = 0,
            progress: Progress | None = None) -> Estimate:
    """Exact Shapley values when n <= exact_max (2**n forwards), permutation sampling beyond."""
    check(isinstance(exact_max, int) and exact_max >= 0, "exact_max", "an int >= 0", exact_max)
    if game.num_players <= exact_max:
        phi = shapley_values(value_table(game, progress))
        return Estimate(mean=phi, stderr=np.zeros_like(phi), samples=0, exact=True)
    return shapley_sampled(game, permutations, seed, progress)

