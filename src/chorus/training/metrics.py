"""Where training metrics go: metrics.jsonl, TensorBoard event files, a console line.

    workdir/metrics.jsonl     one JSON object per step (loss, batch fingerprint, timings, ...)
                              plus {"event": ...} lines (start, resume, eval, checkpoint, stop)
    workdir/tensorboard/      scalars every train.log_every steps (tfevents, no TensorFlow)
    stdout                    "step 120/200 | loss 3.41 | 18.2k tok/s | 0.41 s/step | ..."

Only process 0 writes; the other hosts get a logger with everything disabled.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from chorus.training.tfevents import EventWriter

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


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def progress_line(step: int, total: int, values: Mapping[str, float | None]) -> str:
    parts = [f"step {step}/{total}", f"loss {values['loss']:.4f}"]
    if values.get("tokens_per_s") is not None:
        parts.append(f"{_si(values['tokens_per_s'])} tok/s")
    step_time = values.get("step_time_s")
    if step_time is not None and math.isfinite(step_time):
        parts.append(f"{step_time:.3f} s/step")
    parts.append(f"data {100 * values['data_wait_fraction']:.1f}%")
    if values.get("mfu") is not None:
        parts.append(f"MFU {100 * values['mfu']:.1f}%")
    if values.get("skipped_total"):
        parts.append(f"skipped {int(values['skipped_total'])}")
    return " | ".join(parts)


class MetricsLogger:
    def __init__(self, workdir: str, *, enabled: bool = True, console: bool = True,
                 stream: TextIO | None = None):
        self.enabled = enabled
        self.console = console and enabled
        self._stream = stream or sys.stdout
        self._jsonl = JsonlLog(os.path.join(workdir, JSONL_NAME)) if enabled else None
        self._tb = EventWriter(os.path.join(workdir, TENSORBOARD_DIR)) if enabled else None

    def record(self, record: Mapping[str, Any]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(record)

    def event(self, kind: str, **fields: Any) -> None:
        self.record({"event": kind, "time": time.time(), **fields})

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        if self._tb is not None:
            self._tb.scalars(step, {k: v for k, v in values.items() if v is not None})
            self._tb.flush()

    def print(self, line: str) -> None:
        if self.console:
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
