"""`chorus transcribe --workdir W FILE...`: audio files in any format libsndfile reads, at any
rate, through the one reader (chorus.audio.io); one JSON line per file.

W is an ASR run (`chorus train --experiment asr`) or an RL run of one (`chorus rl
--experiment asr`); only W is read (params, config, assets/tokenizer.model). `--set` overrides
the run's config for inference, e.g. `--set mesh.data=1` or `--set decode.max_new_tokens=96`.
Exit codes: 0 all transcribed; 2 bad arguments, an unreadable or too long file, or a bad run.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

SAMPLE_RATE = 16_000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus transcribe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="an ASR (or ASR RL) run directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (latest)")
    parser.add_argument("--greedy", action="store_true", help="plain greedy decoding")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override of the run's config")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    from chorus.audio.io import AudioError, load_wave
    from chorus.audio.mel import log_mel
    from chorus.config import ConfigError
    from experiments.asr.regime import asr_prompt
    from experiments.asr.transcriber import load_transcriber, pad_requests, timed

    try:
        transcriber, run = load_transcriber(args.workdir, args.overrides, args.step)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"chorus transcribe: {e}", file=sys.stderr)
        return 2
    layout = transcriber.layout
    max_frames = transcriber.config.train.max_mel_frames
    waves = []
    for path in args.files:
        try:
            wave = load_wave(path)
        except AudioError as e:
            print(f"chorus transcribe: {e}", file=sys.stderr)
            return 2
        frames = log_mel(wave)
        if frames.shape[0] > max_frames:
            print(f"chorus transcribe: {path}: {frames.shape[0] / 100:.1f} s of audio; this "
                  f"model takes at most {max_frames / 100:.1f} s (train.max_mel_frames)",
                  file=sys.stderr)
            return 2
        waves.append((path, wave, frames))
    mode = "greedy" if args.greedy else "verified"
    for path, wave, frames in waves:
        example = {"prompt_tokens": asr_prompt(layout, frames.shape[0]),
                   "audio_features": frames, "audio_mask": np.ones(frames.shape[0], bool)}
        request = pad_requests([example], layout, max_frames)
        result, seconds = timed(lambda r=request: transcriber.decode(r, mode))
        print(json.dumps({"file": path, "text": transcriber.texts(result)[0], "step": run.step,
                          "audio_seconds": len(wave) / SAMPLE_RATE,
                          "decode_seconds": seconds}))
    return 0
