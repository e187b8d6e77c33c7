"""Greedy vs verified decoding on the trained toy: acceptance and wall-clock, side by side.

    chorus bench decoding [--steps 100] [--max-new 64] [--repeats 5] [--constrained]
                          [--json out.json]

Trains the toy backbone with sequential and parallel MTP heads (`mtp_toy` beside this
module), checks that verified greedy output equals greedy output, and times each decoder
after compilation
(best of `--repeats` round-robin runs) at batch 1 and 8, greedy and with sampling
(speculative sampling vs autoregressive sampling, the same loop with k = 0). With
`--constrained`, every decoder runs under the constraints of `CONSTRAINED` (a few symbols
disallowed, a windowed repetition penalty: the drafts' learnt successor rule breaks where
it would repeat). Numbers are for whatever backend JAX runs on.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from chorus.atomic import write_json
from chorus.config import Config, DecodeConfig, apply_overrides
from chorus.decoding.verified import decode_stats, greedy_decode, verified_decode
from chorus.model.heads import MTPConfig
from chorus.vocab import VocabLayout
from experiments.benchmarks.mtp_toy import TOY_CONFIG, ToyTask, train_toy

# --constrained: the symbols disallowed, the repetition penalty and its window (tokens).
CONSTRAINED = {"disallowed": (3, 11, 17), "repetition_penalty": 3.0, "repetition_window": 24}


def toy_allowed_ids(task: ToyTask, config: Config,
                    disallowed=CONSTRAINED["disallowed"]) -> np.ndarray:
    """The toy's symbols (and eos) minus `disallowed` (symbol indices): a bool mask [V]."""
    layout = VocabLayout.from_model_config(config.model)
    allowed = np.zeros(layout.size, bool)
    allowed[task.first_id:task.first_id + task.num_symbols] = True
    allowed[[task.first_id + d for d in disallowed]] = False
    allowed[layout.eos_id] = True
    return allowed


def _best_times(fns: dict, repeats: int) -> dict[str, float]:
    """Best wall-clock per decoder, timed round-robin so load changes hit all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run(steps: int, max_new: int, repeats: int, num_draft: int, temperature: float,
        num_layers: int = TOY_CONFIG.model.num_layers, batches=(1, 8),
        constrained: bool = False) -> list[dict]:
    task = ToyTask()
    designs = ("sequential", "parallel")
    config = apply_overrides(TOY_CONFIG, {"model.num_layers": num_layers})
    model, params, head_sets, _ = train_toy(
        config, tuple(MTPConfig(d, num_draft) for d in designs), task, steps=steps)
    allowed = toy_allowed_ids(task, config) if constrained else None
    penalty = ({k: CONSTRAINED[k] for k in ("repetition_penalty", "repetition_window")}
               if constrained else {})
    rows = []
    for batch, temp in [(b, t) for t in (0.0, temperature) for b in batches]:
        prompts, lengths = task.prompts(np.random.default_rng(batch), batch, 10, num_draft)
        settings = DecodeConfig(max_new_tokens=max_new, num_draft_tokens=num_draft,
                                temperature=temp, **penalty)
        plain = dataclasses.replace(settings, num_draft_tokens=0)
        rng = jax.random.key(0)
        decode = lambda heads, hp, s: verified_decode(model, params, heads, hp, prompts, lengths,
                                                      s, stop_tokens=(), rng=rng,
                                                      allowed_ids=allowed)
        mode = ("greedy" if temp == 0 else f"sampling T={temp:g}") + (
            " constrained" if constrained else "")
        decoders = {f"{mode}: autoregressive": lambda: decode(None, None, plain)}
        for design, (heads, hp) in zip(designs, head_sets, strict=True):
            decoders[f"{mode}: verified {design}"] = (
                lambda heads=heads, hp=hp: decode(heads, hp, settings))
        reference = greedy_decode(model, params, prompts, lengths, max_new_tokens=max_new,
                                  stop_tokens=(), allowed_ids=allowed, **penalty).tokens
        times = _best_times(decoders, repeats)
        base_time = None
        for name, fn in decoders.items():
            result = fn()
            if temp == 0 and not np.array_equal(result.tokens, reference):
                raise AssertionError(f"{name} output differs from greedy at batch {batch}")
            seconds = times[name]
            base_time = base_time or seconds
            tokens = int(np.sum(result.lengths))
            rows.append({"batch": batch, "decoder": name, "ms": 1e3 * seconds,
                         "tokens_per_s": tokens / seconds, "speedup": base_time / seconds,
                         **decode_stats(result)})
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["| batch | decoder | ms / call | tokens/s | speedup | tokens / step | "
             "forwards / token |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['decoder']} | {r['ms']:.1f} | "
                     f"{r['tokens_per_s']:.0f} | {r['speedup']:.2f}x | "
                     f"{r['tokens_per_step']:.2f} | {r['forwards_per_token']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="toy training steps")
    parser.add_argument("--max-new", type=int, default=64, help="tokens per row")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (best is kept)")
    parser.add_argument("--num-draft", type=int, default=3, help="k: MTP heads / drafts")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="temperature of the sampling rows (speculative sampling)")
    parser.add_argument("--layers", type=int, default=TOY_CONFIG.model.num_layers,
                        help="backbone layers (the MTP blocks' relative cost shrinks with it)")
    parser.add_argument("--constrained", action="store_true",
                        help=f"decode under constraints: symbols {CONSTRAINED['disallowed']} "
                             f"disallowed, repetition penalty "
                             f"{CONSTRAINED['repetition_penalty']:g} over the last "
                             f"{CONSTRAINED['repetition_window']} tokens")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.steps, args.max_new, args.repeats, args.num_draft, args.temperature,
               args.layers, constrained=args.constrained)
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"backbone layers: {args.layers}")
    print(to_markdown(rows))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    main()
