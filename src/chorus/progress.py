"""Progress of long work (training, evaluation, corpus encoding, RL): one implementation.

    with progress(total=800, desc="train", unit="step", initial=resumed_step) as bar:
        for ...:
            bar.update(1, loss=2.31)             # postfix values shown beside the count
        bar.write("eval step 200: loss 3.10")   # a message line that does not break the bar

On a terminal (the stream, stderr by default, is a TTY): a tqdm bar. Elsewhere (a log file,
CI, a notebook): a plain line every CHORUS_PROGRESS_EVERY seconds (default 30; 0 = every
update) and a last one when the work ends:

    train: 120/800 (15%) loss 2.31 | 1.1 step/s | ETA 11m

`enabled=False` (a `--quiet` command) prints nothing, messages included.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

ENV_EVERY = "CHORUS_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0


def line_interval() -> float:
    """Seconds between plain progress lines: CHORUS_PROGRESS_EVERY, default 30."""
    raw = os.environ.get(ENV_EVERY, "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise ValueError(f"environment {ENV_EVERY}: expected seconds >= 0, got {raw!r}")
    return value


def format_duration(seconds: float) -> str:
    """42s, 11m, 1h05m: the precision an ETA deserves."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """What `progress(...)` returns: a context manager with `update`, `write`, `close`."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0,
                 enabled: bool = True, stream: TextIO | None = None,
                 message_stream: TextIO | None = None, every: float | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = initial
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self._messages = message_stream or sys.stdout
        self._every = line_interval() if every is None else every
        self._postfix: dict[str, Any] = {}
        self._start = self._last_line = time.monotonic()
        self._first: tuple[float, int] | None = None  # (time, count) of the first update
        self._printed_n: int | None = None
        self._bar = None
        if enabled and _is_terminal(self._stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                             file=self._stream, dynamic_ncols=True)

    @property
    def mode(self) -> str:
        """'bar' (tqdm), 'lines' (plain periodic lines) or 'off'."""
        return "off" if not self.enabled else "bar" if self._bar is not None else "lines"

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._first is None and n:
            self._first = (time.monotonic(), self.n + n)
        self.n += n
        self._postfix.update({k: v for k, v in postfix.items() if v is not None})
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _format_value(v) for k, v in self._postfix.items()},
                                      refresh=False)
            self._bar.update(n)
        elif self.enabled and n and time.monotonic() - self._last_line >= self._every:
            self._print_line()

    def write(self, line: str) -> None:
        """A message (an eval result, a resume notice) on the message stream (stdout)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self._messages)
        else:
            print(line, file=self._messages, flush=True)

    def line(self, final: bool = False) -> str:
        """The plain progress line for the current count."""
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        if self._postfix:
            parts[0] += " " + " ".join(f"{k} {_format_value(v)}"
                                       for k, v in self._postfix.items())
        now = time.monotonic()
        elapsed = now - self._start
        done = self.n - self._start_n
        if done > 0 and elapsed > 0:
            # The rate since the first unit finished: a first step that compiles, or a
            # first batch that starts the data workers, is not the pace of the rest.
            since, at = self._first if self._first else (self._start, self._start_n)
            rate = (self.n - at) / (now - since) if self.n > at and now > since else (
                done / elapsed)
            parts.append(f"{rate:.3g} {self.unit}/s")
            if final:
                parts.append(f"took {format_duration(elapsed)}")
            elif self.total:
                parts.append(f"ETA {format_duration(max(self.total - self.n, 0) / rate)}")
        return " | ".join(parts)

    def _print_line(self, final: bool = False) -> None:
        print(self.line(final), file=self._stream, flush=True)
        self._last_line = time.monotonic()
        self._printed_n = self.n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.n != self._start_n and self._printed_n != self.n:
            self._print_line(final=True)
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Progress:
    """A progress display for `total` units of work (None: unknown); see the module doc."""
    return Progress(total, desc, unit, **kwargs)
