"""`chorus transcribe --workdir W FILE...`: audio files in any format libsndfile reads, at any
rate and length, through the one reader (chorus.audio.io; several channels are averaged).

W is an ASR run (`chorus train --experiment asr`) or an RL run of one (`chorus rl
--experiment asr`); only W is read (params, config, assets/tokenizer.model). `--set` overrides
the run's config for inference, e.g. `--set mesh.data=1` or `--set decode.max_new_tokens=96`.

Audio longer than the model's window (train.max_mel_frames) is cut into windows at pauses
(voice activity, chorus.audio.vad), and where speech runs on without one, into
windows overlapping by `--overlap` seconds whose transcripts are stitched
(experiments/asr/longform.py); the windows of all files are decoded together, `--batch-size`
at a time.

Output (`--format`): json (default) one JSON line per file {file, text, step, audio_seconds,
decode_seconds, windows, segments: [{start, end, text}]} (segment times: each window's kept
span; with `--words` also words: [{word, start, end}] by CTC forced alignment); text: the
transcript (with more than one file, `FILE<TAB>text`); srt: subtitles. Records come out in
the order of the files given.
`--out DIR` writes DIR/<stem>.json|.txt|.srt per file instead (atomically) and prints the
paths. A file that cannot be read (missing, not audio, empty) is reported on stderr and
skipped; the others are transcribed.

`--mode`: joint (the default for a run with a CTC head, see below), verified (multi-token
drafts verified by the backbone, output identical to greedy; the default without a CTC head),
greedy, beam (width `--set decode.beam_width=W`, the default when W > 1 without a CTC head;
`decode.length_penalty=A`), ctc (the CTC head's best path: encoder + adaptor + one
linear layer, no decoder), rescore (joint CTC/attention rescoring of the greedy transcript
and the CTC prefix beam's best, `decode.rescore_beam`, weighted by `decode.rescore_weight`),
joint (joint CTC/attention decoding: every step's `decode.joint_candidates` best decoder ids
and the clip's `decode.joint_ctc_candidates` ids the CTC head fires most, ranked by the
decoder's and the CTC head's prefix scores, `decode.joint_weight`; verified
with the MTP heads, so token-identical to one token per step under the same scores),
joint_greedy (that, one token per step), or joint_beam (beam search of width
`decode.beam_width` over the joint scores; the default when W > 1 for a run with a CTC
head).
No speech, no words: a file in which the run's speech gate (experiment.speech_gate,
chorus.audio.speech_gate; on by default) finds no speech — silence, noise, a click — gives
an empty transcript without decoding, and its record says `"speech": false` and why
(`no_speech_reason`; `step` is null: no checkpoint was read for it).

Exit codes: 0 every file transcribed; 1 some files could not be read (the rest were
transcribed); 2 bad arguments or a bad run (nothing transcribed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

FORMATS = {"json": ".json", "text": ".txt", "srt": ".srt"}


def record_of(path: str, transcript, step: int, audio_seconds: float) -> dict:
    """The JSON record of one file's transcript."""
    return {"file": path, "text": transcript.text, "step": step,
            "audio_seconds": audio_seconds, "decode_seconds": transcript.decode_seconds,
            "windows": len(transcript.windows),
            "segments": [{"start": s.start, "end": s.end, "text": s.text}
                         for s in transcript.segments]}


def render(record: dict, fmt: str, with_path: bool) -> str:
    """A record in `fmt`; SRT cues follow record["words"] when present, else the segments."""
    from experiments.asr.subtitles import Cue, cues_from_segments, cues_from_words, to_srt

    if fmt == "json":
        return json.dumps(record) + "\n"
    if fmt == "text":
        return (f"{record['file']}\t" if with_path else "") + record["text"] + "\n"
    if record.get("words"):
        cues: list[Cue] = cues_from_words(record["words"])
    else:
        cues = cues_from_segments([(s["start"], s["end"], s["text"])
                                   for s in record["segments"]])
    return to_srt(cues)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chorus transcribe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="an ASR (or ASR RL) run directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (latest)")
    parser.add_argument("--mode", choices=("verified", "greedy", "beam", "ctc", "rescore",
                                           "joint", "joint_greedy", "joint_beam"),
                        default=None, help="decoder (default with a CTC head: joint, or "
                        "joint_beam when decode.beam_width > 1; without: verified, or beam)")
    parser.add_argument("--greedy", action="store_true", help="the same as --mode greedy")
    parser.add_argument("--format", choices=list(FORMATS), default="json",
                        help="json lines (default), plain text, or SRT subtitles")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="windows decoded per call (all files' windows together)")
    parser.add_argument("--overlap", type=float, default=1.0, metavar="SECONDS",
                        help="least overlap of consecutive windows of long audio (1.0)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write DIR/<stem>.<ext> per file instead of stdout")
    parser.add_argument("--words", action="store_true",
                        help="word timestamps (CTC forced alignment of the transcript; needs "
                        "the run's CTC head); SRT cues then follow the words")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override of the run's config")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    from chorus.atomic import write_text
    from chorus.audio.io import AudioError, load_wave
    from chorus.audio.mel import HOP_LENGTH, log_mel
    from chorus.audio.resample import SAMPLE_RATE
    from chorus.config import ConfigError, apply_overrides
    from chorus.training.restore import resolve_run_dir
    from chorus.training.run_config import read_run_config
    from experiments.asr.longform import (
        LongformSettings,
        speech_frames,
        transcribe_clips,
        transcript_words,
    )
    from experiments.asr.transcriber import load_transcriber

    def fail(message) -> int:
        print(f"chorus transcribe: {message}", file=sys.stderr)
        return 2

    if args.format == "srt" and args.out is None and len(args.files) > 1:
        return fail(f"--format srt: expected --out DIR with more than one file, got "
                    f"{len(args.files)} files and no --out")
    outputs = {}
    if args.out is not None:
        for path in args.files:
            name = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0]
                                + FORMATS[args.format])
            if name in outputs.values():
                return fail(f"--out: expected one output per file, got {name} for both "
                            f"{[p for p, n in outputs.items() if n == name][0]} and {path}")
            outputs[path] = name
    # The arguments and files are checked against the run's config first: no checkpoint is
    # read for a bad run or when no file can be read.
    try:
        config = apply_overrides(read_run_config(resolve_run_dir(args.workdir)), args.overrides)
        settings = LongformSettings(overlap_seconds=args.overlap, batch_size=args.batch_size)
        settings.overlap_frames(config.train.max_mel_frames)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return fail(e)
    from chorus.audio.speech_gate import gate_decision
    from experiments.asr.longform import region_frames
    from experiments.asr.settings import asr_settings

    asr = asr_settings(config)
    if args.words and asr.ctc_weight <= 0:
        return fail(f"--words: expected a run trained with a CTC head (experiment.ctc_weight "
                    f"> 0), got experiment.ctc_weight={asr.ctc_weight} in {args.workdir}")
    gate = asr.speech_gate
    # Records leave in input order: done[i] is file i's record, None once it was skipped.
    done: dict[int, dict | None] = {}
    clips, failed, emitted = [], 0, 0

    def flush():
        nonlocal emitted
        while emitted in done:
            record = done.pop(emitted)
            emitted += 1
            if record is None:
                continue
            text = render(record, args.format, with_path=len(args.files) > 1)
            if args.out is None:
                sys.stdout.write(text)
            else:
                write_text(outputs[record["file"]], text)
                print(outputs[record["file"]])
            sys.stdout.flush()

    # the transcriber's default_mode, known before any checkpoint is read
    joint = asr.ctc_weight > 0
    mode = "greedy" if args.greedy else args.mode or (
        ("joint_beam" if joint else "beam") if config.decode.beam_width > 1
        else "joint" if joint else "verified")
    for index, path in enumerate(args.files):
        try:
            # at least one log-mel frame; with the gate on, a shorter clip is "too_short"
            wave = load_wave(path, min_samples=HOP_LENGTH if gate is None else 1)
        except AudioError as e:
            print(f"chorus transcribe: {e}; skipped", file=sys.stderr)
            failed += 1
            done[index] = None
            continue
        decision = None if gate is None else gate_decision(wave, gate, source=path)
        if decision is not None and not decision.speech:
            done[index] = {"file": path, "text": "", "step": None, "mode": mode,
                           "speech": False, "no_speech_reason": decision.reason,
                           "audio_seconds": len(wave) / SAMPLE_RATE, "decode_seconds": 0.0,
                           "windows": 0, "segments": [], **({"words": []} if args.words
                                                            else {})}
            continue
        frames = log_mel(wave)
        # long audio is cut at pauses: between the gate's speech regions (a click opens none),
        # or the VAD's frames when the gate is off
        speech = None
        if len(frames) > config.train.max_mel_frames:
            speech = (speech_frames(wave) if decision is None else
                      region_frames(len(frames), decision.activity.regions))
        clips.append((index, path, len(wave) / SAMPLE_RATE, frames, speech))
    if clips:
        try:
            transcriber, run = load_transcriber(args.workdir, args.overrides, args.step)
        except (ConfigError, FileNotFoundError, ValueError) as e:
            return fail(e)
        for k, transcript in transcribe_clips(transcriber, [c[3] for c in clips], settings,
                                              mode, [c[4] for c in clips]):
            index, path, audio_seconds, frames, _ = clips[k]
            record = {**record_of(path, transcript, run.step, audio_seconds), "mode": mode,
                      "speech": True}
            if args.words:
                record["words"] = transcript_words(transcriber, frames, transcript,
                                                   args.batch_size)
            done[index] = record
            flush()
    flush()
    if failed:
        print(f"chorus transcribe: {failed} of {len(args.files)} files could not be read",
              file=sys.stderr)
        return 1
    return 0
