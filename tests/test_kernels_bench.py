"""The attention benchmark runs end to end on CPU (tiny, interpreter rows) and writes its
JSON + markdown report."""

import json

from experiments.benchmarks import attention


def test_bench_attention_cpu_smoke(tmp_path):
    out = tmp_path / "bench"
    code = attention.main(["--seq-lens", "24", "--q-heads", "2", "--kv-heads", "1",
                           "--head-dim", "16", "--iters", "1", "--block-q", "16",
                           "--block-kv", "16", "--no-tpu-aot", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    rows = {r["impl"]: r for r in result["device"]}
    assert set(rows) == {"pallas-tpu (interpret)", "pallas-gpu (interpret)", "xla"}
    for name in ("pallas-tpu (interpret)", "pallas-gpu (interpret)"):
        assert rows[name]["correctness_only"] and rows[name]["max_rel_error"] <= 1e-5
    assert rows["xla"]["fwd_ms"] > 0 and rows["xla"]["fwd_bwd_tflops"] > 0
    assert "correctness-only" in (out / "results.md").read_text()


def test_attention_flops_counts_the_causal_half():
    cfg = attention.BenchConfig(seq_lens=(8,), aot_seq_lens=(), batch=2, q_heads=4,
                                kv_heads=2, head_dim=16)
    full = attention.BenchConfig(**{**cfg.__dict__, "causal": False})
    assert attention.attention_flops(full, 8, False) == 4 * 2 * 4 * 8 * 8 * 16
    assert attention.attention_flops(cfg, 8, True) == 3.5 * attention.attention_flops(
        full, 8, False) / 2
