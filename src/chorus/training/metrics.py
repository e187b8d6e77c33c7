"""Where training metrics go: metrics.jsonl and TensorBoard event files.

    workdir/metrics.jsonl     one JSON object per step (loss, batch fingerprint, timings, ...)
                              plus {"event": ...} lines (start, resume, eval, checkpoint, stop)
    workdir/tensorboard/      TensorBoard events through tensorboardX: scalars every
                              train.log_every steps, and audio / images / histograms for the
                              experiments that log them

The console shows chorus.progress (the trainer's bar or periodic lines). Only process 0
writes; the other hosts get a logger with everything disabled.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _json_value(value: Any) -> Any:
    """Floats that JSON cannot hold (nan, inf) become strings, so every line parses."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlLog:
    """Appends one JSON object per line; flushes each line so a killed run keeps its log."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _drop_partial_last_line(path)
        self._file = open(path, "a")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _drop_partial_last_line(path: str) -> None:
    """A process killed mid-write leaves a line without its newline: cut it off."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str) -> list[dict]:
    """Every complete line of a metrics.jsonl (a torn last line is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            records.append(json.loads(line))
    return records


def si(value: float) -> str:
    """18200 -> '18.2k' (throughputs on the console)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


class MetricsLogger:
    """metrics.jsonl records and TensorBoard summaries of one run (disabled off process 0)."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = JsonlLog(os.path.join(workdir, JSONL_NAME)) if enabled else None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

    def record(self, record: Mapping[str, Any]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(record)

    def event(self, kind: str, **fields: Any) -> None:
        self.record({"event": kind, "time": time.time(), **fields})

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        """One scalar per tag (None values are left out); flushed, so a kill keeps them."""
        if self._tb is None:
            return
        for tag, value in values.items():
            if value is not None:
                self._tb.add_scalar(tag, float(value), step)
        self._tb.flush()

    def audio(self, tag: str, wave: np.ndarray, step: int, sample_rate: int) -> None:
        """A mono waveform (float samples in [-1, 1]) as a playable TensorBoard clip."""
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"MetricsLogger.audio {tag!r}: expected a non-empty 1-D "
                             f"waveform, got shape {wave.shape}")
        if self._tb is not None:
            self._tb.add_audio(tag, np.clip(wave, -1.0, 1.0), step, sample_rate=sample_rate)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An image [H, W] (grey) or [H, W, 1|3|4]: uint8 0..255, or floats in [0, 1] (e.g. a
        log-mel spectrogram scaled by the caller)."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"MetricsLogger.image {tag!r}: expected [H, W] or [H, W, 1|3|4], "
                             f"got shape {image.shape}")
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        values = np.asarray(values, np.float64).reshape(-1)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"MetricsLogger.histogram {tag!r}: expected finite values, got "
                             f"{values.size} values with "
                             f"{int((~np.isfinite(values)).sum())} non-finite")
        if self._tb is not None:
            self._tb.add_histogram(tag, values, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
