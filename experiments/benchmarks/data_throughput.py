"""`chorus bench data`: throughput of the input pipeline (decode + log-mel + pack + batch) for
the ASR or the dialogue regime (`--task`).

    chorus bench data --data DIR --workers 0,2 --batches 20 --out runs/bench

For each worker count: time to the first batch (includes worker start-up), then steady-state
examples/s and audio-seconds/s over `--batches` batches. Without --data a small corpus is
synthesized into a temp dir first. Writes data_throughput.json and data_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from chorus.atomic import write_json, write_text


def _asr():
    from experiments.asr.regime import AsrRegime

    return AsrRegime()


def _dialogue():
    from experiments.realtime import DialogueRegime

    return DialogueRegime()


REGIMES = {"asr": _asr, "dialogue": _dialogue}  # the regimes with audio input (mel features)


def measure(data_dir: str, task: str, split: str, num_workers: int, batches: int,
            batch_size: int, seq_len: int, max_frames: int, max_clips: int) -> dict:
    from chorus.vocab import MEL_FRAMES_PER_SECOND, VocabLayout
    from data_pipelines.pipeline import make_train_iterator

    layout = VocabLayout(text_size=512, num_audio_codes=1000)
    start = time.perf_counter()
    with make_train_iterator(REGIMES[task](), data_dir, split, layout, batch_size=batch_size,
                             seq_len=seq_len, seed=0, shard_index=0, shard_count=1,
                             num_workers=num_workers, max_frames=max_frames,
                             max_clips=max_clips) as it:
        next(it)
        first = time.perf_counter() - start
        examples = frames = 0
        start = time.perf_counter()
        for _ in range(batches):
            batch = next(it)
            examples += int(batch["segment_ids"].max(axis=1).sum())
            frames += int(batch["audio_mask"].sum())
        seconds = time.perf_counter() - start
    return {"task": task, "workers": num_workers, "batches": batches,
            "first_batch_s": first, "seconds": seconds,
            "batches_per_s": batches / seconds, "examples_per_s": examples / seconds,
            "audio_seconds_per_s": frames / MEL_FRAMES_PER_SECOND / seconds,
            "fill": examples / (batches * batch_size)}


def to_markdown(results: list[dict], header: dict) -> str:
    lines = [f"# data pipeline throughput ({header['task']}, B={header['batch_size']}, "
             f"L={header['seq_len']}, T={header['max_frames']}, A={header['max_clips']})", "",
             f"machine: {header['machine']}, {header['cpus']} CPUs", "",
             "| workers | first batch (s) | batches/s | examples/s | audio-s/s |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['workers']} | {r['first_batch_s']:.2f} | {r['batches_per_s']:.2f} | "
                     f"{r['examples_per_s']:.1f} | {r['audio_seconds_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="chorus bench data", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="TFDS data_dir with chorus_speech + tokenizer "
                                                "(default: synthesize a small one)")
    p.add_argument("--task", default="asr", choices=sorted(REGIMES))
    p.add_argument("--split", default="train")
    p.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--max-frames", type=int, default=800)
    p.add_argument("--max-clips", type=int, default=4)
    p.add_argument("--out", default="runs/bench", help="folder for the JSON + markdown")
    args = p.parse_args(argv)
    data_dir = args.data
    tmp = None
    if data_dir is None:
        from data_pipelines.corpus_plan import CorpusConfig
        from data_pipelines.synth_corpus import synth_corpus

        tmp = tempfile.TemporaryDirectory(prefix="chorus-bench-data-")
        data_dir = tmp.name
        synth_corpus(data_dir, CorpusConfig(hours=0.1, shard_size=25), progress=False)
    header = {"task": args.task, "batch_size": args.batch_size, "seq_len": args.seq_len,
              "max_frames": args.max_frames, "max_clips": args.max_clips,
              "machine": platform.platform(), "cpus": os.cpu_count(), "data": data_dir}
    results = [measure(data_dir, args.task, args.split, int(w), args.batches, args.batch_size,
                       args.seq_len, args.max_frames, args.max_clips)
               for w in args.workers.split(",")]
    write_json(os.path.join(args.out, "data_throughput.json"),
               {"header": header, "results": results})
    markdown = to_markdown(results, header)
    write_text(os.path.join(args.out, "data_throughput.md"), markdown)
    print(markdown)
    print(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0
