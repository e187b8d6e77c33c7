"""`chorus synthesize`: text to speech with a TTS run (experiments/tts/synthesizer.py).

    chorus synthesize --workdir W --text "turn on (softly) the light" [--instruction I]
                      [--speaker VOICE|ref.wav] [--codec RUN] [--stream] [--seed N] out.wav
    chorus synthesize --workdir W --jsonl requests.jsonl --out-dir D [--batch-size 8] ...

W is a TTS run (`chorus train --experiment tts`); the codec is `--codec RUN`, else the run's
experiment.codec_run. `--set` overrides the run's config for inference, e.g.
`--set experiment.decoding.temperature=0` (greedy) or `--set experiment.decoding.top_k=10`.
A JSONL line is an object with "text" and optionally "instruction", "speaker", "seed" and
"id" (the output name D/<id>.wav; default the line number). `--stream` detokenizes the codes
chunk by chunk while they are sampled (first_packet_ms: request to first audio sample).

One JSON line per output on stdout: path, seconds, codes, truncated (the length guard ended
it, not <tts_end>), rtf, first_packet_ms, timings. Exit codes: 0 all synthesized; 1 some
JSONL lines failed (each reported on stderr with its line number and field, the rest
synthesized); 2 bad arguments, a bad request or a bad run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys

FIELDS = ("text", "instruction", "speaker", "seed", "id")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_line(line: str, number: int):
    """(output id, SpeechRequest) of one JSONL line; RequestError naming the field."""
    from experiments.tts.synthesizer import RequestError, SpeechRequest

    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise RequestError("json", f"expected a JSON object, got {line.strip()[:60]!r} "
                                   f"({e.msg})") from None
    if not isinstance(data, dict):
        raise RequestError("json", f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field; expected some of {list(FIELDS)}")
    if "text" not in data:
        raise RequestError("text", "missing; expected the text to speak")
    out_id = data.get("id", f"{number:04d}")
    if not isinstance(out_id, str) or not _ID.match(out_id):
        raise RequestError("id", f"expected a file name of letters, digits, '.', '_', '-', "
                                 f"got {out_id!r}")
    request = SpeechRequest(text=data["text"], instruction=data.get("instruction", ""),
                            speaker=data.get("speaker"), seed=data.get("seed"))
    return out_id, request


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus synthesize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a TTS run directory")
    parser.add_argument("--text", help="what to say (inline directions allowed)")
    parser.add_argument("--instruction", default="", help="how to say it")
    parser.add_argument("--speaker", default=None,
                        help="a catalog voice name (en-gb+f3) or a reference audio file")
    parser.add_argument("--jsonl", help="batch input: one request object per line")
    parser.add_argument("--out-dir", help="where the JSONL batch's WAVs go")
    parser.add_argument("--batch-size", type=int, default=8, help="JSONL requests per batch")
    parser.add_argument("--codec", default=None, help="the codec run (default: the run's "
                                                      "experiment.codec_run)")
    parser.add_argument("--stream", action="store_true",
                        help="detokenize chunk by chunk while the codes are sampled")
    parser.add_argument("--seed", type=int, default=None, help="sampling / flow noise seed")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (latest)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override of the run's config")
    parser.add_argument("out", nargs="?", help="the output WAV (with --text)")
    args = parser.parse_args(argv)

    from chorus.audio.io import write_wav
    from chorus.config import ConfigError
    from experiments.tts.synthesizer import (
        RequestError,
        SpeechRequest,
        Synthesizer,
        check_request,
    )

    def fail(message) -> int:
        print(f"chorus synthesize: {message}", file=sys.stderr)
        return 2

    if (args.text is None) == (args.jsonl is None):
        return fail("expected exactly one of --text (one request) or --jsonl (a batch)")
    if args.text is not None and (not args.out or args.out_dir):
        return fail("--text: expected one output WAV path (and no --out-dir)")
    if args.jsonl is not None and (args.out or not args.out_dir):
        return fail("--jsonl: expected --out-dir D (and no output path)")
    if args.batch_size < 1:
        return fail(f"--batch-size: expected an int >= 1, got {args.batch_size}")
    if args.seed is not None and args.seed < 0:
        return fail(f"--seed: expected an int >= 0, got {args.seed}")

    # Requests are checked before any model is loaded: a bad one costs no checkpoint read.
    jobs, failed = [], 0  # (label, output path, request)
    if args.text is not None:
        request = SpeechRequest(args.text, args.instruction, args.speaker)
        try:
            check_request(request)
        except RequestError as e:
            return fail(e)
        jobs.append(("--text", args.out, request))
    else:
        try:
            with open(args.jsonl, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError as e:
            return fail(f"--jsonl: {args.jsonl}: {e.strerror or e}")
        seen = set()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out_id, request = parse_line(line, number)
                check_request(request)
                if out_id in seen:
                    raise RequestError("id", f"{out_id!r} repeats an earlier line's")
            except RequestError as e:
                print(f"chorus synthesize: {args.jsonl}:{number}: {e}", file=sys.stderr)
                failed += 1
                continue
            seen.add(out_id)
            jobs.append((f"{args.jsonl}:{number}", os.path.join(args.out_dir, out_id + ".wav"),
                         request))
        if not jobs:
            return fail(f"--jsonl: {args.jsonl}: no valid request ({failed} failed)")
        os.makedirs(args.out_dir, exist_ok=True)

    try:
        synth = Synthesizer.load(args.workdir, args.codec, args.overrides, args.step)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return fail(e)
    if args.seed is not None:
        synth.decoding = dataclasses.replace(synth.decoding, seed=args.seed)

    prepared = []
    for label, path, request in jobs:
        try:
            prepared.append((label, path, synth.prepare(request)))
        except RequestError as e:
            if args.text is not None:
                return fail(e)
            print(f"chorus synthesize: {label}: {e}", file=sys.stderr)
            failed += 1

    for i in range(0, len(prepared), args.batch_size):
        batch = prepared[i:i + args.batch_size]
        items = [p for _, _, p in batch]
        if args.stream:
            stream = synth.stream(items)
            for _ in stream:  # packets as they come; the WAV is written when a batch ends
                pass
            results = stream.results
        else:
            results = synth.synthesize(items)
        for (label, path, _), result in zip(batch, results, strict=True):
            write_wav(path, result.wave)
            t = result.timings
            print(json.dumps({
                "path": path, "input": label, "seconds": round(result.seconds, 3),
                "codes": int(result.codes.size), "truncated": result.truncated,
                "rtf": round(t.rtf, 4), "first_packet_ms": None if t.first_packet_ms is None
                else round(t.first_packet_ms, 1),
                "timings": {k: round(v, 5) for k, v in dataclasses.asdict(t).items()
                            if v is not None}}), flush=True)
    return 1 if failed else 0
