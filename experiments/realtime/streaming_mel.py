"""The log-mel of a stream, frame for frame the offline `chorus.audio.mel.log_mel` of the clip.

    stream = StreamingLogMel()
    frames = stream.push(samples)     # the frames that became final (possibly none)
    rest = stream.flush()             # end of the clip: the frames that need its end

Offline, frame f of an N-sample clip is centred on sample 160 f: its 400-sample window spans
[160 f - 200, 160 f + 200), zero-padded past either end, and there are N // 160 frames. In a
stream, frame f is final once sample 160 f + 199 has arrived (its window lies inside what
arrived, or reaches left past sample 0, where offline pads zeros too); the frames whose window
reaches past the clip's end are known only at flush, which pads zeros as offline does. Each
batch of frames is `log_mel` itself run over the samples their windows span (starting two
frames early, so every window it keeps is inside the slice), so there is one definition of
the features and no second copy of it to drift. The frames equal offline's up to the last bit
(NumPy's FFT vectorizes over rows, so a batch of another size may round differently: measured
<= 4.8e-7 on a few bins of short clips).
"""

from __future__ import annotations

import numpy as np

from chorus.audio.mel import HOP_LENGTH, N_FFT, N_MELS, log_mel

HALF = N_FFT // 2  # samples a window reaches either side of its centre
LEAD = 2  # frames a slice starts early: 2 * 160 >= 200, so its kept windows lie inside it


class StreamingLogMel:
    """One clip's samples in, its final log-mel frames out."""

    def __init__(self):
        # Samples from stream index `base` on (negative: the zeros offline pads on the left).
        self.base = -LEAD * HOP_LENGTH
        self.buffer = np.zeros((LEAD * HOP_LENGTH,), np.float32)
        self.received = 0  # samples pushed
        self.emitted = 0  # frames returned
        self.ended = False

    def _frames(self, stop: int, end: int) -> np.ndarray:
        """Frames [emitted, stop) from the buffered samples up to stream index `end`."""
        if stop <= self.emitted:
            return np.zeros((0, N_MELS), np.float32)
        lo = (self.emitted - LEAD) * HOP_LENGTH - self.base
        out = log_mel(self.buffer[lo:end - self.base])[LEAD:LEAD + stop - self.emitted]
        self.emitted = stop
        keep = (self.emitted - LEAD) * HOP_LENGTH - self.base  # what the next frames need
        self.buffer, self.base = self.buffer[keep:], self.base + keep
        return out

    def push(self, samples) -> np.ndarray:
        """16 kHz float samples (1-D, any length) -> the frames [k, N_MELS] that became final."""
        if self.ended:
            raise ValueError("log-mel stream: push after flush (the clip has ended)")
        samples = np.asarray(samples, np.float32)
        if samples.ndim != 1:
            raise ValueError(f"log-mel stream samples: expected a 1-D array, got shape "
                             f"{samples.shape}")
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += samples.size
        final = (self.received - HALF) // HOP_LENGTH + 1 if self.received >= HALF else 0
        return self._frames(final, self.received)

    def flush(self) -> np.ndarray:
        """End of the clip: the remaining frames (those whose window passes its end)."""
        if self.ended:
            raise ValueError("log-mel stream: flush after flush (the clip has ended)")
        self.ended = True
        return self._frames(self.received // HOP_LENGTH, self.received)
