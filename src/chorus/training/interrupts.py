"""SIGTERM / Ctrl-C become a flag the training loop checks between steps.

The loop then saves a checkpoint and returns cleanly; re-running the same command resumes.
A second Ctrl-C while that save runs falls back to the default handler (immediate stop).
"""

from __future__ import annotations

import signal
import threading


class StopRequests:
    """Context manager installing the handlers (main thread only; elsewhere a no-op)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts for real
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
