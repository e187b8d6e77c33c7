"""`chorus info --preset P`: the platform and devices JAX sees, parameter counts, FLOPs per
token, bytes per device."""

from __future__ import annotations

import argparse
import collections
import json
import math

import jax
import numpy as np

from chorus.config import Config, add_config_args, config_from_args
from chorus.model.factory import abstract_params, param_logical_specs
from chorus.model.flops import flops_per_token, parameter_counts
from chorus.model.unified import UnifiedAudioLM
from chorus.sharding import LOGICAL_AXIS_RULES, MESH_AXES


def bytes_per_device(params, logical_specs, mesh_shape: dict[str, int],
                     optimizer_copies: int = 2) -> dict[str, float]:
    """Parameter (+ Adam moments) bytes on one device under the logical rules."""
    rules = dict(LOGICAL_AXIS_RULES)

    def shard_factor(spec) -> int:
        factor = 1
        for name in spec or ():
            mesh_axes = rules.get(name) if name else None
            if mesh_axes is None:
                continue
            for axis in (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes:
                factor *= mesh_shape[axis]
        return factor

    leaves = jax.tree.leaves(params)
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
    specs = jax.tree.leaves(logical_specs, is_leaf=is_spec)
    total = 0.0
    for leaf, spec in zip(leaves, specs, strict=True):
        total += np.prod(leaf.shape) * leaf.dtype.itemsize / shard_factor(spec)
    return {"params": total, "optimizer": optimizer_copies * total,
            "params_plus_optimizer": (1 + optimizer_copies) * total}


def platform_info() -> dict:
    """What JAX runs on here: the default backend and every device it sees (all processes)."""
    devices = jax.devices()
    kinds = dict(collections.Counter(d.device_kind for d in devices))
    return {"platform": jax.default_backend(), "device_count": len(devices),
            "local_device_count": jax.local_device_count(),
            "process_index": jax.process_index(), "process_count": jax.process_count(),
            "device_kinds": kinds,
            "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.local_devices()]}


def info(config: Config, num_devices: int | None = None) -> dict:
    model = UnifiedAudioLM(config)
    params = abstract_params(model, config)
    counts = parameter_counts(params)
    devices = num_devices or config.mesh.target_devices or len(jax.devices())
    mesh_shape = dict(zip(MESH_AXES, config.mesh.resolve(devices), strict=True))
    per_device = bytes_per_device(params, param_logical_specs(model, config), mesh_shape)
    return {
        "runtime": platform_info(),
        "preset": config.name,
        "parameters": counts,
        "flops_per_token": flops_per_token(config, counts, config.train.seq_len),
        "seq_len": config.train.seq_len,
        "mesh": mesh_shape,
        "bytes_per_device": per_device,
        "gib_per_device": {k: v / 2**30 for k, v in per_device.items()},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus info", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--devices", type=int, default=None,
                        help="device count for the per-device figures (default: the preset's)")
    args = parser.parse_args(argv)
    result = info(config_from_args(args), args.devices)
    print(json.dumps(result, indent=2, default=lambda x: float(x) if math.isfinite(x) else str(x)))
    return 0
