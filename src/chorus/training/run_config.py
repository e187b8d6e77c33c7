"""A run's resolved config in its workdir, and which changes a resumed run may make.

`workdir/config.json` is the full resolved config (enough to reproduce the run). A checkpoint
stores it too; resuming with a config that differs in anything that changes the math (model,
audio, optimizer, batch shapes, seed, experiment extras) fails with the differing fields named.
Runtime settings (mesh layout, step budget, logging / checkpoint cadence, multi-host wiring)
may change between attempts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from chorus.atomic import write_json
from chorus.config import Config

CONFIG_NAME = "config.json"

# Dotted prefixes of fields a resumed run may change.
RUNTIME_FIELDS = (
    "name", "mesh.", "decode.",
    "train.steps", "train.log_every", "train.eval_every", "train.eval_steps",
    "train.checkpoint_every", "train.keep_checkpoints", "train.max_nonfinite_in_a_row",
    "train.async_checkpointing", "train.prefetch_batches", "train.peak_flops_per_device",
    "train.coordinator_address", "train.num_processes", "train.process_id",
    "experiment.run_dir",  # where a staged run lives (moving it must not block a resume)
)


class IncompatibleConfigError(ValueError):
    """The checkpoint was written by a run whose config differs in fields that matter."""


def write_run_config(workdir: str, config: Config) -> str:
    path = os.path.join(workdir, CONFIG_NAME)
    write_json(path, config.to_dict())
    return path


def read_run_config(workdir: str) -> Config:
    path = os.path.join(workdir, CONFIG_NAME)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no run config; is {workdir!r} a training workdir "
                                "(written by `chorus train`)?") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: expected JSON, got a parse error: {e}") from None
    return Config.from_dict(data)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):  # an empty section contributes no fields
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _is_runtime(field: str) -> bool:
    return any(field == p or (p.endswith(".") and field.startswith(p)) for p in RUNTIME_FIELDS)


def config_mismatches(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'field: saved X, now Y' for every non-runtime field that differs."""
    a, b = _flatten(saved), _flatten(current)
    lines = []
    for field in sorted(set(a) | set(b)):
        if _is_runtime(field):
            continue
        old, new = a.get(field, "<absent>"), b.get(field, "<absent>")
        if old != new:
            lines.append(f"{field}: saved {old!r}, now {new!r}")
    return lines


def check_resumable(saved: Mapping[str, Any], current: Config, where: str) -> None:
    mismatches = config_mismatches(saved, current.to_dict())
    if mismatches:
        raise IncompatibleConfigError(
            f"{where}: checkpoint was written with a different config; mismatching fields:\n  "
            + "\n  ".join(mismatches)
            + "\nUse a new --workdir, or the same --preset/--set as the original run.")
