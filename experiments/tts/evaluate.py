"""The TTS evaluation table, shaped like Seed-TTS-eval: one row per system on the same
held-out texts, judged by the same panel (experiments/tts/judges.py).

    items = load_items(data_dir, "test", 24)                 # held-out targets + their audio
    judges = build_judges(data_dir, cache_dir, asr_run=..., codec=codec)
    report = evaluate(items, {"ground truth": ground_truth(items),
                              "codec resynthesis": codec_resynthesis(codec),
                              "sft": synthesizer_system(...)}, judges, out_dir)

Rows: "ground truth" (the corpus' eSpeak audio of the same texts: the reference row, as
Seed-TTS-eval reports human speech), "codec resynthesis" (ground truth -> codes -> flow ->
vocoder: the codec's ceiling, issue item 7), then each TTS run. Columns: WER / CER per ASR
judge (corpus-level: total edits / total reference units, chorus.eval.text_metrics), DNSMOS
(ovrl / sig / bak / p808), speaker similarity per speaker judge (cosine of the system's clip
and the ground-truth clip of the same record; seen = a voice of the training split), RTF and
first-packet latency where the system reports timings, and control adherence through
`controls` (the control-measurement branch's hook). Written: `<out>/tts_eval.{json,md}`, a
few WAV samples and a log-mel PNG per system under `<out>/samples/<system>/`, and the samples
as TensorBoard audio under `<out>/tensorboard`.

    chorus eval --workdir runs/tts                     # the run's table (experiment hook)
    chorus tts-eval --runs runs/tts runs/tts_grpo --out runs/tts_compare   # side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from chorus.audio.resample import SAMPLE_RATE
from chorus.config import ConfigError
from chorus.eval.text_metrics import error_rates, utterance_error_rates
from experiments.tts.instructions import HELD_OUT_VOICES, raw_held_out
from experiments.tts.judges import DNSMOS_KEYS, JudgeError, Judges, similarity
from experiments.tts.target import SpeechTarget

REFERENCE = "ground truth"
RESYNTHESIS = "codec resynthesis"
REPORT_NAME = "tts_eval"
SAMPLES = 3  # WAV samples (and mel plots) per system
REFERENCE_SECONDS = 3.0  # of the zero-shot speaker reference (another utterance of the voice)
MAX_SCAN = 2000  # records searched for the held-out voices' extra rows


class EvalError(ConfigError):
    """The evaluation cannot run (bad run dir, split, synthesis output); a ConfigError, so
    `chorus eval` reports it on one line."""


@dataclasses.dataclass(frozen=True)
class Item:
    """A held-out utterance: what its prompt asks for and the corpus' audio of it."""

    target: SpeechTarget
    wave: np.ndarray  # float32 16 kHz, the ground-truth eSpeak audio

    @property
    def seconds(self) -> float:
        return self.wave.size / SAMPLE_RATE


# One synthesized clip: its waveform and timings ({"total_s", "rtf", "first_packet_ms", ...};
# empty where the system has none, as for the ground truth).
Synthesis = tuple[np.ndarray, Mapping[str, float | None]]
Synthesize = Callable[[Sequence[SpeechTarget]], Sequence[Synthesis]]
# INTEGRATION POINT (controls branch): per row, the measured error of each control the
# target asks for ({"rate": ..., "pitch": ..., "volume": ...}; the names are the measurer's),
# given the targets and the synthesized waves.
ControlMeasure = Callable[[Sequence[SpeechTarget], Sequence[np.ndarray]],
                          Sequence[Mapping[str, float]]]


def load_items(data_dir: str, split: str, count: int, dataset: str = "chorus_speech",
               unseen: int = 0) -> list[Item]:
    """The first `count` records of a prepared split, as targets and float waves, then up to
    `unseen` more of the voices TTS training holds out (experiments.tts.instructions), so the
    unseen-voice column has rows."""
    from chorus.audio.io import samples_to_float
    from data_pipelines.sources import open_source

    if count < 1:
        raise EvalError(f"count: expected an int >= 1, got {count}")
    try:
        source = open_source(dataset, os.path.expanduser(data_dir), split)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise EvalError(f"{data_dir}: expected the prepared dataset {dataset!r} with a "
                        f"{split!r} split, got: {str(e).splitlines()[0]}") from None
    if len(source) == 0:
        raise EvalError(f"{data_dir}: split {split!r} of {dataset!r} has no records")
    items, extra = [], 0
    for i in range(len(source)):
        if len(items) >= count and (extra >= unseen or i >= MAX_SCAN):
            break
        raw = source[i]
        if len(items) >= count:
            if "unseen_voice" not in raw_held_out(raw):
                continue
            extra += 1
        items.append(Item(SpeechTarget.from_raw(raw),
                          samples_to_float(np.asarray(raw["speech"]))))
    return items


# ----------------------------------------------------------------------------- systems


def ground_truth(items: Sequence[Item]) -> Synthesize:
    """The reference row: each target's own corpus audio (no timings)."""
    by_id = {it.target.id: it.wave for it in items}

    def synthesize(targets: Sequence[SpeechTarget]) -> list[Synthesis]:
        return [(by_id[t.id], {}) for t in targets]

    return synthesize


def codec_resynthesis(codec, items: Sequence[Item], steps: int | None = None,
                      guidance: float | None = None, seed: int = 0) -> Synthesize:
    """The codec's ceiling: ground truth -> codes -> flow -> vocoder, conditioned on the
    speaker embedding of the clip itself. Timed (encode + decode) as a system would be."""
    by_id = {it.target.id: it.wave for it in items}

    def synthesize(targets: Sequence[SpeechTarget]) -> list[Synthesis]:
        if targets:  # warm-up, untimed: the first compile is not the system's speed
            codec.decode(codec.encode(by_id[targets[0].id]), steps=steps, guidance=guidance)
        out = []
        for t in targets:
            wave = by_id[t.id]
            start = time.perf_counter()
            codes, speaker = codec.analyze(wave)
            resynth = codec.decode(codes, speaker=speaker, steps=steps, guidance=guidance,
                                   seed=seed)
            total = time.perf_counter() - start
            out.append((resynth, {"total_s": total, "rtf": total / (resynth.size / SAMPLE_RATE)}))
        return out

    return synthesize


def synthesizer_system(synth, items: Sequence[Item], prompt_dir: str,
                       references: Callable[[SpeechTarget], np.ndarray | None],
                       stream: bool = True) -> Synthesize:
    """A TTS run as a system. Each target is asked for as the corpus prompt was (its tagged
    text and instruction); the speaker is its voice when the codec knows it (a seen voice),
    else a zero-shot reference: `references(target)`, another utterance of the voice (written
    to `prompt_dir`; never the target's own recording, which the LM would hear through its
    speaker clip). `stream`: through the streaming detokenizer, so first-packet latency is
    measured."""
    from chorus.audio.io import write_wav
    from experiments.tts.synthesizer import SpeechRequest

    def speaker(t: SpeechTarget) -> str:
        if t.voice in synth.codec.voices:
            return t.voice
        wave = references(t)
        if wave is None:
            raise EvalError(f"record {t.id!r}: voice {t.voice!r} is not among the codec's "
                            f"voices and has no other recording to prompt it with")
        path = os.path.join(prompt_dir, f"{_slug(t.id)}.wav")
        write_wav(path, wave)
        return path

    def synthesize(targets: Sequence[SpeechTarget]) -> list[Synthesis]:
        out = []
        for i, t in enumerate(targets):  # one at a time: latency is a single request's
            request = SpeechRequest(t.tagged_text, instruction=t.instruction,
                                    speaker=speaker(t))
            if i == 0:  # warm-up, untimed: the first compile is not the system's speed
                synth.synthesize([request])
            if stream:
                s = synth.stream([request])
                for _ in s:
                    pass
                result = s.results[0]
            else:
                result = synth.synthesize([request])[0]
            timings = dataclasses.asdict(result.timings)
            timings["truncated"] = float(result.truncated)
            out.append((result.wave, timings))
        return out

    return synthesize


# ----------------------------------------------------------------------------- one system


def _check_outputs(name: str, outputs: Sequence, targets: Sequence[SpeechTarget]) -> None:
    if len(outputs) != len(targets):
        raise EvalError(f"system {name!r}: expected {len(targets)} syntheses, got "
                        f"{len(outputs)}")
    for t, (wave, _) in zip(targets, outputs, strict=True):
        wave = np.asarray(wave)
        if wave.ndim != 1 or wave.size == 0 or not np.all(np.isfinite(wave)):
            raise EvalError(f"system {name!r}, record {t.id!r}: expected a finite non-empty "
                            f"1-D float wave, got shape {wave.shape}")


def score_system(name: str, items: Sequence[Item], synthesize: Synthesize, judges: Judges,
                 controls: ControlMeasure | None = None) -> list[dict[str, Any]]:
    """Per-row results of one system: every judge on every clip."""
    targets = [it.target for it in items]
    outputs = list(synthesize(targets))
    _check_outputs(name, outputs, targets)
    waves = [np.asarray(w, np.float32) for w, _ in outputs]
    rows: list[dict[str, Any]] = [
        {"id": t.id, "text": t.text, "tag": t.tag, "voice": t.voice,
         "seen_voice": t.voice in judges.seen_voices, "seconds": w.size / SAMPLE_RATE,
         "timings": {k: (None if v is None else float(v)) for k, v in dict(tm).items()},
         "wave": w}
        for t, w, (_, tm) in zip(targets, waves, outputs, strict=True)]
    refs = [t.text for t in targets]
    for judge in judges.asr:
        hyps = judge.transcribe(waves)
        wer = utterance_error_rates(refs, hyps, "wer")
        cer = utterance_error_rates(refs, hyps, "cer")
        for row, h, w, c in zip(rows, hyps, wer, cer, strict=True):
            row.setdefault("asr", {})[judge.name] = {"hypothesis": h, "wer": float(w),
                                                     "cer": float(c)}
    if judges.quality is not None:
        for row, s in zip(rows, judges.quality.score(waves), strict=True):
            row["dnsmos"] = s
    for judge in judges.speakers:
        for row, it, w in zip(rows, items, waves, strict=True):
            row.setdefault("sim", {})[judge.name] = similarity(judge.embed(w),
                                                               judge.embed(it.wave))
    if controls is not None:
        errors = list(controls(targets, waves))
        if len(errors) != len(rows):
            raise EvalError(f"controls: expected one error mapping per row ({len(rows)}), got "
                            f"{len(errors)}")
        for row, e in zip(rows, errors, strict=True):
            row["controls"] = {k: float(v) for k, v in dict(e).items()}
    return rows


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def control_adherence(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean measured error per control, and per inline tag (the rows whose text carries it;
    "none" = untagged), from the rows' "controls" mappings."""
    per_control: dict[str, list[float]] = {}
    per_tag: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for k, v in row.get("controls", {}).items():
            per_control.setdefault(k, []).append(v)
            per_tag.setdefault(row["tag"] or "none", {}).setdefault(k, []).append(v)
    return {"per_control": {k: _mean(v) for k, v in sorted(per_control.items())},
            "per_tag": {tag: {**{k: _mean(v) for k, v in sorted(c.items())},
                              "n": max(len(v) for v in c.values())}
                        for tag, c in sorted(per_tag.items())}}


def summarize(rows: Sequence[Mapping[str, Any]], judges: Judges) -> dict[str, Any]:
    """The table row of one system from its per-row results."""
    refs = [r["text"] for r in rows]
    out: dict[str, Any] = {"utterances": len(rows),
                           "audio_seconds": float(sum(r["seconds"] for r in rows))}
    for judge in judges.asr:
        rates = error_rates(refs, [r["asr"][judge.name]["hypothesis"] for r in rows])
        out[judge.name] = {"wer": rates["wer"], "cer": rates["cer"],
                           "exact_match": rates["exact_match"]}
    if judges.quality is not None:
        out["dnsmos"] = {k: _mean([r["dnsmos"][k] for r in rows]) for k in DNSMOS_KEYS}
    for judge in judges.speakers:
        sims = [(r["sim"][judge.name], r["seen_voice"]) for r in rows]
        out[judge.name] = {"all": _mean([s for s, _ in sims]),
                           "seen": _mean([s for s, seen in sims if seen]),
                           "unseen": _mean([s for s, seen in sims if not seen]),
                           "seen_n": sum(seen for _, seen in sims),
                           "unseen_n": sum(not seen for _, seen in sims)}
    timings = [r["timings"] for r in rows if r["timings"]]
    if timings:
        total = [t.get("total_s") for t in timings]
        if all(v is not None for v in total):
            out["rtf"] = float(sum(total) / sum(r["seconds"] for r in rows if r["timings"]))
        fpl = [t["first_packet_ms"] for t in timings if t.get("first_packet_ms") is not None]
        if fpl:
            out["first_packet_ms"] = {"mean": float(np.mean(fpl)),
                                      "p50": float(np.percentile(fpl, 50)),
                                      "p90": float(np.percentile(fpl, 90))}
        truncated = [t["truncated"] for t in timings if "truncated" in t]
        if truncated:
            out["truncated"] = float(np.mean(truncated))
    if any("controls" in r for r in rows):
        out["controls"] = control_adherence(rows)
    return out


# ----------------------------------------------------------------------------- artifacts


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "system"


def mel_png(path: str, wave: np.ndarray, title: str) -> None:
    """A log-mel spectrogram plot (chorus.audio.mel's features) of one clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chorus.atomic import atomic_path
    from chorus.audio.mel import log_mel

    mel = log_mel(np.asarray(wave, np.float32))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
              extent=(0, wave.size / SAMPLE_RATE, 0, mel.shape[1]))
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel bin")
    ax.set_title(title[:90], fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)


def write_samples(out_dir: str, system: str, rows: Sequence[Mapping[str, Any]], logger,
                  count: int = SAMPLES, step: int = 0) -> list[str]:
    """The first `count` clips of a system as WAV + log-mel PNG under out_dir/samples/<slug>/,
    and as TensorBoard audio `tts_eval/<slug>/<i>`. Returns the WAV paths."""
    from chorus.audio.io import write_wav

    folder = os.path.join(out_dir, "samples", _slug(system))
    paths = []
    for i, row in enumerate(rows[:count]):
        wave = np.clip(row["wave"], -1.0, 1.0)
        stem = os.path.join(folder, f"{i:02d}_{_slug(row['id'])}")
        write_wav(stem + ".wav", wave)
        mel_png(stem + ".png", wave, f"{system}: {row['text']}")
        logger.audio(f"tts_eval/{_slug(system)}/{i}", wave, step, SAMPLE_RATE)
        paths.append(stem + ".wav")
    return paths


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "wave"}


def evaluate(items: Sequence[Item], systems: Mapping[str, Synthesize], judges: Judges,
             out_dir: str, controls: ControlMeasure | None = None, samples: int = SAMPLES,
             step: int = 0, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every system on the same items and judges; writes out_dir/tts_eval.{json,md}, the
    samples and TensorBoard audio. Returns the report."""
    from chorus.atomic import write_json, write_text
    from chorus.training.metrics import MetricsLogger

    if not items:
        raise EvalError("evaluate items: expected at least one held-out utterance, got none")
    if not systems:
        raise EvalError("evaluate systems: expected at least one system, got none")
    report: dict[str, Any] = {
        **dict(meta or {}), "utterances": len(items),
        "judges": {"asr": [j.name for j in judges.asr],
                   "quality": judges.quality.name if judges.quality else None,
                   "speakers": [j.name for j in judges.speakers]},
        "systems": {}, "rows": {}}
    for judge in judges.asr:
        lm = getattr(judge, "lm", None)
        if lm is not None:
            report["judges"]["sphinx_lm"] = {"arpa": lm.arpa, "words": lm.words,
                                             "oov": list(lm.oov)}
    logger = MetricsLogger(out_dir)
    try:
        for name, synthesize in systems.items():
            start = time.perf_counter()
            rows = score_system(name, items, synthesize, judges, controls)
            summary = summarize(rows, judges)
            summary["eval_seconds"] = time.perf_counter() - start
            summary["samples"] = write_samples(out_dir, name, rows, logger, samples, step)
            report["systems"][name] = summary
            report["rows"][name] = [_public(r) for r in rows]
        logger.event("tts_eval", step=step, systems={k: {kk: vv for kk, vv in v.items()
                                                        if kk != "samples"}
                                                    for k, v in report["systems"].items()})
    finally:
        logger.close()
    write_json(os.path.join(out_dir, f"{REPORT_NAME}.json"), report)
    write_text(os.path.join(out_dir, f"{REPORT_NAME}.md"), report_markdown(report))
    return report


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def report_markdown(report: Mapping[str, Any]) -> str:
    """The table: one row per system, the reference (ground truth) first."""
    j = report["judges"]
    head = ["system"]
    for name in j["asr"]:
        head += [f"WER {name}", f"CER {name}"]
    if j["quality"]:
        head += ["DNSMOS ovrl", "sig", "bak", "p808"]
    for name in j["speakers"]:
        head += [f"{name} seen", f"{name} unseen"]
    head += ["RTF", "first packet ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, s in report["systems"].items():
        cells = [system]
        for name in j["asr"]:
            cells += [_fmt(s[name]["wer"]), _fmt(s[name]["cer"])]
        if j["quality"]:
            cells += [_fmt(s["dnsmos"][k], ".2f") for k in DNSMOS_KEYS]
        for name in j["speakers"]:
            sim = s[name]
            cells += [f"{_fmt(sim['seen'])} (n={sim['seen_n']})",
                      f"{_fmt(sim['unseen'])} (n={sim['unseen_n']})"]
        fpl = s.get("first_packet_ms")
        cells += [_fmt(s.get("rtf")), _fmt(fpl["mean"] if fpl else None, ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    tables = ["\n".join(lines)]
    controlled = {k: v["controls"] for k, v in report["systems"].items() if "controls" in v}
    if controlled:
        names = sorted({c for v in controlled.values() for c in v["per_control"]})
        rows = ["| system | tag | n | " + " | ".join(f"{c} error" for c in names) + " |",
                "|" + "---|" * (len(names) + 3)]
        for system, c in controlled.items():
            rows.append(f"| {system} | all | - | " + " | ".join(
                _fmt(c["per_control"].get(n)) for n in names) + " |")
            for tag, per in c["per_tag"].items():
                rows.append(f"| {system} | {tag} | {per['n']} | " + " | ".join(
                    _fmt(per.get(n)) for n in names) + " |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables) + "\n"


# ----------------------------------------------------------------------------- runs


def _codec_dir(settings) -> str:
    """experiment.codec_run (the record cache does not name the run that wrote it)."""
    if not settings.codec_run:
        raise EvalError("experiment.codec_run: expected the codec run the TTS model speaks "
                        "through (--set experiment.codec_run=RUN), got ''")
    return os.path.expanduser(settings.codec_run)


def reference_systems(items: Sequence[Item], codec) -> dict[str, Synthesize]:
    return {REFERENCE: ground_truth(items), RESYNTHESIS: codec_resynthesis(codec, items)}


def evaluate_runs(runs: Mapping[str, Callable[[Any], Any]], settings, out_dir: str,
                  controls: ControlMeasure | None = None, step: int = 0) -> dict[str, Any]:
    """The table of several TTS systems ({name: (codec) -> Synthesizer}) beside the reference
    rows, per split of settings.eval_splits, over the first settings.eval_examples records.
    The codec and the judges are built first (a bad asr_run / codec_run / data_dir fails
    before any TTS model is loaded); the sphinx LM is cached in out_dir."""
    from chorus.codec.pipeline import Codec
    from experiments.tts.judges import build_judges

    codec_dir = _codec_dir(settings)
    try:
        codec = Codec.load(codec_dir)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise EvalError(f"experiment.codec_run: cannot load the codec run {codec_dir!r}: "
                        f"{str(e).splitlines()[0]}") from None
    judges = build_judges(settings.data_dir, out_dir, asr_run=settings.asr_run, codec=codec,
                          train_split=settings.train_split, dataset=settings.dataset)
    if settings.hold_out:  # in the train split's records, but never trained on
        judges = dataclasses.replace(judges,
                                     seen_voices=judges.seen_voices - set(HELD_OUT_VOICES))
    unseen = max(1, settings.eval_examples // 3) if settings.hold_out else 0
    splits = {split: load_items(settings.data_dir, split, settings.eval_examples,
                                settings.dataset, unseen) for split in settings.eval_splits}
    synths = {name: make(codec) for name, make in runs.items()}
    result: dict[str, Any] = {}
    for split, items in splits.items():
        prompts = os.path.join(out_dir, split, "prompts")
        references = other_utterance(settings, split)
        # A voice the codec does not know is prompted by another of its recordings; a record
        # whose voice has none cannot be asked for fairly, so it is left out (and counted).
        promptable = [it for it in items if it.target.voice in codec.voices
                      or references(it.target) is not None]
        if not promptable:
            raise EvalError(f"split {split!r}: none of its {len(items)} records can be prompted "
                            f"(voices unknown to the codec, with no other recording)")
        skipped, items = len(items) - len(promptable), promptable
        systems = {**reference_systems(items, codec),
                   **{name: synthesizer_system(s, items, prompts, references)
                      for name, s in synths.items()}}
        report = evaluate(items, systems, judges, os.path.join(out_dir, split),
                          controls or reference_controls(items), step=step,
                          meta={"split": split, "codec_run": codec_dir,
                                "unpromptable_skipped": skipped})
        result[split] = report["systems"]
    return result


def other_utterance(settings, split: str) -> Callable[[SpeechTarget], np.ndarray | None]:
    """target -> 3 s of another recording of its voice in `split` (else in the train split,
    whose records of the held-out voices TTS training never saw), None when there is none."""
    from experiments.tts.speaker_clips import speaker_clips

    tables: dict[str, Any] = {}

    def table(name: str):
        if name not in tables:
            tables[name] = speaker_clips(os.path.expanduser(settings.data_dir),
                                         settings.dataset, name, REFERENCE_SECONDS)
        return tables[name]

    def reference(t: SpeechTarget) -> np.ndarray | None:
        for name in dict.fromkeys((split, settings.train_split)):
            clip = table(name).choose(str(t.speaker_id), exclude_id=t.id, rng=None)
            if clip is not None:
                return clip
        return None

    return reference


def reference_controls(items: Sequence[Item]) -> ControlMeasure:
    """Control adherence against each target's own eSpeak recording, which realizes the
    requested rate / pitch / volume / inline direction exactly
    (experiments.tts.controls.adherence)."""
    from experiments.tts import controls as C

    recorded = {it.target.id: it.wave for it in items}
    memo: dict[str, Any] = {}

    def measure(targets: Sequence[SpeechTarget], waves: Sequence[np.ndarray]):
        out = []
        for t, w in zip(targets, waves, strict=True):
            if t.id not in memo:
                memo[t.id] = C.measure_target(recorded[t.id], t)
            out.append(C.adherence(C.measure_target(w, t), memo[t.id], tag=t.tag is not None))
        return out

    return measure


def run_evaluate(config, params, workdir: str, step: int = 0,
                 controls: ControlMeasure | None = None) -> dict[str, Any]:
    """`chorus eval --workdir RUN` on a TTS run: the table in RUN/eval/<split>/, the run's
    own system built from the checkpoint's inference params ({"backbone": ...}; an RL run's
    hook passes `experiment.inference_params(params)`). `controls`: INTEGRATION POINT for the
    control-measurement branch (see ControlMeasure)."""
    import jax

    from experiments.tts.settings import tts_settings

    settings = tts_settings(config)
    name = _slug(os.path.basename(os.path.normpath(workdir)))
    # Synthesis and the judges run per utterance on one device with no mesh in context (as
    # `Synthesizer.load` and `Codec.load` place them), not on the checkpoint's training mesh.
    backbone = jax.device_put(params["backbone"], jax.local_devices()[0])
    with jax.set_mesh(None):
        return evaluate_runs({name: lambda codec: _synthesizer_from_params(
            config, backbone, settings, workdir, codec)}, settings,
            os.path.join(workdir, "eval"), controls=controls, step=step)


def _synthesizer_from_params(config, backbone, settings, workdir: str, codec):
    """INTEGRATION POINT (synthesizer branch): the Synthesizer of a run's restored params,
    its tokenizer from the run's assets."""
    from chorus.model.unified import UnifiedAudioLM
    from chorus.training.restore import asset_path
    from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer
    from experiments.tts.synthesizer import Synthesizer

    tokenizer = TextTokenizer.from_file(asset_path(workdir, TOKENIZER_FILENAME))
    return Synthesizer(config, UnifiedAudioLM(config), backbone, tokenizer, codec,
                       settings.decoding, settings.speaker_clip_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """`chorus tts-eval --runs RUN... --out DIR`: several TTS runs (SFT, RL...) side by side,
    on the first run's data, judges and splits."""
    parser = argparse.ArgumentParser(prog="chorus tts-eval", description=main.__doc__)
    parser.add_argument("--runs", nargs="+", required=True, help="TTS run directories")
    parser.add_argument("--out", required=True, help="where the table and samples go")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override of the first run's config "
                                                  "(e.g. experiment.asr_run=runs/asr)")
    args = parser.parse_args(argv)

    from chorus.config import apply_overrides
    from chorus.training.restore import resolve_run_dir
    from chorus.training.run_config import read_run_config
    from experiments.tts.settings import tts_settings

    def load(run: str):
        def make(codec):  # called once the judges are built (its own codec: key-checked)
            from experiments.tts.synthesizer import Synthesizer  # INTEGRATION POINT

            return Synthesizer.load(run, codec_run=_codec_dir(settings))

        return make

    try:
        first = resolve_run_dir(args.runs[0])
        settings = tts_settings(apply_overrides(read_run_config(first), args.overrides))
        synths = {}
        for run in args.runs:
            name = _slug(os.path.basename(os.path.normpath(run)))
            if name in synths:
                raise EvalError(f"--runs: two runs named {name!r}; give distinct directories")
            resolve_run_dir(run)  # each run exists before anything loads
            synths[name] = load(run)
        result = evaluate_runs(synths, settings, args.out)
    except (ConfigError, EvalError, JudgeError, FileNotFoundError, ValueError) as e:
        print(f"chorus tts-eval: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    import json

    print(json.dumps(result, indent=2, sort_keys=True))
    return 0

