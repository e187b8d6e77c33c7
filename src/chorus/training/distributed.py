"""Multi-host plumbing: joining the job, building global batches, agreeing across hosts.

Every host runs the same program. Each feeds its own data shard (train.batch_size //
process_count rows); `global_batch` stitches the shards into one array sharded over the mesh.
On CPU, cross-process collectives use gloo (JAX's default CPU collectives implementation).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from chorus import sharding
from chorus.config import TrainConfig


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment {name}: expected an integer, got {value!r}") from None


def distributed_settings(cfg: TrainConfig) -> dict[str, Any] | None:
    """jax.distributed.initialize kwargs from the config, falling back to the environment;
    None for a single-process run (no coordinator anywhere)."""
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not address:
        return None
    num = cfg.num_processes or _env_int("JAX_NUM_PROCESSES")
    pid = cfg.process_id if cfg.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    # Missing values are left to JAX's cluster auto-detection (SLURM, TPU pods, ...).
    return {"coordinator_address": address, "num_processes": num, "process_id": pid}


def initialize(cfg: TrainConfig) -> bool:
    """Joins the multi-process job if one is configured. Call before any JAX computation."""
    settings = distributed_settings(cfg)
    if settings is None or jax.distributed.is_initialized():
        return False
    jax.distributed.initialize(**settings)
    return True


def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """This host's rows -> global arrays sharded over (data, fsdp) on the leading axis."""
    count = jax.process_count()
    out = {}
    for key, value in local.items():
        value = np.asarray(value)
        shape = (value.shape[0] * count, *value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(
            sharding.batch_sharding(mesh, value.ndim), value, shape)
    return out


def gather_json(value: Any) -> list[Any]:
    """Every process's JSON-able `value`, in process order (a collective: all must call)."""
    if jax.process_count() == 1:
        return [value]
    blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([blob.size], np.int32))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:blob.size] = blob
    blobs = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(b[:n]).decode()) for b, n in
            zip(blobs, lengths.reshape(-1), strict=True)]


def any_process(flag: bool) -> bool:
    """True when any process has `flag` set (a collective: all must call at the same step)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.asarray([flag], np.int32)).max())
