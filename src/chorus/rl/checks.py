"""Validation helpers shared by the RL configs and losses: errors name field, expected, got."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from chorus.config import ConfigError


def fail(field: str, expected: str, got: Any) -> NoReturn:
    raise ConfigError(f"{field}: expected {expected}, got {got!r}")


def require(cond: bool, field: str, expected: str, got: Any) -> None:
    if not cond:
        fail(field, expected, got)


def require_one_of(field: str, value: Any, choices: Sequence[str]) -> None:
    require(value in choices, field, f"one of {list(choices)}", value)


def require_shape(name: str, shape: tuple[int, ...], expected: tuple[int | None, ...]) -> None:
    """Shape check for array arguments; None in `expected` matches any size."""
    ok = len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True))
    if not ok:
        shown = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name}: expected shape {shown}, got {tuple(shape)}")
