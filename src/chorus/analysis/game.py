"""A cooperative game over input players, evaluated in batches of coalitions.

A game is `n` players and a value function f(S): the model output with only the players in
S kept and the rest set to a baseline. Every estimator in chorus.analysis sees the model only
through `Game.values(masks)`, so the same code explains a spectrogram's time-frequency
patches, a transcript's words or a synthetic game of the tests. Masks are built in bulk and
evaluated in chunks of `batch_size`: one forward per chunk, never one per coalition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from chorus.config import check

ValueFn = Callable[[np.ndarray], np.ndarray]
"""masks [B, n] bool (True = player kept) -> values [B] float."""

Progress = Callable[[int, int], None]
"""progress(done, total): coalitions evaluated so far out of the call's total."""

MAX_EXACT_PLAYERS = 16
"""The largest n whose 2**n coalitions `value_table` enumerates (65,536 forwards)."""


@dataclasses.dataclass(frozen=True)
class Game:
    """Players and a batched value function; `values` is the only way estimators call it."""

    num_players: int
    value: ValueFn
    player_names: tuple[str, ...] = ()
    batch_size: int = 256

    def __post_init__(self) -> None:
        check(isinstance(self.num_players, int) and self.num_players >= 2,
              "game.num_players", "an int >= 2", self.num_players)
        check(callable(self.value), "game.value", "a callable masks [B, n] -> [B]", self.value)
        check(isinstance(self.player_names, tuple), "game.player_names", "a tuple of str",
              type(self.player_names).__name__)
        check(len(self.player_names) in (0, self.num_players), "game.player_names",
              f"{self.num_players} names or none", len(self.player_names))
        check(isinstance(self.batch_size, int) and self.batch_size >= 1, "game.batch_size",
              "an int >= 1", self.batch_size)

    def values(self, masks: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """f(S) for every row of `masks` [B, n] bool, as float64 [B], batch_size rows a call."""
        masks = np.asarray(masks)
        n = self.num_players
        check(masks.ndim == 2 and masks.shape[1] == n, "masks", f"shape [B, {n}]", masks.shape)
        check(masks.dtype == np.bool_, "masks", "dtype bool", str(masks.dtype))
        total = masks.shape[0]
        out = np.empty(total, dtype=np.float64)
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            chunk = f"game.value on rows {start}:{stop} of {total}"
            got = np.asarray(self.value(masks[start:stop]))
            check(got.shape == (stop - start,), chunk, f"shape ({stop - start},)", got.shape)
            got = got.astype(np.float64)
            check(bool(np.all(np.isfinite(got))), chunk, "finite values",
                  f"{int(np.sum(~np.isfinite(got)))} non-finite")
            out[start:stop] = got
            if progress is not None:
                progress(stop, total)
        return out


def coalition_masks(n: int) -> np.ndarray:
    """All 2**n coalitions as [2**n, n] bool; row r holds player i iff bit i of r is set."""
    check(isinstance(n, int) and 1 <= n <= MAX_EXACT_PLAYERS, "n",
          f"an int in [1, {MAX_EXACT_PLAYERS}]", n)
    rows = np.arange(2**n, dtype=np.int64)
    return ((rows[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def value_table(game: Game, progress: Progress | None = None) -> np.ndarray:
    """f over every coalition, float64 [2**n] indexed by bitmask: the input of exact estimators."""
    n = game.num_players
    check(n <= MAX_EXACT_PLAYERS, "game.num_players",
          f"<= {MAX_EXACT_PLAYERS} for an exact value table (2**n forwards; sample instead)", n)
    return game.values(coalition_masks(n), progress)


def table_players(table: np.ndarray, minimum: int = 2) -> int:
    """n of a value table [2**n] (float64, finite), or a one-line error naming the table."""
    table = np.asarray(table)
    size = table.shape[0] if table.ndim == 1 else -1
    n = size.bit_length() - 1 if size > 0 else -1
    check(table.ndim == 1 and size == 2**n and n >= minimum, "table",
          f"a 1-D array of length 2**n with n >= {minimum}", table.shape)
    check(bool(np.all(np.isfinite(table))), "table", "finite values",
          f"{int(np.sum(~np.isfinite(table)))} non-finite")
    return n


def popcounts(n: int) -> np.ndarray:
    """|S| for every bitmask S < 2**n, int64 [2**n]."""
    rows = np.arange(2**n, dtype=np.int64)
    return ((rows[:, None] >> np.arange(n, dtype=np.int64)) & 1).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A sampled (or exact) estimate: mean, its standard error, and the samples it averages.

    `samples` is the number of independent draws behind each entry of `mean` (permutations,
    contexts); `exact` marks a value computed from the full value table (stderr all zero).
    """

    mean: np.ndarray
    stderr: np.ndarray
    samples: int
    exact: bool = False

    def __post_init__(self) -> None:
        check(np.shape(self.mean) == np.shape(self.stderr), "estimate.stderr",
              f"the shape of mean {np.shape(self.mean)}", np.shape(self.stderr))
        check(isinstance(self.samples, int) and self.samples >= 0, "estimate.samples",
              "an int >= 0", self.samples)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: nested lists of floats."""
        return {"mean": np.asarray(self.mean, dtype=np.float64).tolist(),
                "stderr": np.asarray(self.stderr, dtype=np.float64).tolist(),
                "samples": self.samples, "exact": self.exact}


def sample_estimate(samples: np.ndarray) -> Estimate:
    """Mean and standard error (std with ddof=1 over axis 0, / sqrt(K)) of K draws [K, ...]."""
    k = samples.shape[0]
    check(k >= 2, "samples", "at least 2 draws for a standard error", k)
    return Estimate(mean=samples.mean(axis=0),
                    stderr=samples.std(axis=0, ddof=1) / np.sqrt(k), samples=k)
