"""The codec rejects bad codes and audio with clear errors; its CTC character targets."""

import numpy as np
import pytest
from codec_fixtures import random_codec

from chorus.audio.io import AudioError
from chorus.codec import text


@pytest.fixture(scope="module")
def codec():
    return random_codec()


def test_codec_rejects_bad_codes_and_audio(codec):
    with pytest.raises(ValueError, match=r"codes: length: expected at least 1 code, got 0"):
        codec.decode(np.zeros(0, np.int32))
    with pytest.raises(ValueError, match=r"values: expected codes in \[0, 1000\), got range"):
        codec.decode(np.asarray([1, 1000]))
    with pytest.raises(ValueError, match="dtype: expected integer codes, got float32"):
        codec.decode(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="shape: expected a 1-D array"):
        codec.decode(np.zeros((2, 3), np.int32))
    with pytest.raises(AudioError, match="expected at least"):
        codec.encode(np.zeros(10, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        codec.speaker_embedding(np.full(2000, np.nan, np.float32))
    with pytest.raises(ValueError, match="speaker: expected one of"):
        codec.decode(np.asarray([1, 2]), speaker="nobody")


def test_ctc_text_targets():
    ids = text.encode("ab a")
    assert text.decode(ids) == "ab a"
    # Greedy CTC merges repeats and drops blanks: "a a _ b b _ b" -> "abb".
    a, b = text.encode("a")[0], text.encode("b")[0]
    assert text.ctc_greedy(np.asarray([a, a, 0, b, b, 0, b])) == "abb"
    # Targets are the one normalization's output: digits spelled out, apostrophes dropped.
    assert text.decode(text.encode("It's 42!")) == "its forty two"

