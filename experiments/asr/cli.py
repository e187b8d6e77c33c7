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
    from chorus.audio.resample import SAMPLE_RATE
    from chorus.config import ConfigError, apply_overrides
    from chorus.training.restore import resolve_run_dir
    from chorus.training.run_config import read_run_config
    from chorus.vocab import MEL_FRAMES_PER_SECOND
    from experiments.asr.transcriber import load_transcriber, timed

    def fail(message) -> int:
        print(f"chorus transcribe: {message}", file=sys.stderr)
        return 2

    # The files are checked against the run's config first: no checkpoint is read for a bad one.
    try:
        config = apply_overrides(read_run_config(resolve_run_dir(args.workdir)), args.overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return fail(e)
    max_frames = config.train.max_mel_frames
    clips = []
    for path in args.files:
        try:
            wave = load_wave(path)
        except AudioError as e:
            return fail(e)
        frames = log_mel(wave)
        if frames.shape[0] > max_frames:
            return fail(f"{path}: {frames.shape[0] / MEL_FRAMES_PER_SECOND:.1f} s of audio; "
                        f"this model takes at most {max_frames / MEL_FRAMES_PER_SECOND:.1f} s "
                        f"(train.max_mel_frames)")
        clips.append((path, len(wave) / SAMPLE_RATE, frames))
    try:
        transcriber, run = load_transcriber(args.workdir, args.overrides, args.step)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return fail(e)
    mode = "greedy" if args.greedy else "verified"
    for path, audio_seconds, frames in clips:
        request = transcriber.request(frames)
        result, seconds = timed(lambda r=request: transcriber.decode(r, mode))
        print(json.dumps({"file": path, "text": transcriber.texts(result)[0], "step": run.step,
                          "audio_seconds": audio_seconds, "decode_seconds": seconds}))
    return 0
