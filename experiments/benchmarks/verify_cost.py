"""What one verify step costs: verified decoding with k = 0..K drafts of a trained ASR run.

    chorus bench verify-cost --workdir RUN [--split test] [--utterances 24] [--repeats 7]
                             [--json out.json]

On the same clips of `--split`, one per request (batch 1), for each number of drafts k of the
run's K MTP heads (k = 0 is greedy decoding, the same loop without a drafter): accepted tokens
per verify step and the decode phase's wall-clock and CPU time per step, with the shared
encoder + prompt prefill pass timed alone and subtracted. Passes run round-robin over the
decoders, the best of `--repeats` counts. CPU time (`time.process_time`, every thread of the
process: XLA:CPU runs one program on all cores, so on a quiet machine it exceeds wall-clock) is
less disturbed than wall-clock when other jobs share the machine. Every k's output is
checked token-identical to greedy's. A step's cost relative to a greedy step, beside the
tokens it commits, says whether verification can pay: the decode phase speeds up by
tokens-per-step / cost-ratio.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from chorus.atomic import write_json
from chorus.decoding.verified import decode_stats


def _decode_all(transcriber, mode: str, requests: list[dict]) -> list:
    results = [transcriber.decode(r, mode=mode) for r in requests]
    jax.block_until_ready([r.tokens for r in results])
    return results


def measure(transcriber, requests: list[dict], repeats: int) -> list[dict]:
    """One row per k (0..K): tokens/step, wall and CPU ms per decode step, ratios to k = 0."""
    num_heads = transcriber.settings.num_draft_tokens
    if num_heads == 0:
        raise ValueError("the run has no MTP heads (experiment.mtp): nothing to verify")
    decoders = {"prefill": (transcriber, "prefill")}
    decoders |= {k: (transcriber.with_decode(num_draft_tokens=k), "verified")
                 for k in range(num_heads + 1)}
    outputs = {name: _decode_all(t, mode, requests)  # compiles, and the figures to check
               for name, (t, mode) in decoders.items()}
    wall, cpu = dict.fromkeys(decoders, float("inf")), dict.fromkeys(decoders, float("inf"))
    for _ in range(repeats):
        for name, (t, mode) in decoders.items():
            w, c = time.perf_counter(), time.process_time()
            _decode_all(t, mode, requests)
            wall[name] = min(wall[name], time.perf_counter() - w)
            cpu[name] = min(cpu[name], time.process_time() - c)
    # The decode phase of each k: its pass minus the shared encoder + prefill pass.
    decode = {clock: {k: max(times[k] - times["prefill"], 1e-9) for k in range(num_heads + 1)}
              for clock, times in (("wall", wall), ("cpu", cpu))}
    greedy_tokens = [np.asarray(r.tokens) for r in outputs[0]]
    rows = []
    for k in range(num_heads + 1):
        results = outputs[k]
        steps = [max(int(np.sum(r.num_forwards)), 1) for r in results]
        row = {"k": k,
               "tokens_per_step": float(np.average(
                   [decode_stats(r)["tokens_per_step"] for r in results], weights=steps)),
               "decode_steps": sum(steps),
               "identical_to_greedy": all(np.array_equal(np.asarray(r.tokens), g)
                                          for r, g in zip(results, greedy_tokens, strict=True))}
        for clock, phase in decode.items():
            row[f"{clock}_ms_per_step"] = 1e3 * phase[k] / sum(steps)
            row[f"{clock}_decode_phase_speedup"] = phase[0] / phase[k]
        rows.append(row)
    for row in rows:
        for clock in decode:
            row[f"{clock}_step_cost_vs_greedy"] = (row[f"{clock}_ms_per_step"]
                                                   / rows[0][f"{clock}_ms_per_step"])
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| drafts k | tokens / step | ms per step wall / CPU | step cost vs greedy wall / "
             "CPU | decode-phase speedup wall / CPU | = greedy |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        same = "yes" if r["identical_to_greedy"] else "NO"
        lines.append(
            f"| {r['k']} | {r['tokens_per_step']:.2f} | {r['wall_ms_per_step']:.3f} / "
            f"{r['cpu_ms_per_step']:.3f} | {r['wall_step_cost_vs_greedy']:.2f} / "
            f"{r['cpu_step_cost_vs_greedy']:.2f} | {r['wall_decode_phase_speedup']:.2f}x / "
            f"{r['cpu_decode_phase_speedup']:.2f}x | {same} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a trained ASR run with MTP heads")
    parser.add_argument("--split", default="test", help="the corpus split the clips come from")
    parser.add_argument("--utterances", type=int, default=24, help="clips, one per request")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes (best is kept)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.utterances < 1 or args.repeats < 1:
        parser.error(f"--utterances and --repeats: expected >= 1, got {args.utterances} and "
                     f"{args.repeats}")
    from experiments.asr.regime import eval_examples
    from experiments.asr.settings import asr_settings
    from experiments.asr.transcriber import load_transcriber, pad_requests

    transcriber, run = load_transcriber(args.workdir)
    examples = eval_examples(run.config, asr_settings(run.config), args.split, args.utterances)
    requests = [pad_requests([ex], transcriber.layout, transcriber.max_frames)
                for ex in examples]
    rows = measure(transcriber, requests, args.repeats)
    print(f"verified decoding cost per step, {len(requests)} clips of {args.split!r} at batch 1, "
          f"best of {args.repeats} ({args.workdir})")
    print(to_markdown(rows))
    if args.json:
        write_json(args.json, {"workdir": args.workdir, "split": args.split,
                               "utterances": len(requests), "repeats": args.repeats,
                               "rows": rows})
    return 0 if all(r["identical_to_greedy"] for r in rows) else 1
