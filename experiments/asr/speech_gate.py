"""ASR's no-speech gate: silence, noise and too-short clips transcribe as "" without decoding.

    decision = clip_gate(transcriber, wave)     # None when experiment.speech_gate is null
    text, decision = transcribe_wave(transcriber, wave)
    gate_eval(waves, gate) -> {"rejected", "total", "ms_per_clip", "reasons", "rejected_ids"}
    eval_waves(config, settings, split, ids) -> {id: wave}   # the eval examples' own waves

The gate itself is `chorus.audio.speech_gate` (the VAD run over the clip); the run's setting
`experiment.speech_gate` (on by default, null = off) says whether and how it runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np

from chorus.audio.mel import log_mel
from chorus.audio.speech_gate import REASONS, GateDecision, SpeechGate, gate_decision
from chorus.config import Config
from experiments.asr.settings import AsrSettings, asr_settings, data_dir


def speech_gate_of(transcriber) -> SpeechGate | None:
    """The run's gate (experiment.speech_gate), None when it is off."""
    return asr_settings(transcriber.config).speech_gate


def clip_gate(transcriber, wave, source: str = "waveform") -> GateDecision | None:
    """The gate's decision on one 16 kHz clip, None when the run's gate is off."""
    gate = speech_gate_of(transcriber)
    return None if gate is None else gate_decision(wave, gate, source)


def transcribe_wave(transcriber, wave, mode: str | None = None, source: str = "waveform",
                    ) -> tuple[str, GateDecision | None]:
    """(text, gate decision) of one clip: "" when the gate finds no speech, else the decode
    of its log-mel (at most transcriber.max_frames frames, like `chorus transcribe`)."""
    decision = clip_gate(transcriber, wave, source)
    if decision is not None and not decision.speech:
        return "", decision
    frames = log_mel(np.asarray(wave, np.float32))[: transcriber.max_frames]
    result = transcriber.decode(transcriber.request(frames), mode)
    return transcriber.texts(result)[0], decision


def gate_eval(waves: Mapping[str, np.ndarray] | Iterable[np.ndarray],
              gate: SpeechGate) -> dict:
    """How many clips (all speech, e.g. an eval split) the gate rejects, why, and its cost:
    {"rejected", "total", "ms_per_clip", "reasons": {reason: count}, "rejected_ids"}."""
    items = list(waves.items() if isinstance(waves, Mapping) else enumerate(waves))
    reasons = dict.fromkeys(REASONS, 0)
    rejected, seconds = [], 0.0
    for key, wave in items:
        start = time.perf_counter()
        decision = gate_decision(wave, gate, source=f"clip {key!r}")
        seconds += time.perf_counter() - start
        reasons[decision.reason] += 1
        if not decision.speech:
            rejected.append(key)
    return {"rejected": len(rejected), "total": len(items),
            "ms_per_clip": 1000 * seconds / max(len(items), 1), "reasons": reasons,
            "rejected_ids": rejected}


def eval_waves(config: Config, settings: AsrSettings, split: str, ids: Iterable[str],
               ) -> dict[str, np.ndarray]:
    """{id: 16 kHz wave} of the records with these ids (eval_examples' "id"s), read by the
    data pipeline's own reader in split order; ValueError naming the ids it did not find."""
    from data_pipelines.graph import open_records
    from data_pipelines.pipeline import ExampleConfig
    from data_pipelines.records import Skip, field_text, read_record
    from data_pipelines.sources import DEFAULT_FIELDS

    ids = list(ids)
    wanted = set(ids)
    if len(wanted) != len(ids) or "" in wanted:
        raise ValueError(f"split {split!r}: expected distinct, non-empty record ids (the gate "
                         f"reads each clip by its id), got {len(ids)} ids of which "
                         f"{len(wanted)} distinct")
    limits = ExampleConfig(seq_len=config.train.seq_len,
                           max_frames=config.train.max_mel_frames).limits(True)
    records = open_records(data_dir(settings), split, settings.dataset, None, DEFAULT_FIELDS)
    out: dict[str, np.ndarray] = {}
    for i in range(len(records)):
        if len(out) == len(wanted):
            break
        raw = records[i]
        if field_text(raw, DEFAULT_FIELDS.id) not in wanted:
            continue
        record = read_record(raw, DEFAULT_FIELDS, limits)
        if not isinstance(record, Skip):
            out[record.id] = record.wave
    missing = sorted(wanted - set(out))
    if missing:
        raise ValueError(f"split {split!r}: expected records with ids {missing[:5]} "
                         f"({len(missing)} in all), got none readable")
    return out
