"""Atomic single-file checkpoints of pytrees (msgpack through flax.serialization)."""

from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax

from chorus import atomic


def save(path: str, tree: Any) -> None:
    atomic.write_bytes(path, flax.serialization.to_bytes(jax.device_get(tree)))


def load(path: str, target: Any) -> Any:
    """Restores `path` into the structure of `target` (shapes must match)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected a checkpoint file, got no such file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return flax.serialization.from_bytes(target, data)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected a checkpoint matching the current config, got: "
                         f"{e}") from None


def load_raw(path: str) -> dict:
    """Restores `path` as nested dicts of arrays (no target structure needed)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected a checkpoint file, got no such file")
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())
