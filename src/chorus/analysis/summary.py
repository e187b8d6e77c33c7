"""One call from a game to its report: Shapley values, interactions by order, their strength.

    report = summarize(game, ratios=(0, 0.25, 0.5, 0.75, 1.0), exact_max=12, samples=64)
    report["shapley"]["mean"], report["strength"]["mean"], report["method"]

Up to `exact_max` players every quantity is exact (the 2^n value table, one pass over the
coalitions); past it Shapley values come from permutation sampling and the interactions at
the chosen orders from fixed-order contexts, each with its standard error. Orders are given
as ratios m/n and mapped to m = round(r (n - 2)), as the public code does. The report is
plain JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from chorus.analysis.game import Game, value_table
from chorus.analysis.interactions import (
    all_pairs,
    interaction_strength,
    order_interactions,
    order_interactions_sampled,
    orders_from_ratios,
    relative_strength,
    shapley_interaction,
)
from chorus.analysis.shapley import shapley_sampled, shapley_values

DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
Progress = Callable[[int, int], None]


def summarize(game: Game, *, ratios: Sequence[float] = DEFAULT_RATIOS, exact_max: int = 12,
              samples: int = 64, seed: int = 0, progress: Progress | None = None,
              table: np.ndarray | None = None) -> dict:
    """The report of `game` (see the module docstring); `samples`: permutations for the
    sampled Shapley values and contexts per pair and order for the sampled interactions;
    `table`: the game's value table when the caller has it (exact, whatever n)."""
    if samples < 1:
        raise ValueError(f"samples: expected >= 1, got {samples}")
    n = game.num_players
    orders = orders_from_ratios(ratios, n)
    pairs = all_pairs(n)
    if table is not None or n <= exact_max:
        table = value_table(game, progress=progress) if table is None else np.asarray(table)
        if table.shape != (2 ** n,):
            raise ValueError(f"table: expected shape ({2 ** n},), got {table.shape}")
        full, empty = float(table[-1]), float(table[0])
        phi, phi_se = shapley_values(table), np.zeros(n)
        interactions = order_interactions(table, orders)  # [M, n, n]
        pair_values = np.stack([interactions[:, i, j] for i, j in pairs], axis=-1)  # [M, P]
        pair_se = np.zeros_like(pair_values)
        shapley_ii = shapley_interaction(table)
        method = "exact"
    else:
        ends = game.values(np.stack([np.ones(n, bool), np.zeros(n, bool)]))
        full, empty = float(ends[0]), float(ends[1])
        est = shapley_sampled(game, permutations=samples, seed=seed, progress=progress)
        phi, phi_se = est.mean, est.stderr
        inter = order_interactions_sampled(game, orders, samples, seed=seed + 1, pairs=pairs,
                                           progress=progress)
        pair_values, pair_se = inter.mean, inter.stderr
        shapley_ii = None
        method = "sampled"
    strength = interaction_strength(pair_values)  # the REFERENCES statistic: mean |I^(m)|
    # Its standard error over pairs (exact) or from the samples (sampled).
    strength_se = (np.abs(pair_values).std(axis=-1, ddof=1) / np.sqrt(len(pairs))
                   if method == "exact" else np.sqrt((pair_se ** 2).sum(-1)) / len(pairs))
    return {
        "method": method,
        "players": list(game.player_names) or [str(i) for i in range(n)],
        "value_full": full,
        "value_empty": empty,
        "shapley": {"mean": phi.tolist(), "stderr": phi_se.tolist(),
                    "efficiency_gap": float(phi.sum() - (full - empty))},
        "orders": list(orders),
        "ratios": [m / n for m in orders],
        "strength": {"mean": strength.tolist(), "stderr": strength_se.tolist(),
                     "relative": (relative_strength(strength).tolist()
                                  if strength.mean() > 0 else None)},
        "pairs": [list(p) for p in pairs],
        "interactions": {"mean": pair_values.tolist(), "stderr": pair_se.tolist()},
        "shapley_interaction": None if shapley_ii is None else shapley_ii.tolist(),
    }
