"""Long-form transcription (experiments/asr/longform.py): window planning and token stitching
as pure functions against ground truth, then a long clip through the tiny ASR run."""

import dataclasses
import math
from itertools import pairwise

import numpy as np
import pytest

from chorus.config import ConfigError
from experiments.asr.longform import (
    LongformSettings,
    Seam,
    Window,
    find_seam,
    kept_times,
    plan_windows,
    stitch,
    transcribe_clips,
)


@pytest.mark.parametrize("num_frames,max_frames,overlap", [
    (1, 560, 100), (560, 560, 100), (561, 560, 100), (1200, 560, 100), (5000, 560, 100),
    (1000, 100, 0), (1001, 100, 50), (333, 64, 31)])
def test_windows_cover_the_clip_with_the_overlap_and_no_more_windows_than_needed(
        num_frames, max_frames, overlap):
    windows = plan_windows(num_frames, max_frames, overlap)
    assert windows[0].start == 0 and windows[-1].stop == num_frames
    if num_frames <= max_frames:
        assert windows == [Window(0, num_frames)]
        return
    assert all(len(w) == max_frames for w in windows)
    gaps = [a.stop - b.start for a, b in pairwise(windows)]
    assert min(gaps) >= overlap and all(b.start > a.start for a, b in pairwise(windows))
    # one window fewer, each advancing as far as the overlap allows, would not reach the end
    n = len(windows)
    assert max_frames + (n - 2) * (max_frames - overlap) < num_frames


def test_window_planning_rejects_bad_geometry():
    with pytest.raises(ConfigError, match=r"overlap_frames: expected in \[0, 560\), got 560"):
        plan_windows(1000, 560, 560)
    with pytest.raises(ConfigError, match="num_frames: expected an integer >= 1, got 0"):
        plan_windows(0, 560, 100)
    with pytest.raises(ConfigError, match="longform.overlap_seconds: expected at most half"):
        LongformSettings(overlap_seconds=3.0).overlap_frames(560)
    with pytest.raises(ConfigError, match="longform.overlap_seconds: expected a finite"):
        LongformSettings(overlap_seconds=-1.0)
    with pytest.raises(ConfigError, match="longform.batch_size: expected an integer >= 1"):
        LongformSettings(batch_size=0)
    assert LongformSettings(overlap_seconds=1.0).overlap_frames(560) == 100


def test_seam_of_an_exact_overlap_keeps_one_copy():
    left, right = [1, 2, 3, 4, 5, 6], [4, 5, 6, 7, 8]
    seam = find_seam(left, right, max_overlap=6, left_guess=3, right_guess=3)
    assert seam == Seam(left_keep=4, right_skip=1, matches=3)
    assert left[:seam.left_keep] + right[seam.right_skip:] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_seam_tolerates_a_differing_token_at_the_window_edges():
    # left's last token (audio cut mid-word) and right's first differ from the truth 1..8
    left, right = [1, 2, 3, 4, 5, 99], [77, 4, 5, 6, 7, 8]
    seam = find_seam(left, right, max_overlap=8, left_guess=3, right_guess=3)
    assert seam.matches == 2
    assert left[:seam.left_keep] + right[seam.right_skip:] == [1, 2, 3, 4, 5, 6, 7, 8]
    # a differing token inside the overlap: one copy of the overlap all the same
    left, right = [1, 2, 3, 4, 50, 6], [3, 4, 5, 6, 7]
    seam = find_seam(left, right, max_overlap=8, left_guess=4, right_guess=4)
    joined = left[:seam.left_keep] + right[seam.right_skip:]
    assert seam.matches == 3 and joined == [1, 2, 3, 4, 5, 6, 7]


def test_seam_without_an_alignment_cuts_the_overlap_in_its_middle_by_token_rate():
    left, right = [1, 2, 3, 4, 5, 6], [7, 8, 9, 10]
    seam = find_seam(left, right, max_overlap=6, left_guess=2.0, right_guess=4.0)
    assert seam == Seam(left_keep=5, right_skip=2, matches=0)
    # empty windows (silence) join to nothing and to the other side unchanged
    assert find_seam([], [1, 2], max_overlap=4, left_guess=0, right_guess=1.0) == Seam(0, 0, 0)
    assert find_seam([1, 2], [], max_overlap=4, left_guess=1, right_guess=0) == Seam(2, 0, 0)


def test_seam_search_is_bounded_by_the_expected_overlap():
    # "1 2 3" again further back in left: an alignment, but longer than the overlap can be
    left, right = [9, 9, 1, 2, 3, 40, 41], [1, 2, 3, 50, 51, 60]
    far = find_seam(left, right, max_overlap=4, left_guess=2.0, right_guess=2.0)
    assert far == Seam(left_keep=6, right_skip=1, matches=0)  # cut by rate
    near = find_seam(left, right, max_overlap=8, left_guess=2.0, right_guess=2.0)
    assert near == Seam(left_keep=4, right_skip=2, matches=3)  # unbounded, it is taken


def test_stitch_bounds_each_seam_search_by_the_overlap_the_windows_share():
    # 100 of 560 frames overlap: ~2 tokens of each. A repeated word ("7") makes a longer
    # shift agree more often (5 of 9) than the true overlap [20, 21] (2 of 2).
    left, right = [0, 7, 7, 7, 7, 7, 7, 7, 20, 21], [20, 21, 7, 7, 7, 7, 7, 30, 31]
    out = stitch([left, right], [Window(0, 560), Window(460, 1020)])
    assert out.seams == [Seam(left_keep=9, right_skip=1, matches=2)]
    assert out.tokens == left + right[2:]


def test_stitch_of_one_window_is_its_tokens():
    out = stitch([[3, 1, 4]], [Window(0, 300)])
    assert out.tokens == [3, 1, 4] and out.spans == [(0, 3)] and out.seams == []


@pytest.mark.parametrize("seed", range(8))
def test_stitch_recovers_the_sequence_from_overlapping_windows(seed):
    """Ground truth: a token sequence spoken at random times; each window hears the tokens
    inside it, its first and last ones garbled (cut audio). Stitching gives the sequence."""
    rng = np.random.default_rng(seed)
    num_frames, max_frames, overlap = int(rng.integers(1500, 4000)), 560, 120
    spacing = 20  # 5 tokens/s, each at a jittered place on its grid
    truth = [int(t) for t in rng.integers(0, 1000, size=num_frames // spacing)]
    times = (np.arange(len(truth)) + rng.uniform(0.05, 0.95, len(truth))) * spacing
    windows = plan_windows(num_frames, max_frames, overlap)
    pieces = []
    for w in windows:
        heard = [t for t, at in zip(truth, times, strict=True) if w.start <= at < w.stop]
        if w.start > 0:
            heard[0] = 1000 + int(rng.integers(100))
        if w.stop < num_frames:
            heard[-1] = 2000 + int(rng.integers(100))
        pieces.append(heard)
    out = stitch(pieces, windows)
    assert out.tokens == truth
    assert all(s.matches > 0 for s in out.seams)
    kept = [t for p, (lo, hi) in zip(pieces, out.spans, strict=True) for t in p[lo:hi]]
    assert kept == out.tokens


def test_kept_times_split_overlaps_at_their_middles_and_leave_pauses_out():
    windows = plan_windows(1200, 560, 100)  # [0, 560), [460, 1020), [640, 1200)
    assert kept_times(windows) == [(0.0, 5.1), (5.1, 8.3), (8.3, 12.0)]
    assert kept_times([Window(0, 100), Window(150, 300)]) == [(0.0, 1.0), (1.5, 3.0)]


def _speech(num_frames, *quiet):
    speech = np.ones(num_frames, bool)
    for a, b in quiet:
        speech[a:b] = False
    return speech


def test_windows_cut_at_every_pause_and_leave_the_pauses_out():
    # leading / trailing non-speech trimmed; [1300, 1320) is shorter than a pause (25 frames)
    speech = _speech(1500, (0, 30), (400, 440), (900, 950), (1300, 1320), (1480, 1500))
    assert plan_windows(1500, 560, 100, speech) == [Window(30, 400), Window(440, 900),
                                                    Window(950, 1480)]
    assert plan_windows(1500, 560, 100, speech, margin_frames=10) == [
        Window(20, 410), Window(430, 910), Window(940, 1490)]
    assert plan_windows(1500, 560, 100, speech, min_pause_frames=50) == [
        Window(30, 590), Window(340, 900), Window(950, 1480)]  # [30, 900) is 870 frames


def test_speech_longer_than_a_window_between_pauses_is_cut_with_overlap():
    speech = _speech(1500, (700, 750))
    assert plan_windows(1500, 560, 100, speech) == [
        Window(0, 560), Window(140, 700), Window(750, 1310), Window(940, 1500)]
    # no voice activity found: the whole clip with overlap, as without a mask
    assert plan_windows(1500, 560, 100, np.zeros(1500, bool)) == plan_windows(1500, 560, 100)
    assert plan_windows(500, 560, 100, np.zeros(500, bool)) == [Window(0, 500)]  # it fits
    with pytest.raises(ConfigError, match=r"speech: expected shape \(1500,\), got \(10,\)"):
        plan_windows(1500, 560, 100, np.ones(10, bool))


def test_windows_cut_at_a_pause_are_concatenated_not_aligned():
    # the same token on both sides of a pause is said twice, not once
    for second in (Window(100, 200), Window(130, 200)):
        out = stitch([[1, 2], [2, 3]], [Window(0, 100), second])
        assert out.tokens == [1, 2, 2, 3] and out.seams == [Seam(2, 0, 0)]


def test_speech_frames_find_the_silence_between_two_utterances():
    from data_pipelines.synthesis import synthesize
    from experiments.asr.longform import speech_frames

    a, _ = synthesize("turn off the lights", voice="en-us+f3", rate=160)
    wave = np.concatenate([a, np.zeros(8000, np.float32), a])
    speech = speech_frames(wave)
    assert speech.shape == (len(wave) // 160,)
    gap = slice(len(a) // 160 + 5, (len(a) + 8000) // 160 - 5)
    assert not speech[gap].any() and speech[:len(a) // 160].mean() > 0.5
    windows = plan_windows(len(speech), 200, 50, speech)  # each utterance fits in 2 s
    assert len(windows) == 2 and windows[0].stop <= gap.start and windows[1].start >= gap.stop


class MarkerTranscriber:
    """A stand-in decoder with a known right answer: column 0 of a clip's frames holds token
    id + 1 at the frame where the token is spoken (0 elsewhere), columns 1 and 2 the frames
    before and after the frame; "decoding" a window returns the ids spoken inside it, the
    first and last garbled where the window cuts the audio, as a real model's are."""

    max_frames = 560

    class tokenizer:  # noqa: N801 - the attribute a Transcriber has
        @staticmethod
        def decode(ids):
            return " ".join(str(i) for i in ids)

    def __init__(self):
        self.calls = []

    def decode_text_ids(self, clips, mode, batch_size):
        self.calls.append((len(clips), batch_size, mode))
        out = []
        for c in clips:
            ids = [int(v) - 1 for v in c[:, 0] if v > 0]
            if c[0, 1] > 0:  # the window starts after the clip's start
                ids[0] += 5000
            if c[-1, 2] > 0:  # ... ends before the clip's end
                ids[-1] += 6000
            out.append(np.asarray(ids, np.int32))
        return out


def test_transcribe_clips_batches_all_windows_and_stitches_each_clip_to_its_truth():
    rng = np.random.default_rng(0)
    clips, truths = [], []
    for num_frames in (300, 2000, 560, 3333, 1200):
        clip = np.zeros((num_frames, 3), np.float32)
        clip[:, 1] = np.arange(num_frames)
        clip[:, 2] = num_frames - 1 - np.arange(num_frames)
        at = np.arange(7, num_frames, 20)  # a token every 0.2 s
        truth = rng.integers(0, 1000, len(at))
        clip[at, 0] = truth + 1
        clips.append(clip)
        truths.append(truth.tolist())
    fake = MarkerTranscriber()
    settings = LongformSettings(overlap_seconds=1.2, batch_size=3)
    out = list(transcribe_clips(fake, clips, settings, "greedy"))
    assert [i for i, _ in out] == [0, 1, 2, 3, 4]  # in order
    for (_, t), truth, clip in zip(out, truths, clips, strict=True):
        assert t.token_ids.tolist() == truth
        assert t.text == " ".join(map(str, truth))
        assert list(t.windows) == plan_windows(len(clip), 560, 120)
        assert " ".join(s.text for s in t.segments if s.text) == t.text
    windows = sum(len(t.windows) for _, t in out)
    assert [c[0] for c in fake.calls] == [3] * (windows // 3) + ([windows % 3] if windows % 3
                                                                  else [])
    assert {c[1:] for c in fake.calls} == {(3, "greedy")}


@pytest.fixture(scope="module")
def tiny(tiny_asr_run, tiny_asr_corpus):
    """(transcriber, three test-split log-mel clips) of the suite's shared 3-step ASR run."""
    from experiments.asr.regime import eval_examples
    from experiments.asr.settings import asr_settings
    from experiments.asr.transcriber import load_transcriber

    transcriber, run = load_transcriber(str(tiny_asr_run))
    settings = dataclasses.replace(asr_settings(run.config), data_dir=tiny_asr_corpus)
    clips = [np.asarray(ex["audio_features"])[0][np.asarray(ex["audio_mask"])[0]]
             for ex in eval_examples(run.config, settings, "test", 3)]
    return transcriber, clips


def test_decode_text_ids_in_padded_batches_equals_each_clip_alone(tiny, monkeypatch):
    from types import SimpleNamespace

    transcriber, clips = tiny
    rows = transcriber.decode_rows(clips, "greedy", batch_size=2)  # 2 + 1 (padded)
    alone = [transcriber.decode_rows([c], "greedy", batch_size=1)[0] for c in clips]
    for a, b in zip(rows, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    # the 3-step model says one special token to every clip, so the row order is checked with
    # a decoder whose ids are each row's clip length (text ids < 128) and length varies
    calls = []

    def decode(request, mode):
        n = request["audio_mask"][:, 0].sum(-1)
        calls.append(len(n))
        return SimpleNamespace(tokens=np.stack([n % 128] * 6, axis=1), lengths=1 + n % 5)

    monkeypatch.setattr(transcriber, "decode", decode)
    texts = transcriber.decode_text_ids(clips, "greedy", batch_size=2)
    assert [t.tolist() for t in texts] == [[len(c) % 128] * (1 + len(c) % 5) for c in clips]
    assert calls == [2, 2] and len({len(c) for c in clips}) == 3
    request = transcriber.requests(clips[:2], batch_size=3)  # padded: one shape per size
    assert request["prompts"].shape[0] == request["audio_features"].shape[0] == 3
    np.testing.assert_array_equal(request["audio_features"][2], request["audio_features"][1])
    with pytest.raises(ValueError, match=r"clips\[0\]: expected 1 to 640 log-mel frames"):
        transcriber.requests([np.zeros((641, clips[0].shape[1]), np.float32)])


def test_a_long_clip_goes_through_in_windows_stitched_like_its_windows_alone(tiny):
    transcriber, clips = tiny
    long = np.concatenate(clips * 4)  # ~4x the corpus clips: longer than 640 frames
    assert len(long) > transcriber.max_frames
    settings = LongformSettings(overlap_seconds=1.0, batch_size=2)
    out = dict(transcribe_clips(transcriber, [clips[0], long], settings, "greedy"))
    windows = plan_windows(len(long), transcriber.max_frames, 100)
    assert len(out[1].windows) == len(windows) == math.ceil((len(long) - 100) / 540)
    assert len(out[0].windows) == 1
    # reference: each window decoded alone, then stitched
    pieces = [[int(t) for t in transcriber.decode_text_ids([long[w.start:w.stop]], "greedy",
                                                           batch_size=1)[0]]
              for w in windows]
    expected = stitch(pieces, windows).tokens
    assert out[1].token_ids.tolist() == expected
    assert out[1].text == transcriber.tokenizer.decode(expected)
    segs = out[1].segments
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(len(long) / 100)
    assert all(a.end == b.start for a, b in pairwise(segs))
    assert out[0].segments[0].text == out[0].text and out[1].decode_seconds > 0
