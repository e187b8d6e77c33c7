"""`chorus codec train | encode | decode | eval`."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

USAGE = """usage: chorus codec COMMAND [ARGS...]

commands:
  train   --workdir W --data DIR [--preset P] [--set KEY=VALUE ...]
          (= chorus train --experiment codec ...; e.g. --set experiment.train.flow.steps=50)
  encode  IN.wav CODES.npy --workdir W
  encode  --workdir W --split S [--data DIR]     the split as codes (a RecordCache)
  decode  CODES.npy OUT.wav --workdir W [--speaker REF.wav | --voice NAME] [--steps N]
          [--guidance W] [--vocoder neural|griffin-lim] [--stream]
  eval    --workdir W [--limit N] [--data DIR]
"""


def _train(argv: list[str]) -> int:
    from chorus.training.cli import train_main

    return train_main(["--experiment", "codec", *argv])


def _encode(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus codec encode")
    p.add_argument("wav", nargs="?", help="a WAV file (or --split for a dataset split)")
    p.add_argument("codes", nargs="?", help="where the int32 codes go (.npy)")
    p.add_argument("--workdir", required=True, help="a trained codec run")
    p.add_argument("--split", default=None, help="encode this split of the run's dataset")
    p.add_argument("--data", default=None, help="dataset directory (default: the run's)")
    a = p.parse_args(argv)
    if a.split is not None:
        if a.wav or a.codes:
            raise ValueError("--split: expected no IN.wav / CODES.npy (a split is encoded "
                             "into a RecordCache beside the dataset)")
        return _encode_split(a.workdir, a.split, a.data)
    if not (a.wav and a.codes):
        raise ValueError("encode: expected IN.wav CODES.npy, or --split S")
    from chorus import atomic
    from chorus.audio.io import load_wave
    from chorus.codec.pipeline import Codec

    codec = Codec.load(a.workdir, networks=("tokenizer",))
    wave = load_wave(a.wav, min_samples=codec.min_samples)
    codes = codec.encode(wave)
    atomic.write_npy(a.codes, codes)
    rate = codes.size / (wave.size / codec.cfg.mel.sample_rate)
    print(f"{a.codes}: {codes.size} codes ({rate:.2f} codes/s), transcript: "
          f"{codec.transcribe_codes(codes)!r}")
    return 0


def _encode_split(run_dir: str, split: str, data_dir: str | None) -> int:
    from experiments.codec.corpus_codes import corpus_codes
    from experiments.codec.evaluation import run_data_dir, run_settings

    settings = run_settings(run_dir)
    data_dir = run_data_dir(run_dir, settings, data_dir)
    cache, _ = corpus_codes(run_dir, data_dir, split, settings.dataset)
    print(f"{cache.path}: {len(cache)} records as codes ({cache.meta.producer_key})")
    return 0


def _load_codes(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: expected a .npy file of codes, got no such file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: expected a .npy array of integer codes, got: {e}") from None


def _decode(argv: list[str]) -> int:
    from chorus.audio.io import load_wave, write_wav
    from chorus.codec.pipeline import Codec

    p = argparse.ArgumentParser(prog="chorus codec decode")
    p.add_argument("codes")
    p.add_argument("wav")
    p.add_argument("--workdir", required=True)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--speaker", default=None, help="reference WAV whose voice to use")
    who.add_argument("--voice", default=None, help="a training voice name (see voices.json)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default: config)")
    p.add_argument("--guidance", type=float, default=None, help="CFG weight (default: config)")
    p.add_argument("--vocoder", choices=("neural", "griffin-lim"), default="neural")
    p.add_argument("--stream", action="store_true", help="decode chunk by chunk")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    codes = _load_codes(a.codes)
    codec = Codec.load(a.workdir)
    codes = codec.check_codes(codes, a.codes)
    speaker = a.voice
    if a.speaker:
        speaker = codec.speaker_embedding(load_wave(a.speaker, min_samples=codec.min_samples))
    if a.stream:
        if a.vocoder != "neural":
            raise ValueError("--stream: expected the neural vocoder, got --vocoder griffin-lim")
        stream = codec.stream(speaker, a.steps, a.guidance, a.seed)
        chunk = codec.cfg.streaming.chunk_codes
        parts = [stream.push(codes[i:i + chunk]) for i in range(0, codes.size, chunk)]
        wave = np.concatenate([*parts, stream.flush()])
    else:
        wave = codec.decode(codes, speaker, a.steps, a.guidance, a.seed, a.vocoder)
    write_wav(a.wav, wave, codec.cfg.mel.sample_rate)
    print(f"{a.wav}: {wave.size / codec.cfg.mel.sample_rate:.2f} s from {codes.size} codes")
    return 0


def _eval(argv: list[str]) -> int:
    from experiments.codec.evaluation import DEFAULT_LIMIT, evaluate_codec, to_markdown

    p = argparse.ArgumentParser(prog="chorus codec eval")
    p.add_argument("--workdir", required=True)
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help=f"resynthesized utterances (default {DEFAULT_LIMIT})")
    p.add_argument("--data", default=None, help="dataset directory (default: the run's)")
    a = p.parse_args(argv)
    if a.limit < 1:
        raise ValueError(f"--limit: expected a positive number, got {a.limit}")
    results = evaluate_codec(a.workdir, a.limit, a.data)
    print(to_markdown(results))
    return 0


COMMANDS = {"train": _train, "encode": _encode, "decode": _decode, "eval": _eval}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"chorus codec: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from chorus.audio.io import AudioError
    from chorus.config import ConfigError
    from data_pipelines.record_cache import CacheError

    try:
        return COMMANDS[name](rest)
    except (AudioError, ConfigError, CacheError, ValueError, FileNotFoundError) as e:
        print(f"chorus codec {name}: error: {e}", file=sys.stderr)
        return 2
