"""Shape checks for the array arguments of the RL losses (config values use chorus.config.check)."""

from __future__ import annotations


def require_shape(name: str, shape: tuple[int, ...], expected: tuple[int | None, ...]) -> None:
    """ValueError naming `name` unless `shape` matches `expected`; None matches any size."""
    ok = len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True))
    if not ok:
        shown = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name}: expected shape {shown}, got {tuple(shape)}")
