"""The table the ASR mode reports (`chorus eval --workdir W`, W/eval/asr_eval.{json,md}):

    per split   WER / CER / exact match with verified decoding, checked token-identical to
                greedy decoding; accepted tokens per verify step; backbone forwards per token;
                WER of CTC greedy decoding (the CTC head alone, when the run has one) and of
                joint CTC/attention decoding (verified, checked token-identical to joint
                greedy; its accepted tokens per step) and of joint beam search
                (experiment.eval_beam_width); how many of the split's speech clips the no-speech
                gate would reject (goal 0)
    speed       greedy vs verified wall-clock at batch 1 and 8 on the same utterances, the
                shared encoder + prefill timed alone (the decode phase's own speedup), RTF
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chorus.config import Config
from chorus.decoding.verified import decode_stats
from chorus.eval.text_metrics import error_rates
from chorus.progress import progress
from chorus.vocab import MEL_FRAMES_PER_SECOND, VocabLayout
from experiments.asr.regime import eval_examples
from experiments.asr.settings import AsrSettings
from experiments.asr.transcriber import Transcriber, pad_requests, timed

SPEED_REPEATS = 5  # timed passes per mode; the fastest counts (CPU timings are noisy)
BATCH = 8


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def decode_eval(config: Config, settings: AsrSettings, transcriber: Transcriber) -> dict:
    """WER/CER per split with verified decoding (checked token-identical to greedy), acceptance
    and forwards per token, and greedy-vs-verified wall-clock at batch 1 and 8."""
    layout = transcriber.layout
    max_frames = config.train.max_mel_frames
    report: dict[str, Any] = {}
    timing_pool: list[dict] = []
    # every split opened (one example) before any is decoded: a missing one fails at once,
    # without holding every split's clips in memory together
    for split in settings.eval_splits:
        eval_examples(config, settings, split, 1)
    for split in settings.eval_splits:
        examples = eval_examples(config, settings, split, settings.eval_examples)
        timing_pool = timing_pool or examples
        hyps, refs, identical, stats, ctc_hyps = [], [], 0, [], []
        joint_hyps, joint_identical, joint_stats, beam_hyps = [], 0, [], []
        beam = (transcriber.with_decode(beam_width=settings.eval_beam_width)
                if settings.eval_beam_width and transcriber.asr.ctc_head is not None else None)
        audio_seconds = 0.0
        with progress(len(examples), f"eval {split}", "utt") as bar:
            for chunk in _batches(examples, BATCH):
                request = pad_requests(chunk, layout, max_frames)
                verified = transcriber.decode(request, mode="verified")
                greedy = transcriber.decode(request, mode="greedy")
                same = np.all(np.asarray(verified.tokens) == np.asarray(greedy.tokens), axis=1)
                identical += int(same.sum())
                hyps += transcriber.texts(verified)
                if transcriber.asr.ctc_head is not None:
                    ctc_hyps += transcriber.texts(transcriber.decode(request, mode="ctc"))
                    joint = transcriber.decode(request, mode="joint")
                    joint_greedy = transcriber.decode(request, mode="joint_greedy")
                    joint_identical += int(np.all(np.asarray(joint.tokens) == np.asarray(
                        joint_greedy.tokens), axis=1).sum())
                    joint_hyps += transcriber.texts(joint)
                    joint_stats.append(decode_stats(joint))
                if beam is not None:
                    beam_hyps += beam.texts(beam.decode(request, mode="joint_beam"))
                refs += [ex["reference_text"] for ex in chunk]
                stats.append(decode_stats(verified))
                audio_seconds += float(request["audio_mask"].sum()) / MEL_FRAMES_PER_SECOND
                bar.update(len(chunk))
        report[split] = {
            **error_rates(refs, hyps),
            "identical_to_greedy": identical / len(examples),
            "tokens_per_step": float(np.mean([s["tokens_per_step"] for s in stats])),
            "forwards_per_token": float(np.mean([s["forwards_per_token"] for s in stats])),
            "audio_seconds": audio_seconds,
            **({"ctc_wer": error_rates(refs, ctc_hyps)["wer"]} if ctc_hyps else {}),
            **({"joint_wer": (joint_rates := error_rates(refs, joint_hyps))["wer"],
                "joint_cer": joint_rates["cer"],
                "joint_identical_to_joint_greedy": joint_identical / len(examples),
                "joint_tokens_per_step": float(np.mean([s["tokens_per_step"]
                                                        for s in joint_stats]))}
               if joint_hyps else {}),
            **({"joint_beam_wer": (beam_rates := error_rates(refs, beam_hyps))["wer"],
                "joint_beam_cer": beam_rates["cer"],
                "joint_beam_width": settings.eval_beam_width} if beam_hyps else {}),
            **_gate_rejections(config, settings, split, examples),
            "examples": [{"reference": r, "hypothesis": h} for r, h in
                         list(zip(refs, hyps, strict=True))[:5]],
        }
    if settings.speed_examples and transcriber.asr.heads is not None:
        report["speed"] = speed_eval(transcriber, timing_pool[: settings.speed_examples],
                                     layout, max_frames)
    return report


def _gate_rejections(config: Config, settings: AsrSettings, split: str,
                     examples: Sequence[dict]) -> dict:
    """{"gate_rejected": speech clips of the split the no-speech gate drops} (gate on only)."""
    if settings.speech_gate is None:
        return {}
    from experiments.asr.speech_gate import eval_waves, gate_eval

    waves = eval_waves(config, settings, split, [ex["id"] for ex in examples])
    return {"gate_rejected": gate_eval(waves, settings.speech_gate)["rejected"]}


def speed_eval(transcriber: Transcriber, examples: Sequence[dict], layout: VocabLayout,
               max_frames: int) -> dict:
    """Greedy vs verified wall-clock on the same utterances, same run, compiled first.

    Also times the shared part alone (audio encoder + prompt prefill + first token:
    `mode="prefill"`), so the decode phase's own speedup is reported beside the end-to-end one.
    """
    rows = {}
    for batch_size in (1, BATCH):
        requests = [pad_requests(c, layout, max_frames) for c in _batches(examples, batch_size)
                    if len(c) == batch_size]
        if not requests:
            continue
        joint = ("joint_greedy", "joint") if transcriber.asr.ctc_head is not None else ()
        modes = ("prefill", "greedy", "verified", *joint)
        for mode in modes:
            transcriber.decode(requests[0], mode=mode)  # compile
        passes = {mode: [] for mode in modes}
        for _ in range(SPEED_REPEATS):  # round-robin: a slow spell of the machine hits all
            for mode in modes:
                passes[mode].append(sum(timed(lambda r=request, m=mode: transcriber.decode(
                    r, mode=m))[1] for request in requests))
        times = {mode: min(p) for mode, p in passes.items()}
        audio = sum(float(r["audio_mask"].sum()) / MEL_FRAMES_PER_SECOND for r in requests)
        decode_greedy = max(times["greedy"] - times["prefill"], 1e-9)
        decode_verified = max(times["verified"] - times["prefill"], 1e-9)
        rows[f"batch_{batch_size}"] = {
            "prefill_seconds": times["prefill"],
            "greedy_seconds": times["greedy"], "verified_seconds": times["verified"],
            "speedup": times["greedy"] / times["verified"],
            "decode_phase_speedup": decode_greedy / decode_verified,
            "rtf_verified": times["verified"] / audio, "rtf_greedy": times["greedy"] / audio,
            "utterances": len(requests) * batch_size}
        if joint:  # both joint decoders also run the encoder once more, for the CTC logits
            rows[f"batch_{batch_size}"].update({
                "joint_greedy_seconds": times["joint_greedy"],
                "joint_seconds": times["joint"],
                "joint_speedup": times["joint_greedy"] / times["joint"],
                "joint_decode_phase_speedup": max(times["joint_greedy"] - times["prefill"], 1e-9)
                / max(times["joint"] - times["prefill"], 1e-9)})
    return rows


def report_markdown(report: dict) -> str:
    lines = ["| split | WER | CER | exact | CTC-greedy WER | joint WER / CER | joint beam WER / "
             "CER | tokens/step | joint tokens/step | forwards/token | = greedy | "
             "joint = joint greedy | gated speech |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for split, r in report.items():
        if not isinstance(r, dict) or "wer" not in r:
            continue
        ctc = f"{r['ctc_wer']:.3f}" if "ctc_wer" in r else "-"
        joint = ((f"{r['joint_wer']:.3f} / {r['joint_cer']:.3f}",
                  f"{r['joint_tokens_per_step']:.2f}",
                  f"{r['joint_identical_to_joint_greedy']:.0%}") if "joint_wer" in r
                 else ("-",) * 3)
        beam = (f"{r['joint_beam_wer']:.3f} / {r['joint_beam_cer']:.3f} "
                f"(W {r['joint_beam_width']})" if "joint_beam_wer" in r else "-")
        gated = f"{r['gate_rejected']}" if "gate_rejected" in r else "off"
        lines.append(f"| {split} | {r['wer']:.3f} | {r['cer']:.3f} | {r['exact_match']:.3f} | "
                     f"{ctc} | {joint[0]} | {beam} | {r['tokens_per_step']:.2f} | {joint[1]} | "
                     f"{r['forwards_per_token']:.3f} | {r['identical_to_greedy']:.0%} | "
                     f"{joint[2]} | {gated} |")
    if "speed" in report:
        lines += ["", "| batch | encoder + prefill s | greedy s | verified s | speedup | "
                  "decode-phase speedup | RTF (verified) | joint greedy s | joint s | "
                  "joint speedup | joint decode-phase speedup |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in report["speed"].items():
            joint = (f"{r['joint_greedy_seconds']:.2f} | {r['joint_seconds']:.2f} | "
                     f"{r['joint_speedup']:.2f}x | {r['joint_decode_phase_speedup']:.2f}x"
                     if "joint_seconds" in r else "- | - | - | -")
            lines.append(f"| {name.split('_')[1]} | {r['prefill_seconds']:.2f} | "
                         f"{r['greedy_seconds']:.2f} | {r['verified_seconds']:.2f} | "
                         f"{r['speedup']:.2f}x | {r['decode_phase_speedup']:.2f}x | "
                         f"{r['rtf_verified']:.4f} | {joint} |")
    return "\n".join(lines) + "\n"
