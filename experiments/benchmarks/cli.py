"""`chorus bench NAME [ARGS...]`: dispatches to the benchmark modules, imported lazily.

    chorus bench attention   flash attention kernels vs the XLA reference
    chorus bench data        data pipeline throughput
    chorus bench train       train-step throughput, trainer overhead, data wait
    chorus bench decoding    greedy vs verified multi-token decoding on a trained toy
    chorus bench verify-cost  the cost of one verify step with k = 0..K drafts (a trained ASR run)
    chorus bench tts-controls  TTS control measurements vs the corpus' eSpeak ground truth
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    "attention": ("experiments.benchmarks.attention", "flash attention vs the XLA reference"),
    "data": ("experiments.benchmarks.data_throughput", "data pipeline throughput"),
    "train": ("experiments.benchmarks.train_step", "train-step throughput and overhead"),
    "decoding": ("experiments.benchmarks.decoding",
                 "greedy vs verified multi-token decoding on a trained toy"),
    "verify-cost": ("experiments.benchmarks.verify_cost",
                    "one verify step's cost with k = 0..K drafts of a trained ASR run"),
    "tts-controls": ("experiments.benchmarks.tts_controls",
                     "TTS control measurements vs the corpus' eSpeak ground truth"),
    "realtime-latency": ("experiments.benchmarks.realtime_latency",
                         "end of speech -> first audio sample: p50/p95, break-down, 1 vs 10 s"),
}


def _usage() -> str:
    lines = ["usage: chorus bench NAME [ARGS...]", "", "benchmarks:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"chorus bench: unknown benchmark {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    return int(module.main(rest) or 0)
