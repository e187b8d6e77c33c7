"""Word interactions: Shapley values of coalitions of words and a bottom-up interaction tree.

For a constituent S of adjacent words, N_[S] = (N∖S) ∪ {[S]} is the game in which S plays as
one player. Its interaction benefit (REFERENCES, "Word-interaction tree") is
    B([S]) = φ([S] | N_[S]) − Σ_{i∈S} φ(i | (N∖S) ∪ {i}),
what the words of S gain by acting together over acting alone, every other word present as a
player. Players outside the game at hand are absent (at the baseline).

Splitting S into adjacent children L, R, the benefit between them is
    B(L, R) = φ([S] | N_[S]) − φ([L] | (N∖S) ∪ {[L]}) − φ([R] | (N∖S) ∪ {[R]}),
where L's and R's games are taken in S's context (the outside words N∖S as players, the
sibling absent). With the children's benefits in that same context, B_S([L]) and B_S([R]),
    B([S]) = B(L, R) + B_S([L]) + B_S([R])
holds exactly. B_S([L]) differs in general from L's own node benefit B([L]), whose game has
R's words present as players; a node records both (`benefit` and its parent's
`context_benefits`).

The tree merges, bottom-up, the adjacent pair of current constituents whose union has the
largest B([L∪R]) (signed; criterion="benefit", the REFERENCES rule); ties (within 1e-12
relative) go to the leftmost pair. B([L∪R]) includes the benefits already inside L and R, so
this rule tends to grow the constituent around the strongest pair; criterion="between" ranks
by B(L, R), what this merge alone adds. Everything here is exact from a value table [2**n]
(n words ≤ MAX_EXACT_PLAYERS).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from chorus.analysis.game import table_players
from chorus.analysis.shapley import shapley_values
from chorus.config import check

Span = tuple[int, int]
TIE_TOLERANCE = 1e-12
CRITERIA = ("benefit", "between")


def _mask(players: Sequence[int]) -> int:
    out = 0
    for i in players:
        out |= 1 << int(i)
    return out


def _unions(masks: Sequence[int]) -> np.ndarray:
    """The union bitmask of every subset of the disjoint `masks`, [2**q] (subset index order)."""
    q = len(masks)
    bits = (np.arange(2**q, dtype=np.int64)[:, None] >> np.arange(q, dtype=np.int64)) & 1
    return bits @ np.array(masks, dtype=np.int64).reshape(q)


def _context(masks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(unions [2**q], Shapley weights [2**q]) of the coalitions T of `masks` that a further
    player joins: weight |T|!(k−1−|T|)!/k! with k = q + 1 players."""
    q = len(masks)
    unions = _unions(masks)
    size = ((np.arange(2**q)[:, None] >> np.arange(q)) & 1).sum(axis=1)
    k = q + 1
    w = np.array([math.factorial(s) * math.factorial(k - 1 - s) / math.factorial(k)
                  for s in range(k)], dtype=np.float64)
    return unions, w[size]


def _joiners_value(table: np.ndarray, joiners: Sequence[int], others: Sequence[int]) -> np.ndarray:
    """φ of each joiner bitmask in its own game {joiner} ∪ others (others as players), [J]."""
    unions, weight = _context(others)
    joined = unions[:, None] | np.array(joiners, dtype=np.int64)[None, :]
    return weight @ (table[joined] - table[unions][:, None])


def _check_table(table: np.ndarray, n: int) -> np.ndarray:
    table = np.asarray(table, dtype=np.float64)
    got = table_players(table, minimum=1)
    check(got == n, "n", f"the table's number of players {got}", n)
    return table


def _check_span(span: Sequence[int], n: int, field: str = "span") -> Span:
    check(len(span) == 2 and 0 <= int(span[0]) < int(span[1]) <= n, field,
          f"(start, end) with 0 <= start < end <= {n}", span)
    return int(span[0]), int(span[1])


def group_shapley(table: np.ndarray, n: int, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Shapley values [len(groups)] of the game whose players are the disjoint `groups` (each in
    or out as one), every player in no group always absent.

    φ([S] | N_[S]) = group_shapley(table, n, [S, *singletons of N∖S])[0].
    """
    table = _check_table(table, n)
    check(len(groups) >= 1, "groups", "at least one group", groups)
    seen: set[int] = set()
    masks = []
    for g in groups:
        members = [int(i) for i in g]
        check(len(members) >= 1 and all(0 <= i < n for i in members), "groups",
              f"non-empty groups of players in [0, {n})", list(g))
        check(not seen & set(members) and len(set(members)) == len(members), "groups",
              "disjoint groups", [list(x) for x in groups])
        seen |= set(members)
        masks.append(_mask(members))
    return np.array([_joiners_value(table, [m], masks[:k] + masks[k + 1:])[0]
                     for k, m in enumerate(masks)])


def _outside(n: int, within: Span) -> list[int]:
    return [1 << i for i in range(n) if not within[0] <= i < within[1]]


def benefit(table: np.ndarray, n: int, span: Span, within: Span | None = None) -> float:
    """B([S]) of the adjacent words S = range(*span); 0 for a single word.

    `within` (a span containing `span`, default `span`) is the context: the words outside it are
    players, those of within∖span absent: benefit(L, within=S) is B_S([L]) of the module doc.
    """
    table = _check_table(table, n)
    span = _check_span(span, n)
    within = span if within is None else _check_span(within, n, "within")
    check(within[0] <= span[0] and span[1] <= within[1], "within",
          f"a span containing {span}", within)
    others = _outside(n, within)
    words = [1 << i for i in range(*span)]
    together = _joiners_value(table, [_mask(range(*span))], others)[0]
    alone = _joiners_value(table, words, others).sum()
    return float(together - alone)


def between_benefit(table: np.ndarray, n: int, left: Span, right: Span) -> float:
    """B(L, R) = φ([S]|N_[S]) − φ([L]|(N∖S)∪{[L]}) − φ([R]|(N∖S)∪{[R]}) for adjacent L, R."""
    table = _check_table(table, n)
    left, right = _check_span(left, n, "left"), _check_span(right, n, "right")
    check(left[1] == right[0], "right", f"a span starting at left's end {left[1]}", right)
    others = _outside(n, (left[0], right[1]))
    s, lm, rm = (_mask(range(left[0], right[1])), _mask(range(*left)), _mask(range(*right)))
    whole, lv, rv = _joiners_value(table, [s, lm, rm], others)
    return float(whole - lv - rv)


@dataclasses.dataclass(frozen=True)
class TreeNode:
    """A constituent: words range(start, end), its B([S]) and φ([S] | N_[S]).

    Leaves are words (benefit 0, shapley = the word's Shapley value in the full game, step −1).
    An internal node also has `between` = B(L, R) of its two children, `context_benefits`
    = (B_S([L]), B_S([R])), so benefit == between + sum(context_benefits), and `step`, its
    place (0-based) in the merge order.
    """

    start: int
    end: int
    benefit: float
    shapley: float
    children: tuple[TreeNode, ...] = ()
    between: float = 0.0
    context_benefits: tuple[float, ...] = ()
    step: int = -1

    @property
    def span(self) -> Span:
        return self.start, self.end

    def internal(self) -> list[TreeNode]:
        """The internal nodes below and including this one, in merge order."""
        def walk(node: TreeNode) -> list[TreeNode]:
            if not node.children:
                return []
            return [*walk(node.children[0]), *walk(node.children[1]), node]
        return sorted(walk(self), key=lambda node: node.step)

    def leaves(self) -> list[TreeNode]:
        if not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


def _merge(table: np.ndarray, n: int, left: TreeNode, right: TreeNode) -> TreeNode:
    span = (left.start, right.end)
    others = _outside(n, span)
    s, lm, rm = _mask(range(*span)), _mask(range(*left.span)), _mask(range(*right.span))
    whole, lv, rv = _joiners_value(table, [s, lm, rm], others)
    words = [1 << i for i in range(*span)]
    alone = _joiners_value(table, words, others)
    cut = left.end - left.start
    ctx = (float(lv - alone[:cut].sum()), float(rv - alone[cut:].sum()))
    return TreeNode(start=span[0], end=span[1], benefit=float(whole - alone.sum()),
                    shapley=float(whole), children=(left, right),
                    between=float(whole - lv - rv), context_benefits=ctx)


def build_tree(table: np.ndarray, n: int, criterion: str = "benefit") -> TreeNode:
    """The interaction tree over n words, merged bottom-up by the largest B([L∪R])
    (criterion="benefit") or B(L, R) (criterion="between"); leftmost pair on a tie."""
    table = _check_table(table, n)
    check(criterion in CRITERIA, "criterion", f"one of {list(CRITERIA)}", criterion)
    phi = shapley_values(table)
    nodes = [TreeNode(start=i, end=i + 1, benefit=0.0, shapley=float(phi[i])) for i in range(n)]
    cache: dict[tuple[int, int, int], TreeNode] = {}
    for step in range(n - 1):
        candidates = []
        for left, right in zip(nodes[:-1], nodes[1:], strict=True):
            key = (left.start, left.end, right.end)
            if key not in cache:
                cache[key] = _merge(table, n, left, right)
            candidates.append(cache[key])
        gains = np.array([getattr(c, criterion) for c in candidates])
        best = gains.max()
        k = int(np.flatnonzero(gains >= best - TIE_TOLERANCE * max(1.0, abs(best)))[0])
        nodes[k: k + 2] = [dataclasses.replace(candidates[k], step=step)]
    return nodes[0]


def tree_metrics(tree: TreeNode) -> dict[str, Any]:
    """Benefits within constituents (B([S]) summed over internal nodes) and between them
    (B(L, R) summed over merges), signed and absolute, with the per-node list in merge order."""
    internal = tree.internal()
    nodes = [{"start": t.start, "end": t.end, "benefit": t.benefit, "between": t.between,
              "shapley": t.shapley, "left": list(t.children[0].span),
              "right": list(t.children[1].span), "context_benefits": list(t.context_benefits),
              "step": t.step}
             for t in internal]
    return {
        "benefit_within": float(sum(t.benefit for t in internal)),
        "benefit_between": float(sum(t.between for t in internal)),
        "benefit_within_abs": float(sum(abs(t.benefit) for t in internal)),
        "benefit_between_abs": float(sum(abs(t.between) for t in internal)),
        "word_shapley": [leaf.shapley for leaf in tree.leaves()],
        "nodes": nodes,
    }


def _check_words(tree: TreeNode, words: Sequence[str]) -> None:
    check(tree.start == 0 and len(words) == tree.end, "words",
          f"{tree.end} words for a tree over [{tree.start}, {tree.end})", len(words))


def render_tree(tree: TreeNode, words: Sequence[str], benefits: bool = False) -> str:
    """Bracketed text, e.g. "((the cat) sat)"; with benefits=True each bracket ends ":B"."""
    _check_words(tree, words)

    def walk(node: TreeNode) -> str:
        if not node.children:
            return str(words[node.start])
        inner = " ".join(walk(c) for c in node.children)
        return f"({inner}:{node.benefit:.3g})" if benefits else f"({inner})"

    return walk(tree)


def draw_tree(tree: TreeNode, words: Sequence[str], path: str, title: str | None = None) -> str:
    """Save the tree as a PNG (words along the bottom, merges above, each labelled with B and
    B(L,R)); returns `path`. matplotlib is imported here, with the Agg backend."""
    _check_words(tree, words)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(words)), 0.7 * len(words) + 2.0))

    def place(node: TreeNode) -> tuple[float, int]:
        if not node.children:
            ax.text(node.start, -0.15, str(words[node.start]), ha="center", va="top",
                    fontsize=10, rotation=30 if len(words) > 10 else 0)
            return float(node.start), 0
        spots = [place(c) for c in node.children]
        height = 1 + max(h for _, h in spots)
        x = sum(xc for xc, _ in spots) / len(spots)
        for xc, hc in spots:
            ax.plot([xc, xc, x], [hc, height, height], color="0.3", lw=1.2)
        ax.text(x, height + 0.08, f"B={node.benefit:.3g}\nB(L,R)={node.between:.3g}",
                ha="center", va="bottom", fontsize=7,
                color="tab:red" if node.benefit >= 0 else "tab:blue",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
        return x, height

    _, top = place(tree)
    ax.set_xlim(-0.7, len(words) - 0.3)
    ax.set_ylim(-1.0, top + 1.0)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
