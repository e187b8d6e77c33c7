"""Game-theoretic attribution, model-agnostic: a model enters only as a batched value function.

- game: `Game` (players + f(S) over coalition masks, evaluated in chunks), `value_table`
  (all 2**n coalitions), `Estimate` (mean, stderr, samples).
- shapley: exact Shapley values from a value table, permutation sampling beyond `exact_max`.
- interactions: multi-order interactions I^(m)(i,j), the Shapley interaction index, their
  sampled estimators (fixed-order contexts; r ~ U(0,1)), strength per order, and the
  decomposition φ(i) = μ_i + weighted interactions.
- word_tree: Shapley values of coalitions of words, interaction benefits B([S]) and B(L,R),
  the bottom-up interaction tree, its metrics, text and PNG renderings.
Formulas: REFERENCES, "Multi-order interactions and Shapley values".
"""

from chorus.analysis.game import (
    MAX_EXACT_PLAYERS,
    Estimate,
    Game,
    ValueFn,
    coalition_masks,
    value_table,
)
from chorus.analysis.interactions import (
    all_pairs,
    interaction_strength,
    order_decomposition,
    order_interactions,
    order_interactions_sampled,
    orders_from_ratios,
    relative_strength,
    shapley_interaction,
    shapley_interaction_sampled,
)
from chorus.analysis.shapley import shapley, shapley_sampled, shapley_values
from chorus.analysis.word_tree import (
    TreeNode,
    benefit,
    between_benefit,
    build_tree,
    draw_tree,
    group_shapley,
    render_tree,
    tree_metrics,
)

__all__ = [
    "MAX_EXACT_PLAYERS", "Estimate", "Game", "TreeNode", "ValueFn", "all_pairs", "benefit",
    "between_benefit", "build_tree", "coalition_masks", "draw_tree", "group_shapley",
    "interaction_strength", "order_decomposition", "order_interactions",
    "order_interactions_sampled", "orders_from_ratios", "relative_strength", "shapley",
    "shapley_interaction", "shapley_interaction_sampled", "shapley_sampled", "shapley_values",
    "render_tree", "tree_metrics", "value_table",
]
