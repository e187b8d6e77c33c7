"""`chorus data synth | stats | tokenizer`."""

from __future__ import annotations

import argparse
import json
import os
import sys

USAGE = """usage: chorus data COMMAND [ARGS...]

commands:
  synth       synthesize the eSpeak NG corpus as the TFDS dataset chorus_speech (+ tokenizer)
  stats       hours, lengths, voices per split of a prepared dataset
  tokenizer   train the SentencePiece text tokenizer beside a dataset
"""


def synth_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus data synth", description=(
        "Synthesize a speech corpus with eSpeak NG into DIR/chorus_speech (TFDS, "
        "array_record) and train DIR/tokenizer.model. Resumable: re-run to finish."))
    p.add_argument("--out", required=True, help="output directory (the TFDS data_dir)")
    p.add_argument("--hours", type=float, default=2.0, help="hours of audio over all splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard-size", type=int, default=50, help="utterances per shard file")
    p.add_argument("--vocab-size", type=int, default=512, help="tokenizer vocabulary size")
    p.add_argument("--held-out-accents", default=None, metavar="A,B", help=(
        "comma-separated voices.ACCENTS keys whose voices only the test_voices split speaks "
        "in (default en-gb-x-gbcwmd; '' for none)"))
    p.add_argument("--held-out-variants", default=None, metavar="V,W", help=(
        "comma-separated voices.VARIANTS keys held out likewise (default f4,m6; '' for none)"))
    p.add_argument("--delete-shards", action="store_true",
                   help="remove the intermediate shard files after the build")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from data_pipelines.corpus_plan import CorpusConfig
    from data_pipelines.stats import dataset_stats, format_stats
    from data_pipelines.synth_corpus import measured_speed, synth_corpus

    try:
        held_out = {f"held_out_{k}": tuple(x for x in v.split(",") if x)
                    for k, v in (("accents", args.held_out_accents),
                                 ("variants", args.held_out_variants)) if v is not None}
        config = CorpusConfig(seed=args.seed, hours=args.hours, shard_size=args.shard_size,
                              **held_out)
        summary = synth_corpus(args.out, config, workers=args.workers,
                               vocab_size=args.vocab_size, progress=not args.no_progress,
                               delete_shards=args.delete_shards)
    except ValueError as e:
        print(f"chorus data synth: {e}", file=sys.stderr)
        return 2
    made = summary["synthesized_hours"]
    speed = (f"synthesized {made:.3f} h now at {measured_speed(summary):.0f} audio-s/s with "
             f"{summary['workers']} workers" if made else "nothing left to synthesize")
    print(f"{summary['hours']:.3f} h of audio in {args.out}; {speed}; "
          f"total {summary['wall_seconds']:.1f} s")
    print(format_stats(dataset_stats(args.out)))
    return 0


def stats_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus data stats",
                                description="Summarize a prepared TFDS audio dataset.")
    p.add_argument("data_dir", help="TFDS data_dir (e.g. the --out of `chorus data synth`)")
    p.add_argument("--name", default="chorus_speech", help="TFDS dataset name")
    p.add_argument("--splits", default=None,
                   help="comma-separated splits (default: the chorus_speech splits)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    from data_pipelines.corpus_plan import SPLITS
    from data_pipelines.stats import dataset_stats, format_stats

    splits = tuple(args.splits.split(",")) if args.splits else SPLITS
    stats = dataset_stats(args.data_dir, args.name, splits)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 1 if all("error" in s for s in stats.values()) else 0


def tokenizer_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus data tokenizer", description=(
        "Train a SentencePiece tokenizer on a dataset's texts; writes DATA/tokenizer.model."))
    p.add_argument("--data", required=True, help="TFDS data_dir")
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--name", default="chorus_speech", help="TFDS dataset name")
    p.add_argument("--split", default="train")
    p.add_argument("--fields", default="text,tagged_text,instruction,persona,answer",
                   help="comma-separated text fields (absent ones are ignored)")
    p.add_argument("--out", default=None, help="model path (default DATA/tokenizer.model)")
    p.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram",
                   help="SentencePiece algorithm (default unigram, as `chorus data synth`)")
    p.add_argument("--normalize", action="store_true",
                   help="train on normalize_text(text) (lower case, no punctuation): the "
                        "tokenizer for `--set experiment.asr_target=normalized`")
    args = p.parse_args(argv)
    from chorus.audio.text import normalize_text
    from data_pipelines.sources import SourceError, open_source
    from data_pipelines.tokenizer import TOKENIZER_FILENAME, train_tokenizer
    from data_pipelines.voices import VOICES

    try:
        source = open_source(args.name, args.data, args.split)
    except SourceError as e:
        print(f"chorus data tokenizer: {e}", file=sys.stderr)
        return 2
    fields = args.fields.split(",")
    texts = [f"speaker {v.speaker_id}" for v in VOICES]
    for i in range(len(source)):
        record = source[i]
        for field in fields:
            value = record.get(field)
            if value:
                text = value.decode() if isinstance(value, bytes) else str(value)
                texts.append(normalize_text(text) if args.normalize else text)
    out = args.out or os.path.join(args.data, TOKENIZER_FILENAME)
    try:
        tok = train_tokenizer(texts, args.vocab_size, out, args.model_type)
    except (ValueError, RuntimeError) as e:
        print(f"chorus data tokenizer: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {tok.vocab_size} pieces from {len(texts)} texts")
    return 0


COMMANDS = {"synth": synth_main, "stats": stats_main, "tokenizer": tokenizer_main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] not in COMMANDS:
        print(f"chorus data: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
