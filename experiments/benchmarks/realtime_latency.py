"""`chorus bench realtime-latency`: end of user speech -> first audio sample out, per turn.

    chorus bench realtime-latency [--workdir RUN --codec CODEC_RUN] [--questions 8] --out DIR

Held-out questions (eSpeak: the corpus's persona questions, in voices and phrasings drawn
with a seed of its own) of two lengths, ~1 s and ~10 s (several questions joined, padded with
silence to the length), each streamed into a fresh `experiments.realtime.Session` in 80 ms
chunks; end of speech is the explicit end of the turn. Reports p50 / p95 of first_audio_ms
per length and overall, the break-down (encoder tail, prefill, text decode, first code
chunk, detokenizer; medians) and the ratio of the 10 s to the 1 s p50: the session does only
the tail at end of speech, so it must stay near 1 (the issue's bound: 1.2).

Without --workdir the backbone is the cpu-tiny preset (audio.chunk_size=4) with random
parameters and the codec a default-size codec with random parameters: the figures are then
the machinery's cost (compute of the tail, decode steps, the detokenizer's first chunk), not
a trained model's behaviour (its text length and when it starts speaking). The answer
grammar is the session's; --max-text-tokens caps the inner monologue (random models never
choose <tts_start> themselves, so the cap decides when speech starts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

LENGTHS = (1.0, 10.0)
PARTS = ("encoder_tail_ms", "prefill_ms", "text_decode_ms", "first_code_chunk_ms",
         "detokenizer_ms")


def questions(count: int, seconds: float, seed: int) -> list[np.ndarray]:
    """`count` eSpeak question clips of exactly `seconds` (speech, then silence)."""
    from data_pipelines.personas import QUESTIONS
    from data_pipelines.synthesis import synthesize
    from data_pipelines.voices import VOICES

    rng = np.random.default_rng(seed)
    texts = [q for qs in QUESTIONS.values() for q in qs]
    voices = [v.name for v in VOICES]
    n, out = int(seconds * 16000), []
    for _ in range(count):
        pieces, total = [], 0
        while True:
            wave, _ = synthesize(texts[int(rng.integers(len(texts)))],
                                 voice=voices[int(rng.integers(len(voices)))])
            if pieces and total + wave.size > n:
                break
            pieces.append(wave)
            total += wave.size
            if total >= n:
                break
        clip = np.concatenate(pieces)[:n]
        out.append(np.pad(clip, (0, n - clip.size)).astype(np.float32))
    return out


def random_parts(seed: int = 0):
    """(model, params, tokenizer, codec): cpu-tiny with random parameters + a random codec."""
    import jax

    from chorus.codec.config import CodecConfig
    from chorus.codec.models import NETWORKS, CodecModels, init_params
    from chorus.codec.pipeline import Codec
    from chorus.config import load_config
    from chorus.model.factory import init_params as init_backbone

    config = load_config("cpu-tiny", ["audio.chunk_size=4"])
    model, params, _ = init_backbone(config, jax.random.key(seed))
    cfg = CodecConfig.from_experiment({})
    models = CodecModels.build(cfg)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(NETWORKS))
    codec_params = {name: init_params(models, cfg, name, k)
                    for name, k in zip(NETWORKS, keys, strict=True)}
    voice = np.random.default_rng(seed).standard_normal(cfg.speaker.embed_dim)
    codec = Codec(cfg, codec_params, {"voice0": (voice / np.linalg.norm(voice)).astype(
        np.float32)})
    return model, params, _ByteTokenizer(config.model.text_vocab_size), codec


class _ByteTokenizer:
    """Text <-> ids for a model without a tokenizer asset (random init): bytes mod vocab."""

    def __init__(self, size: int):
        self.size = size

    def encode(self, text: str) -> list[int]:
        return [b % self.size for b in text.encode()]

    def decode(self, ids) -> str:
        return bytes(int(i) % 256 for i in ids).decode(errors="replace")


def run_turn(session, wave: np.ndarray):
    for i in range(0, wave.size, 1280):
        session.push_audio(wave[i:i + 1280])
    session.end_turn()
    return [e for e in session.respond()][-1].turn


def _stats(rows: list[dict]) -> dict:
    first = np.asarray([r["first_audio_ms"] for r in rows])
    return {"turns": len(rows), "first_audio_ms_p50": float(np.percentile(first, 50)),
            "first_audio_ms_p95": float(np.percentile(first, 95)),
            **{f"{p}_p50": float(np.median([r[p] for r in rows])) for p in PARTS}}


def markdown(report: dict) -> str:
    lines = ["# Realtime latency: end of user speech -> first audio sample", "",
             f"model: {report['model']}; codec: {report['codec']}", "",
             "| questions | turns | p50 ms | p95 ms | encoder tail | prefill | text decode | "
             "first code chunk | detokenizer |", "|---|---|---|---|---|---|---|---|---|"]
    for name, s in report["by_length"].items():
        lines.append(f"| {name} | {s['turns']} | {s['first_audio_ms_p50']:.1f} | "
                     f"{s['first_audio_ms_p95']:.1f} | "
                     + " | ".join(f"{s[p + '_p50']:.1f}" for p in PARTS) + " |")
    s = report["overall"]
    lines.append(f"| all | {s['turns']} | {s['first_audio_ms_p50']:.1f} | "
                 f"{s['first_audio_ms_p95']:.1f} | "
                 + " | ".join(f"{s[p + '_p50']:.1f}" for p in PARTS) + " |")
    lines += ["", f"10 s / 1 s p50 ratio: {report['ratio_10s_vs_1s']:.3f} (bound 1.2)",
              "", "Break-down columns are medians (ms). " + report["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus bench realtime-latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=None, help="a run (default: cpu-tiny, random init)")
    p.add_argument("--codec", default=None, help="its codec run (default: a random codec)")
    p.add_argument("--questions", type=int, default=8, help="held-out questions per length")
    p.add_argument("--max-text-tokens", type=int, default=16)
    p.add_argument("--max-codes", type=int, default=50)
    p.add_argument("--seed", type=int, default=1234, help="the held-out draw")
    p.add_argument("--out", default="runs/bench", help="folder for the JSON + markdown")
    args = p.parse_args(argv)
    if args.questions < 1:
        p.error(f"--questions: expected >= 1, got {args.questions}")

    from chorus.atomic import write_json, write_text
    from experiments.realtime.session import Session, SessionConfig

    start = time.perf_counter()
    if args.workdir:
        from experiments.realtime.cli import load_parts

        model, params, tokenizer, codec = load_parts(args.workdir, args.codec,
                                                     ["audio.chunk_size=4"])
        names = (args.workdir, args.codec or "the run's experiment.codec_run")
        note = "Trained run."
    else:
        model, params, tokenizer, codec = random_parts()
        names = ("cpu-tiny, random init (audio.chunk_size=4)", "default size, random init")
        note = ("Random-init backbone and codec: the figures are the machinery's, not a "
                "trained model's.")
    config = SessionConfig(max_turn_seconds=max(LENGTHS) + 1,
                           max_text_tokens=args.max_text_tokens, max_codes=args.max_codes)
    card = "name: Ada. age: 34. home: Oslo. job: baker. likes: chess and rain. style: terse."
    clips = {s: questions(args.questions, s, args.seed + int(s)) for s in LENGTHS}

    def fresh():
        return Session(model, params, tokenizer, codec, card, None, config)

    for s in LENGTHS:  # warm-up: compile every program once
        run_turn(fresh(), clips[s][0])
    rows = {s: [] for s in LENGTHS}
    for i in range(args.questions):  # interleaved, so drift on a shared host hits both
        for s in LENGTHS:
            turn = run_turn(fresh(), clips[s][i])
            rows[s].append({"speech_s": s, **dataclasses.asdict(turn.latency),
                            "codes": int(turn.codes.size)})
    by_length = {f"{s:g} s": _stats(rows[s]) for s in LENGTHS}
    report = {"model": names[0], "codec": names[1], "note": note,
              "settings": dataclasses.asdict(config) | {"vad": None},
              "by_length": by_length, "overall": _stats(rows[1.0] + rows[10.0]),
              "ratio_10s_vs_1s": by_length["10 s"]["first_audio_ms_p50"]
              / by_length["1 s"]["first_audio_ms_p50"],
              "turns": [r for s in LENGTHS for r in rows[s]],
              "seconds": time.perf_counter() - start}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "realtime_latency.json"), report)
    write_text(os.path.join(args.out, "realtime_latency.md"), markdown(report))
    print(json.dumps({k: report[k] for k in ("ratio_10s_vs_1s", "overall", "seconds")}))
    return 0
