"""`chorus compile --preset P --topology T`: AOT-compile the sharded train step for a TPU pod.

Runs on a CPU machine with libtpu installed (the `tpu-aot` extra): the topology is described,
not attached. Prints per-chip memory (memory_analysis), FLOPs (cost_analysis) and whether the
step fits the chip's HBM; when it does not, names the biggest buffers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import jax

import pallas_kernels
from chorus import sharding
from chorus.config import Config, add_config_args, config_from_args
from chorus.model.factory import abstract_params
from chorus.model.flops import flops_per_token, parameter_counts
from chorus.model.unified import UnifiedAudioLM
from chorus.training.lm_loss import make_lm_loss
from chorus.training.optimizer import make_optimizer
from chorus.training.partitioning import batch_specs, jit_train_step, state_shardings

GIB = 2**30
HBM_PER_CHIP_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}


def tpu_topology(name: str):
    """Describes a TPU topology like 'v5p:4x4x4' or 'v5e:2x2' without attaching to it."""
    from jax.experimental import topologies

    # Several processes may load libtpu for AOT compiles at once (tests, benchmarks); libtpu
    # reads this when the topology is first described, not at `import jax`.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    generation, _, shape = name.partition(":")
    dims = [int(d) for d in shape.split("x")] if shape else []
    if generation not in HBM_PER_CHIP_GIB or not dims:
        raise ValueError(f"--topology: expected GEN:AxB[xC] with GEN in "
                         f"{sorted(HBM_PER_CHIP_GIB)}, got {name!r}")
    bounds = (2, 2, 1) if len(dims) == 3 else (min(dims[0], 2), min(dims[1], 2), 1)
    return topologies.get_topology_desc(platform="tpu", topology_name=name,
                                        chips_per_host_bounds=bounds, num_slices=1)


_ELEMENT_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "i32": 4, "ui32": 4, "i1": 1, "i8": 1,
                  "ui8": 1, "i64": 8, "f64": 8}


def _largest_buffers(stablehlo_text: str, limit: int = 8) -> list[dict]:
    """The largest distinct array types in the partitioned program, for out-of-memory reports.

    Reads the lowered (per-chip, after sharding propagation is not yet applied) StableHLO, so
    sizes are those of the logical arrays; the op that first produces each type is named.
    """
    found: dict[str, tuple[int, str]] = {}
    for line in stablehlo_text.splitlines():
        op = re.search(r"= ([\w.]+)", line)
        for dims, elem in re.findall(r"tensor<((?:\d+x)+)(\w+)>", line):
            if elem not in _ELEMENT_BYTES:
                continue
            nbytes = _ELEMENT_BYTES[elem]
            for d in dims.rstrip("x").split("x"):
                nbytes *= int(d)
            key = f"{elem}[{dims.rstrip('x').replace('x', ',')}]"
            if key not in found:
                found[key] = (nbytes, op.group(1) if op else "argument")
    top = sorted(found.items(), key=lambda kv: -kv[1][0])[:limit]
    return [{"shape": k, "first_op": op, "gib": n / GIB} for k, (n, op) in top]


def compile_for_topology(config: Config, topology: str) -> dict:
    topo = tpu_topology(topology)
    devices = topo.devices
    mesh = sharding.make_mesh(config.mesh, devices)
    model = UnifiedAudioLM(config)
    tx = make_optimizer(config.optim, config.train.steps)
    # Abstract shapes are computed outside the mesh context: eager constants there would be
    # placed on the (unattached) TPU devices.
    state, state_shards = state_shardings(model, config, mesh, tx)
    batch = batch_specs(config, mesh)
    step = jit_train_step(make_lm_loss(model), tx, state_shards, mesh, batch)
    rng = jax.ShapeDtypeStruct((2,), jax.numpy.uint32, sharding=sharding.replicated(mesh))
    hbm = HBM_PER_CHIP_GIB[topology.split(":")[0]] * GIB
    with sharding.activate(mesh), pallas_kernels.target_platform("tpu"):
        lowered = step.lower(state, batch, rng)
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            # The TPU compiler refuses programs that cannot fit; report instead of crashing.
            return {"preset": config.name, "topology": topology, "chips": len(devices),
                    "fits": False, "hbm_per_chip_gib": hbm / GIB,
                    "message": "does not fit: " + str(e).split("\n")[0],
                    "largest_buffers": _largest_buffers(lowered.as_text())}
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    per_chip = {
        "argument_bytes": mem.argument_size_in_bytes,
        "output_bytes": mem.output_size_in_bytes,
        "alias_bytes": mem.alias_size_in_bytes,
        "temp_bytes": mem.temp_size_in_bytes,
        "generated_code_bytes": mem.generated_code_size_in_bytes,
    }
    counts = parameter_counts(abstract_params(model, config))
    tokens = config.train.batch_size * config.train.seq_len
    analytic = flops_per_token(config, counts, config.train.seq_len)["train"] * tokens
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes)
    result = {
        "preset": config.name,
        "topology": topology,
        "chips": len(devices),
        "mesh": dict(zip(sharding.MESH_AXES, mesh.devices.shape, strict=True)),
        "global_batch": config.train.batch_size,
        "seq_len": config.train.seq_len,
        "per_chip": per_chip,
        "per_chip_peak_gib": peak / GIB,
        "hbm_per_chip_gib": hbm / GIB,
        "fits": peak <= hbm,
        # XLA counts a scanned layer's loop body once, so this undercounts by ~num_layers
        # when model.scan_layers is set; the analytic figure below counts every layer.
        "xla_flops_per_chip_per_step": float(cost.get("flops", 0.0)) if cost else None,
        "analytic_train_flops_per_chip_per_step": analytic / len(devices),
        "attention_impl": config.model.attention_impl,
    }
    if not result["fits"]:
        result["message"] = (f"does not fit: {peak / GIB:.1f} GiB per chip > {hbm / GIB:.0f} GiB "
                             f"HBM; biggest buffers listed under 'largest_buffers'")
        result["largest_buffers"] = _largest_buffers(lowered.as_text())
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus compile", description=__doc__)
    add_config_args(parser, default_preset="tpu-v5p-64-7b")
    parser.add_argument("--topology", default="v5p:4x4x4", help="e.g. v5p:4x4x4, v5e:2x2")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    result = compile_for_topology(config, args.topology)
    print(json.dumps(result, indent=2))
    if not result["fits"]:
        print(f"chorus compile: {result['message']}", file=sys.stderr)
        return 1
    return 0
