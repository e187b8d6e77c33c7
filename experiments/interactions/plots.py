"""The figures of interaction analysis (matplotlib, Agg: files only, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from chorus.analysis.players import Players
from chorus.atomic import atomic_path


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _save(plt, fig, path: str) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def shapley_heatmap(frames: np.ndarray, players: Players, phi: Sequence[float], path: str,
                    title: str = "") -> str:
    """The log-mel with each player's Shapley value laid over its span (red: the player
    raises f, blue: it lowers f; the colour scale is symmetric about 0)."""
    plt, fig, ax = _figure(9, 3.6)
    frames = np.asarray(frames)
    ax.imshow(frames.T, origin="lower", aspect="auto", cmap="gray")
    owner = players.index_of(frames.shape[0 if players.axis == "time" else 1])
    values = np.where(owner >= 0, np.asarray(phi)[np.maximum(owner, 0)], 0.0)
    limit = max(float(np.abs(phi).max()), 1e-12)
    if players.axis == "time":
        overlay = np.broadcast_to(values[None, :], (frames.shape[1], frames.shape[0]))
    else:
        overlay = np.broadcast_to(values[:, None], (frames.shape[1], frames.shape[0]))
    image = ax.imshow(overlay, origin="lower", aspect="auto", cmap="coolwarm", alpha=0.55,
                      vmin=-limit, vmax=limit)
    for a, _ in players.spans[1:]:
        (ax.axvline if players.axis == "time" else ax.axhline)(a - 0.5, color="k", lw=0.6)
    ax.set_xlabel("log-mel frame (10 ms)")
    ax.set_ylabel("mel channel")
    ax.set_title(title or "Shapley value of each player")
    fig.colorbar(image, ax=ax, label="Shapley value (nats)")
    return _save(plt, fig, path)


def strength_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float],
                                                Sequence[float]]], path: str,
                    ylabel: str = "interaction strength", title: str = "") -> str:
    """label -> (ratios m/n, mean, stderr): one line with error bars per condition."""
    plt, fig, ax = _figure(6.4, 4.0)
    for label, (ratios, mean, stderr) in curves.items():
        ax.errorbar(ratios, mean, yerr=stderr, marker="o", ms=3, capsize=3, label=label)
    ax.set_xlabel("order m / n")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def word_bars(words: Sequence[str], phi: Sequence[float], path: str, title: str = "") -> str:
    """Each word's Shapley value as a bar."""
    plt, fig, ax = _figure(max(4.0, 0.7 * len(words)), 3.2)
    x = np.arange(len(words))
    ax.bar(x, phi, color=["tab:red" if v > 0 else "tab:blue" for v in phi])
    ax.set_xticks(x, words, rotation=30, ha="right")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("Shapley value (nats)")
    ax.set_title(title or "Shapley value of each word")
    return _save(plt, fig, path)
