"""chorus.analysis.word_tree: Shapley values of groups of words against a brute-force reduced
game, interaction benefits with known answers (AND and pairwise games), the identity
B([S]) = B(L,R) + B_S([L]) + B_S([R]), the bottom-up tree and its metrics and renderings.

Everything is exact float64 over at most 2**7 coalitions of O(1) values: 1e-12 absolute.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_analysis_estimators import TOL, bf_shapley, random_table, table_of

from chorus.analysis import (
    TreeNode,
    benefit,
    between_benefit,
    build_tree,
    draw_tree,
    group_shapley,
    render_tree,
    shapley_values,
    tree_metrics,
)
from chorus.config import ConfigError


def bf_group_shapley(table: np.ndarray, groups) -> np.ndarray:
    """Shapley values of the reduced game over groups, written from the definition."""
    def f(coalition):
        return table[sum(1 << i for k in coalition for i in groups[k])]
    return bf_shapley(f, len(groups))


def pairwise(n: int, a: np.ndarray) -> np.ndarray:
    return table_of(n, lambda s: sum(a[i, j] for i, j in itertools.combinations(sorted(s), 2)))


def test_group_shapley_matches_reduced_game():
    n = 6
    table = random_table(n, 20)
    for groups in ([[0, 1], [2], [3, 4, 5]], [[4], [1, 2]], [[5]], [[0], [1], [2], [3], [4], [5]]):
        np.testing.assert_allclose(group_shapley(table, n, groups),
                                   bf_group_shapley(table, groups), rtol=0, atol=TOL)
    np.testing.assert_allclose(group_shapley(table, n, [[i] for i in range(n)]),
                               shapley_values(table), rtol=0, atol=TOL)
    with pytest.raises(ConfigError, match="groups: expected disjoint groups"):
        group_shapley(table, n, [[0, 1], [1, 2]])
    with pytest.raises(ConfigError, match=r"groups: expected non-empty groups of players"):
        group_shapley(table, n, [[0], [6]])
    with pytest.raises(ConfigError, match="n: expected the table's number of players 6"):
        group_shapley(table, 5, [[0]])


def test_benefit_from_definition():
    n = 6
    table = random_table(n, 21)
    for start, end in [(0, 2), (1, 4), (2, 6), (0, 6)]:
        S = list(range(start, end))
        outside = [[i] for i in range(n) if i not in S]
        together = group_shapley(table, n, [S, *outside])[0]
        alone = sum(group_shapley(table, n, [[i], *outside])[0] for i in S)
        assert benefit(table, n, (start, end)) == pytest.approx(together - alone, abs=TOL)
    for i in range(n):  # a single word gains nothing from acting with itself
        assert benefit(table, n, (i, i + 1)) == pytest.approx(0.0, abs=TOL)
    with pytest.raises(ConfigError, match=r"span: expected \(start, end\) with 0 <= start"):
        benefit(table, n, (3, 3))
    with pytest.raises(ConfigError, match=r"within: expected a span containing \(1, 4\)"):
        benefit(table, n, (1, 4), within=(2, 5))


def test_benefit_known_answers():
    n = 5
    # AND of words 1, 2: together they are worth 1, each alone (the other absent) nothing.
    table = table_of(n, lambda s: float({1, 2} <= s))
    assert benefit(table, n, (1, 3)) == pytest.approx(1.0, abs=TOL)
    # Pairwise game: B([S]) = Σ_{i<j∈S} a_ij and B(L,R) = Σ_{i∈L, j∈R} a_ij.
    a = np.triu(np.random.default_rng(22).normal(size=(n, n)), 1)
    table = pairwise(n, a)
    assert benefit(table, n, (0, 3)) == pytest.approx(a[0, 1] + a[0, 2] + a[1, 2], abs=TOL)
    assert between_benefit(table, n, (0, 1), (1, 3)) == pytest.approx(a[0, 1] + a[0, 2],
                                                                      abs=TOL)
    assert between_benefit(table, n, (1, 3), (3, 5)) == pytest.approx(
        a[1, 3] + a[1, 4] + a[2, 3] + a[2, 4], abs=TOL)


def test_benefit_decomposes_over_children():
    """B([S]) = B(L,R) + B_S([L]) + B_S([R]) for every split of every span of a random game."""
    n = 6
    table = random_table(n, 23)
    checked = 0
    for start in range(n):
        for end in range(start + 2, n + 1):
            whole = benefit(table, n, (start, end))
            for cut in range(start + 1, end):
                left, right = (start, cut), (cut, end)
                parts = (between_benefit(table, n, left, right)
                         + benefit(table, n, left, within=(start, end))
                         + benefit(table, n, right, within=(start, end)))
                assert whole == pytest.approx(parts, abs=TOL)
                checked += 1
    assert checked == 35
    # The children's benefits in S's context are not their own node benefits in general.
    assert abs(benefit(table, n, (0, 2), within=(0, 3)) - benefit(table, n, (0, 2))) > 1e-3


def test_tree_merges_strongest_pair_first():
    n = 6
    noise = 0.01 * random_table(n, 24)
    table = noise + 5.0 * table_of(n, lambda s: float({1, 2} <= s))
    tree = build_tree(table, n)
    first = tree.internal()[0]
    assert first.span == (1, 3) and first.benefit > 4.0
    assert tree.span == (0, n) and len(tree.internal()) == n - 1
    for node in tree.internal():
        assert node.benefit == pytest.approx(benefit(table, n, node.span), abs=TOL)
        assert node.benefit == pytest.approx(node.between + sum(node.context_benefits), abs=TOL)
        left, right = node.children
        assert left.end == right.start
        assert node.between == pytest.approx(between_benefit(table, n, left.span, right.span),
                                             abs=TOL)
        outside = [[i] for i in range(n) if not node.start <= i < node.end]
        assert node.shapley == pytest.approx(
            group_shapley(table, n, [list(range(*node.span)), *outside])[0], abs=TOL)
    np.testing.assert_allclose([leaf.shapley for leaf in tree.leaves()], shapley_values(table),
                               rtol=0, atol=TOL)
    assert all(leaf.benefit == 0.0 and leaf.children == () for leaf in tree.leaves())


def test_tree_greedy_choice_and_ties():
    n = 5
    # Additive game: every benefit is 0, every merge a tie: leftmost first, a left comb.
    table = table_of(n, lambda s: sum(float(i + 1) for i in s))
    words = ["a", "b", "c", "d", "e"]
    assert render_tree(build_tree(table, n), words) == "((((a b) c) d) e)"
    # Pairwise game with a strong pair (3, 4) and weaker ones (0, 1), (1, 2).
    a = np.zeros((n, n))
    a[3, 4], a[0, 1], a[1, 2] = 2.0, 1.0, 0.5
    table = pairwise(n, a)
    # By B([L∪R]): after (d e), B([c d e]) = 2 beats B([a b]) = 1: it grows around (d e).
    tree = build_tree(table, n)
    assert render_tree(tree, words) == "(a (b (c (d e))))"
    assert [t.span for t in tree.internal()] == [(3, 5), (2, 5), (1, 5), (0, 5)]
    assert render_tree(tree, words, benefits=True) == "(a (b (c (d e:2):2):2.5):3.5)"
    assert [t.between for t in tree.internal()] == pytest.approx([2, 0, 0.5, 1], abs=TOL)
    # By B(L, R): what each merge adds.
    tree = build_tree(table, n, criterion="between")
    assert render_tree(tree, words) == "(((a b) c) (d e))"
    assert [t.span for t in tree.internal()] == [(3, 5), (0, 2), (0, 3), (0, 5)]
    assert [t.step for t in tree.internal()] == [0, 1, 2, 3]
    metrics = tree_metrics(tree)
    assert metrics["benefit_within"] == pytest.approx(2.0 + 1.0 + 1.5 + 3.5, abs=TOL)
    assert metrics["benefit_between"] == pytest.approx(2.0 + 1.0 + 0.5 + 0.0, abs=TOL)
    assert [node["between"] for node in metrics["nodes"]] == pytest.approx([2, 1, 0.5, 0],
                                                                            abs=TOL)
    with pytest.raises(ConfigError, match="criterion: expected one of"):
        build_tree(table, n, criterion="density")


def test_tree_metrics_and_renderings(tmp_path):
    n = 6
    table = random_table(n, 25)
    tree = build_tree(table, n)
    metrics = tree_metrics(tree)
    internal = tree.internal()
    assert metrics["benefit_within"] == pytest.approx(sum(t.benefit for t in internal), abs=0)
    assert metrics["benefit_between_abs"] == pytest.approx(sum(abs(t.between) for t in internal))
    assert [(d["start"], d["end"]) for d in metrics["nodes"]] == [t.span for t in internal]
    np.testing.assert_allclose(metrics["word_shapley"], shapley_values(table), rtol=0, atol=TOL)
    words = [f"w{i}" for i in range(n)]
    text = render_tree(tree, words)
    assert text.replace("(", "").replace(")", "").split() == words
    assert text.count("(") == n - 1
    path = draw_tree(tree, words, str(tmp_path / "tree.png"), title="random game")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="words: expected 6 words"):
        render_tree(tree, words[:-1])
    single = build_tree(np.array([0.0, 2.0]), 1)
    assert single == TreeNode(start=0, end=1, benefit=0.0, shapley=2.0)
