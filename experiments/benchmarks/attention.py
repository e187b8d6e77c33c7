"""Attention benchmark: Pallas kernels vs jax.nn.dot_product_attention (`chorus bench attention`).

Two sections:
  device   on the present backend, per sequence length: forward and forward+backward time,
           TFLOP/s, speed ratio and compiled temp memory of the Pallas kernel vs XLA (and
           cuDNN on GPU). On CPU the Pallas rows run the interpreter: they are labeled
           correctness-only and carry the error vs the reference instead of a meaningful time.
  tpu_aot  compiled temp memory of the forward+backward for a TPU topology (AOT through
           libtpu, works on any machine): the Mosaic kernel's memory grows linearly in S, the
           XLA reference's quadratically (S x S scores), until it no longer fits.
Writes results.json and results.md to --out (default runs/bench/attention).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import pallas_kernels
from chorus.atomic import write_text
from pallas_kernels.reference import attention_reference
from pallas_kernels.testing import random_qkv, relative_error

DEFAULT_OUT = "runs/bench/attention"
ACCEL_SEQ_LENS = (1024, 2048, 4096, 8192, 16384)
CPU_SEQ_LENS = (128, 256)  # the interpreter and a 2-core CPU: correctness-sized only
FWD_BWD_FLOP_FACTOR = 3.5  # backward = 2.5x forward matmul work (FlashAttention convention)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    seq_lens: tuple[int, ...]
    aot_seq_lens: tuple[int, ...]
    batch: int = 1
    q_heads: int = 16
    kv_heads: int = 8
    head_dim: int = 128
    dtype: str = "bfloat16"
    causal: bool = True
    iters: int = 10
    block_q: int = 128
    block_kv: int = 128
    tpu_topology: str = "v5e:2x2"
    tpu_aot: bool = True
    out: str = DEFAULT_OUT

    def __post_init__(self):
        def check(ok, field, expected, got):
            if not ok:
                raise ValueError(f"BenchConfig.{field}: expected {expected}, got {got!r}")

        for field in ("batch", "q_heads", "kv_heads", "head_dim", "iters", "block_q",
                      "block_kv"):
            check(getattr(self, field) >= 1, field, "an int >= 1", getattr(self, field))
        check(self.q_heads % self.kv_heads == 0, "q_heads",
              f"a multiple of kv_heads={self.kv_heads}", self.q_heads)
        check(self.dtype in ("float32", "bfloat16", "float16"), "dtype",
              "float32 | bfloat16 | float16", self.dtype)
        check(all(s >= 1 for s in self.seq_lens + self.aot_seq_lens), "seq_lens",
              "positive ints", self.seq_lens + self.aot_seq_lens)


def attention_flops(cfg: BenchConfig, seq: int, fwd_bwd: bool) -> float:
    """Matmul FLOPs of attention; causal counts the lower triangle only."""
    fwd = 4.0 * cfg.batch * cfg.q_heads * seq * seq * cfg.head_dim
    fwd *= 0.5 if cfg.causal else 1.0
    return fwd * (FWD_BWD_FLOP_FACTOR if fwd_bwd else 1.0)


def _attention_fn(impl: str, cfg: BenchConfig):
    """q, k, v -> out for one implementation name."""
    if impl in ("xla", "cudnn"):
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=cfg.causal,
                                                            implementation=impl)
    if impl == "reference":
        return lambda q, k, v: attention_reference(q, k, v, causal=cfg.causal)
    pallas_impl, _, variant = impl.partition(":")  # "pallas" or "pallas_interpret:tpu"

    def fn(q, k, v):
        with pallas_kernels.interpret_variant(variant or "tpu"):
            return pallas_kernels.attention(q, k, v, causal=cfg.causal, impl=pallas_impl,
                                            block_q=cfg.block_q, block_kv=cfg.block_kv)
    return fn


def _fwd_bwd(fn):
    def loss(q, k, v, dout):
        return jnp.sum(fn(q, k, v).astype(jnp.float32) * dout.astype(jnp.float32))
    return jax.grad(loss, argnums=(0, 1, 2))


def _median_seconds(compiled, args, iters: int) -> float:
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _temp_bytes(compiled) -> int | None:
    stats = compiled.memory_analysis()
    return None if stats is None else int(stats.temp_size_in_bytes)


def _short_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


# ----------------------------------------------------------------------------- device rows


def _device_impls(backend: str) -> list[tuple[str, str]]:
    """(impl, label) pairs measured on this backend."""
    if backend == "gpu":
        return [("pallas", "pallas-triton"), ("cudnn", "cudnn"), ("xla", "xla")]
    if backend == "tpu":
        return [("pallas", "pallas-mosaic"), ("xla", "xla")]
    return [("pallas_interpret:tpu", "pallas-tpu (interpret)"),
            ("pallas_interpret:gpu", "pallas-gpu (interpret)"), ("xla", "xla")]


def device_rows(cfg: BenchConfig) -> list[dict]:
    backend = jax.default_backend()
    dtype = jnp.dtype(cfg.dtype)
    rows = []
    for seq in cfg.seq_lens:
        q, k, v, dout = random_qkv(seq, cfg.batch, seq, cfg.q_heads, cfg.kv_heads,
                                   cfg.head_dim, dtype)
        want = _reference_outputs(cfg, q, k, v, dout) if backend == "cpu" else None
        base_times = {}
        for impl, label in _device_impls(backend):
            row = dict(seq_len=seq, impl=label, correctness_only=impl.startswith(
                "pallas_interpret"))
            try:
                row.update(_measure(cfg, impl, q, k, v, dout, want))
            except Exception as exc:  # an impl that cannot run this shape (e.g. cuDNN)
                row["error"] = _short_error(exc)
            rows.append(row)
            if impl in ("xla", "cudnn") and "fwd_ms" in row:
                base_times[impl] = row
        for row in rows[-len(_device_impls(backend)):]:
            if "fwd_ms" in row and "xla" in base_times and not row["correctness_only"]:
                row["speedup_fwd_vs_xla"] = base_times["xla"]["fwd_ms"] / row["fwd_ms"]
                row["speedup_fwd_bwd_vs_xla"] = (base_times["xla"]["fwd_bwd_ms"]
                                                 / row["fwd_bwd_ms"])
    return rows


def _reference_outputs(cfg, q, k, v, dout):
    f32 = [x.astype(jnp.float32) for x in (q, k, v, dout)]
    fn = _attention_fn("reference", cfg)
    return jax.jit(fn)(*f32[:3]), jax.jit(_fwd_bwd(fn))(*f32)


def _measure(cfg: BenchConfig, impl: str, q, k, v, dout, want) -> dict:
    fn = _attention_fn(impl, cfg)
    fwd = jax.jit(fn).lower(q, k, v).compile()
    fwd_bwd = jax.jit(_fwd_bwd(fn)).lower(q, k, v, dout).compile()
    iters = 1 if impl.startswith("pallas_interpret") else cfg.iters
    seq = q.shape[1]
    t_fwd = _median_seconds(fwd, (q, k, v), iters)
    t_all = _median_seconds(fwd_bwd, (q, k, v, dout), iters)
    out = dict(fwd_ms=1e3 * t_fwd, fwd_bwd_ms=1e3 * t_all,
               fwd_tflops=attention_flops(cfg, seq, False) / t_fwd / 1e12,
               fwd_bwd_tflops=attention_flops(cfg, seq, True) / t_all / 1e12,
               temp_mib=_mib(_temp_bytes(fwd_bwd)))
    if want is not None:
        got_out, got_grads = fwd(q, k, v), fwd_bwd(q, k, v, dout)
        out["max_rel_error"] = max(relative_error(g, w) for g, w in zip(
            (got_out, *got_grads), (want[0], *want[1]), strict=True))
    return out


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


# ----------------------------------------------------------------------------- TPU AOT rows


def tpu_aot_rows(cfg: BenchConfig) -> list[dict]:
    """Compiled temp memory of fwd+bwd on one chip of a TPU topology, kernel vs reference."""
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    topo = topologies.get_topology_desc(platform="tpu", topology_name=cfg.tpu_topology)
    sharding = NamedSharding(Mesh(np.array(topo.devices[:1]), ("data",)), P())
    dtype = jnp.dtype(cfg.dtype)
    rows = []
    for seq in cfg.aot_seq_lens:
        q = jax.ShapeDtypeStruct((cfg.batch, seq, cfg.q_heads, cfg.head_dim), dtype,
                                 sharding=sharding)
        kv = jax.ShapeDtypeStruct((cfg.batch, seq, cfg.kv_heads, cfg.head_dim), dtype,
                                  sharding=sharding)
        for impl, label in (("pallas", "pallas-mosaic"), ("xla", "xla")):
            row = dict(seq_len=seq, impl=label, topology=cfg.tpu_topology)
            try:
                with pallas_kernels.target_platform("tpu"):
                    compiled = jax.jit(_fwd_bwd(_attention_fn(impl, cfg))).lower(
                        q, kv, kv, q).compile()
                row["temp_mib"] = _mib(_temp_bytes(compiled))
            except Exception as exc:  # the quadratic reference stops fitting in HBM
                row["error"] = _short_error(exc)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- output


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def to_markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"# Attention benchmark ({result['backend']}: {result['device_kind']})", "",
             f"B={cfg['batch']} Hq={cfg['q_heads']} Hkv={cfg['kv_heads']} D={cfg['head_dim']} "
             f"{cfg['dtype']} causal={cfg['causal']} blocks={cfg['block_q']}x{cfg['block_kv']}",
             "", "## Device", "",
             "| S | impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | "
             "speedup fwd / fwd+bwd vs xla | temp MiB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["device"]:
        speed = (f"{_fmt(r.get('speedup_fwd_vs_xla'), '.2f')} / "
                 f"{_fmt(r.get('speedup_fwd_bwd_vs_xla'), '.2f')}")
        note = r.get("error", "")
        if r.get("correctness_only"):
            note = f"correctness-only (interpreter), max rel err {r['max_rel_error']:.1e}" \
                if "max_rel_error" in r else "correctness-only (interpreter)"
        elif "max_rel_error" in r:
            note = f"max rel err {r['max_rel_error']:.1e}"
        lines.append(f"| {r['seq_len']} | {r['impl']} | {_fmt(r.get('fwd_ms'), '.2f')} | "
                     f"{_fmt(r.get('fwd_tflops'), '.3f')} | {_fmt(r.get('fwd_bwd_ms'), '.2f')} | "
                     f"{_fmt(r.get('fwd_bwd_tflops'), '.3f')} | {speed} | "
                     f"{_fmt(r.get('temp_mib'), '.1f')} | {note} |")
    if result.get("tpu_aot"):
        aot = result["config_aot"]
        lines += ["", f"## TPU AOT compiled temp memory, fwd+bwd, one chip of "
                      f"{aot['tpu_topology']}", "",
                  f"B={aot['batch']} Hq={aot['q_heads']} Hkv={aot['kv_heads']} "
                  f"D={aot['head_dim']} {aot['dtype']} causal={aot['causal']}", "",
                  "| S | impl | temp MiB | note |", "|---|---|---|---|"]
        for r in result["tpu_aot"]:
            lines.append(f"| {r['seq_len']} | {r['impl']} | {_fmt(r.get('temp_mib'), '.1f')} | "
                         f"{r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from exc


def parse_args(argv: list[str]) -> BenchConfig:
    accel = jax.default_backend() in ("gpu", "tpu")
    ap = argparse.ArgumentParser(prog="chorus bench attention", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=_int_list,
                    default=ACCEL_SEQ_LENS if accel else CPU_SEQ_LENS,
                    help="device-section lengths (default: 1k..16k on GPU/TPU, 128,256 on CPU)")
    ap.add_argument("--aot-seq-lens", type=_int_list, default=ACCEL_SEQ_LENS,
                    help="TPU AOT-section lengths")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--q-heads", type=int, default=16 if accel else 4)
    ap.add_argument("--kv-heads", type=int, default=8 if accel else 2)
    ap.add_argument("--head-dim", type=int, default=128 if accel else 64)
    ap.add_argument("--dtype", default="bfloat16" if accel else "float32")
    ap.add_argument("--no-causal", dest="causal", action="store_false")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--block-q", type=int, default=128)
    ap.add_argument("--block-kv", type=int, default=128)
    ap.add_argument("--tpu-topology", default="v5e:2x2")
    ap.add_argument("--no-tpu-aot", dest="tpu_aot", action="store_false")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    return BenchConfig(**vars(args))


def run(cfg: BenchConfig) -> dict:
    result = dict(backend=jax.default_backend(), device_kind=str(jax.devices()[0].device_kind),
                  config=dataclasses.asdict(cfg))
    result["device"] = device_rows(cfg)
    # The AOT section builds its inputs at the benchmark's full size, so it uses the
    # accelerator head layout even when the device section was shrunk for CPU.
    aot_cfg = dataclasses.replace(cfg, q_heads=16, kv_heads=8, head_dim=128, dtype="bfloat16") \
        if jax.default_backend() == "cpu" else cfg
    if cfg.tpu_aot:
        result["config_aot"] = dataclasses.asdict(aot_cfg)
        result["tpu_aot"] = tpu_aot_rows(aot_cfg)
    return result


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(list(argv or []))
    result = run(cfg)
    write_text(os.path.join(cfg.out, "results.json"), json.dumps(result, indent=2) + "\n")
    markdown = to_markdown(result)
    write_text(os.path.join(cfg.out, "results.md"), markdown)
    print(markdown)
    return 0
