"""experiments/realtime/streaming_mel.py: the log-mel of a stream equals the offline log-mel of
the whole clip, frame for frame, and a frame leaves as soon as its window has arrived."""

import numpy as np
import pytest

from chorus.audio.mel import log_mel
from experiments.realtime.streaming_mel import StreamingLogMel


def _wave(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(7 * t))
            + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [0, 150, 199, 200, 360, 1280, 16000, 16123])
@pytest.mark.parametrize("chunks", ["one", "80ms", "random"])
def test_streamed_frames_equal_the_offline_log_mel(n, chunks):
    wave = _wave(n, n)
    rng = np.random.default_rng(n)
    if chunks == "one":
        bounds = [0, n]
    elif chunks == "80ms":
        bounds = list(range(0, n, 1280)) + [n]
    else:
        bounds = sorted({0, n, *rng.integers(0, n + 1, 12).tolist()})
    stream, pieces = StreamingLogMel(), []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        got = stream.push(wave[lo:hi])
        # Final = its window [160 f - 200, 160 f + 200) has arrived, no later.
        assert stream.emitted == (max(hi - 200, -160) // 160 + 1 if hi >= 200 else 0)
        pieces.append(got)
    pieces.append(stream.flush())
    got = np.concatenate(pieces)
    want = log_mel(wave)
    assert got.shape == want.shape == (n // 160, 128)
    # Bit-equal but for the FFT's batching: NumPy's pocketfft runs several rows at once with
    # SIMD, so a frame computed in a batch of another size may differ in its last bit.
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert got.size == 0 or np.mean(got == want) > 0.95


def test_frames_are_final_only_once_their_window_arrived():
    stream = StreamingLogMel()
    assert stream.push(np.zeros(199, np.float32)).shape == (0, 128)
    assert stream.push(np.zeros(1, np.float32)).shape == (1, 128)  # frame 0: samples 0..199
    assert stream.push(np.zeros(159, np.float32)).shape == (0, 128)
    assert stream.push(np.zeros(1, np.float32)).shape == (1, 128)  # frame 1: up to 359
    # 80 ms (1280 samples) in: frames whose windows end by 1280 + 360 are final.
    assert stream.push(np.zeros(1280, np.float32)).shape == (8, 128)


def test_misuse_is_a_clear_error():
    stream = StreamingLogMel()
    with pytest.raises(ValueError, match=r"^log-mel stream samples: expected a 1-D array, got "
                                         r"shape \(2, 3\)$"):
        stream.push(np.zeros((2, 3)))
    stream.flush()
    with pytest.raises(ValueError, match=r"push after flush"):
        stream.push(np.zeros(3))
    with pytest.raises(ValueError, match=r"flush after flush"):
        stream.flush()
