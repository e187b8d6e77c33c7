"""`chorus chat`: a spoken conversation with a run, one question WAV per turn.

    chorus chat --workdir runs/realtime --persona card.json [--codec runs/codec] \
        q1.wav [q2.wav ...] --out DIR [--vad] [--set audio.chunk_size=4]

Each question is streamed into the session in 80 ms chunks as a microphone would deliver it;
its end is the end of speech (or, with --vad, the VAD's; the file's end if the VAD heard
none). Writes DIR/turn_<k>.wav (the spoken answer), DIR/turn_<k>.txt (its text) and
DIR/latencies.json (per turn: end of speech -> first audio sample and its break-down). The
first question is answered once by a throwaway session before the conversation starts, so the
latencies are the model's, not XLA's first compiles (--no-warmup: keep them in turn 0).
The run's backbone must speak text then <tts_start> codes, with a chunked-causal encoder
(audio.chunk_size > 0; --set it for a run trained otherwise: it changes masks, not params).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys


def load_parts(workdir: str, codec_run: str | None, overrides=()):
    """(model, params, tokenizer, codec) of a run directory and its codec run."""
    import jax

    from chorus.codec.pipeline import Codec
    from chorus.model.unified import UnifiedAudioLM
    from chorus.training.restore import asset_path, load_run
    from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer

    run = load_run(workdir, overrides, devices=jax.local_devices()[:1])
    codec_dir = codec_run or run.config.experiment.get("codec_run")
    if not codec_dir:
        raise ValueError(f"--codec: {run.workdir}/config.json names no codec run "
                         f"(experiment.codec_run is empty); pass the codec run directory")
    tokenizer = TextTokenizer.from_file(asset_path(run.workdir, TOKENIZER_FILENAME))
    return (UnifiedAudioLM(run.config), run.params["backbone"], tokenizer,
            Codec.load(os.path.expanduser(codec_dir)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the run directory")
    parser.add_argument("--persona", required=True, help="the persona card (JSON)")
    parser.add_argument("--codec", default=None, help="the codec run (default: the run's "
                                                      "experiment.codec_run)")
    parser.add_argument("--out", required=True, help="where the answers go")
    parser.add_argument("--vad", action="store_true", help="end turns by voice activity")
    parser.add_argument("--max-codes", type=int, default=250, help="answer length cap (codes)")
    parser.add_argument("--max-text-tokens", type=int, default=64, help="text cap")
    parser.add_argument("--no-warmup", action="store_true",
                        help="no throwaway first turn: turn 0's latency includes compiling")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override of the run's config")
    parser.add_argument("questions", nargs="+", help="question WAVs, one per turn")
    args = parser.parse_args(argv)

    from chorus.audio.io import AudioError, load_wave, write_wav
    from chorus.audio.vad import VadConfig
    from chorus.config import ConfigError
    from experiments.realtime.persona import PersonaCard, PersonaError
    from experiments.realtime.session import Session, SessionConfig, play

    def fail(message) -> int:
        print(f"chorus chat: {message}", file=sys.stderr)
        return 2

    # Inputs are checked before any model is loaded: a bad one costs no checkpoint read.
    try:
        card = PersonaCard.load(args.persona)
        waves = [load_wave(q, min_samples=160) for q in args.questions]
        config = SessionConfig(max_turn_seconds=max(20.0, max(w.size for w in waves) / 16000),
                               max_text_tokens=args.max_text_tokens, max_codes=args.max_codes,
                               vad=VadConfig() if args.vad else None)
    except (PersonaError, AudioError, ValueError) as e:
        return fail(e)
    try:
        model, params, tokenizer, codec = load_parts(args.workdir, args.codec, args.overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return fail(e)
    if card.voice not in codec.voices:
        return fail(f"{args.persona}: voice: expected one of the codec's voices "
                    f"{sorted(codec.voices)}, got {card.voice!r}")
    def new_session():
        return Session(model, params, tokenizer, codec, card.text(), card.voice, config)

    session = None
    try:
        session = new_session()
        if not args.no_warmup:
            play(new_session(), waves[0])
    except ValueError as e:  # a context too small for the card and one turn; a silent file
        return fail(e if session is None else f"{args.questions[0]}: {e}")
    os.makedirs(args.out, exist_ok=True)
    latencies = []
    for k, (path, wave) in enumerate(zip(args.questions, waves, strict=True)):
        try:
            turn = play(session, wave)
        except ValueError as e:  # e.g. the VAD heard no speech in the file
            return fail(f"{path}: {e}")
        write_wav(os.path.join(args.out, f"turn_{k}.wav"), turn.wave)
        with open(os.path.join(args.out, f"turn_{k}.txt"), "w", encoding="utf-8") as f:
            f.write(turn.text + "\n")
        latencies.append({"turn": k, "question": path, "answer_seconds": turn.wave.size / 16000,
                          "codes": int(turn.codes.size), "text_tokens": int(turn.text_ids.size),
                          **dataclasses.asdict(turn.latency)})
        print(f"turn {k}: {turn.latency.first_audio_ms:.1f} ms to first audio, "
              f"{turn.wave.size / 16000:.2f} s answer: {turn.text!r}")
    with open(os.path.join(args.out, "latencies.json"), "w") as f:
        json.dump({"turns": latencies, "evicted_turns": session.evicted,
                   "warmup": not args.no_warmup}, f, indent=2)
    return 0
