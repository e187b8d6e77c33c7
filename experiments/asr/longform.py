"""Long-form transcription: audio longer than the model's context as overlapping windows.

    plan = plan_windows(len(frames), transcriber.max_frames, overlap_frames=100)
    for index, transcript in transcribe_clips(transcriber, [frames, ...], LongformSettings()):
        print(transcript.text, transcript.segments)

The model was trained on clips of at most `train.max_mel_frames` log-mel frames, so a longer
clip is cut into equal windows of that length whose consecutive overlaps are at least
`overlap_seconds` (the windows are spread evenly: no short last window). The windows of all
clips are decoded together in batches of one fixed size (one compile), and consecutive
windows' text tokens are stitched: the tail of window i is aligned with the head of window
i+1 (the suffix/prefix shift with the most agreeing tokens, so a differing token at a seam
still aligns) and the overlap is kept once, cut in its middle, where both windows heard the
audio with context on both sides. Without an alignment the cut falls at the overlap's middle
by each window's token rate. Planning and stitching are pure functions of lists.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Hashable, Iterator, Sequence
from itertools import pairwise

import numpy as np

from chorus.audio.mel import HOP_LENGTH
from chorus.config import check
from chorus.vocab import MEL_FRAMES_PER_SECOND


@dataclasses.dataclass(frozen=True)
class LongformSettings:
    """overlap_seconds: the overlap of consecutive windows cut inside speech; batch_size:
    windows per decode call (the last batch is padded to it, so every call has one shape);
    min_pause_seconds: the least non-speech that a window may end in (plan_windows)."""

    overlap_seconds: float = 1.0
    batch_size: int = 8
    min_pause_seconds: float = 0.25

    def __post_init__(self):
        check(math.isfinite(self.overlap_seconds) and self.overlap_seconds >= 0,
              "longform.overlap_seconds", "a finite number >= 0", self.overlap_seconds)
        check(isinstance(self.batch_size, int) and self.batch_size >= 1, "longform.batch_size",
              "an integer >= 1", self.batch_size)
        check(math.isfinite(self.min_pause_seconds) and self.min_pause_seconds > 0,
              "longform.min_pause_seconds", "a finite number > 0", self.min_pause_seconds)

    def overlap_frames(self, max_frames: int) -> int:
        """The overlap in log-mel frames; it must leave each window something new."""
        frames = round(self.overlap_seconds * MEL_FRAMES_PER_SECOND)
        check(frames <= max_frames // 2, "longform.overlap_seconds",
              f"at most half the model's window, {max_frames / 2 / MEL_FRAMES_PER_SECOND:g} s "
              "(train.max_mel_frames / 2)", self.overlap_seconds)
        return frames


@dataclasses.dataclass(frozen=True)
class Window:
    """Log-mel frames [start, stop) of a clip."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_windows(num_frames: int, max_frames: int, overlap_frames: int,
                 speech: np.ndarray | None = None, min_pause_frames: int = 25,
                 margin_frames: int = 0) -> list[Window]:
    """Windows of at most `max_frames` over a clip of `num_frames`; one when it fits.

    speech: per-frame voice activity (bool [num_frames]) or None. With it, the clip is cut at
    every pause (a run of >= `min_pause_frames` non-speech frames) into speech regions, each
    kept with `margin_frames` of its pauses (at most half of each), and the pauses left out:
    the ASR model was trained on single utterances without silence around them (on the
    reproduce run, 0.05 s of digital silence before and after each test clip takes WER from
    0.45 to 0.59, 0.15 s to 0.85, and a window holding two sentences comes back as one). A
    region (or, with no voice activity found, the whole clip) longer than `max_frames` is cut
    into windows
    overlapping by `overlap_frames` (the last one moved back to end at the region's end with
    the full `max_frames`), whose tokens `stitch` joins."""
    check(max_frames >= 1, "max_frames", "an integer >= 1", max_frames)
    check(0 <= overlap_frames < max_frames, "overlap_frames", f"in [0, {max_frames})",
          overlap_frames)
    check(num_frames >= 1, "num_frames", "an integer >= 1", num_frames)
    if num_frames <= max_frames:
        return [Window(0, num_frames)]
    regions = [(0, num_frames)]
    if speech is not None:
        speech = np.asarray(speech, bool)
        check(speech.shape == (num_frames,), "speech", f"shape ({num_frames},)", speech.shape)
        if speech.any():
            first = int(np.argmax(speech))
            last = num_frames - int(np.argmax(speech[::-1]))
            inner = [(a, b) for a, b in _pauses(speech, min_pause_frames) if first < a < last]
            keep = [min(margin_frames, (b - a) // 2) for a, b in inner]
            starts = [max(0, first - margin_frames)] + [b - k for (_, b), k in zip(inner, keep,
                                                                                  strict=True)]
            stops = [a + k for (a, _), k in zip(inner, keep, strict=True)]
            regions = list(zip(starts, [*stops, min(num_frames, last + margin_frames)],
                               strict=True))
    windows = []
    for r0, r1 in regions:
        windows += _overlapped(r0, r1, max_frames, overlap_frames)
    return windows


def _overlapped(start: int, stop: int, max_frames: int, overlap_frames: int) -> list[Window]:
    """[start, stop) in windows of max_frames overlapping by overlap_frames (the last moved
    back to end at stop)."""
    windows = []
    while stop - start > max_frames:
        windows.append(Window(start, start + max_frames))
        start += max_frames - overlap_frames
    if windows:
        start = stop - max_frames
    return [*windows, Window(start, stop)]


def _pauses(speech: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """[a, b) runs of >= min_frames non-speech frames."""
    quiet = np.concatenate([[False], ~speech, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(quiet))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_frames]


def region_frames(num_frames: int, regions) -> np.ndarray:
    """bool [num_frames] of log-mel frames inside speech regions [(start, end) samples] (the
    speech gate's: opened by min_speech_ms of speech, so a click makes none)."""
    mask = np.zeros(num_frames, bool)
    for start, end in regions:
        mask[start // HOP_LENGTH: -(-end // HOP_LENGTH)] = True
    return mask


def speech_frames(wave: np.ndarray) -> np.ndarray:
    """Voice activity of each 10 ms log-mel frame of a 16 kHz wave (bool [len(wave) // 160]),
    by the realtime session's detector (WebRTC VAD + a spectral-flatness gate)."""
    from chorus.audio.vad import VadConfig, VoiceActivityDetector

    vad = VoiceActivityDetector(VadConfig(frame_ms=10))
    hop = vad.config.frame_samples
    return np.array([vad.frame_is_speech(wave[i * hop:(i + 1) * hop])
                     for i in range(len(wave) // hop)], bool)


@dataclasses.dataclass(frozen=True)
class Seam:
    """How two consecutive windows' tokens join: the first `left_keep` tokens of the left one,
    then the right one's from `right_skip` on. `matches`: agreeing tokens of the aligned
    overlap (0: none aligned; the cut is the overlap's middle by token rate)."""

    left_keep: int
    right_skip: int
    matches: int


def find_seam(left: Sequence[Hashable], right: Sequence[Hashable], *, max_overlap: int,
              left_guess: float, right_guess: float) -> Seam:
    """The seam of `left` (window i's tokens) and `right` (window i+1's).

    Candidate overlaps are k = 1..max_overlap tokens: left[-k:] against right[:k] position by
    position. One is valid when at least half its positions agree (so one differing token at
    the seam is tolerated); the valid one with the most agreeing tokens wins, the shorter on a
    tie. The overlap is kept once: left's first k//2 of it, right's rest. With no valid k the
    cut is by rate: left drops half its `left_guess` tokens expected in the overlap, right
    skips half its `right_guess`."""
    best_m, best_k = 0, 0
    for k in range(1, min(len(left), len(right), max_overlap) + 1):
        m = sum(a == b for a, b in zip(left[len(left) - k:], right[:k], strict=True))
        if 2 * m >= k and m > best_m:
            best_m, best_k = m, k
    if best_k:
        half = best_k // 2
        return Seam(len(left) - best_k + half, half, best_m)
    keep = min(len(left), max(0, len(left) - round(left_guess / 2)))
    return Seam(keep, min(len(right), max(0, round(right_guess / 2))), 0)


@dataclasses.dataclass(frozen=True)
class Stitched:
    """tokens: the stitched sequence; spans: for each window, the [lo, hi) of its tokens that
    were kept (in order, they concatenate to `tokens`); seams: one per consecutive pair."""

    tokens: list
    spans: list[tuple[int, int]]
    seams: list[Seam]


def stitch(pieces: Sequence[Sequence[Hashable]], windows: Sequence[Window]) -> Stitched:
    """Joins the windows' token sequences (window i's tokens: pieces[i]) at their seams.

    The search of each seam is bounded by the overlap's expected token count (each window's
    tokens per frame times the overlap's frames): up to twice the larger guess plus 2, so a
    word repeated further away is not taken for the overlap."""
    check(len(pieces) == len(windows) and len(pieces) >= 1, "pieces",
          f"one token sequence per window ({len(windows)})", len(pieces))
    seams = []
    for i in range(len(pieces) - 1):
        overlap = windows[i].stop - windows[i + 1].start
        if overlap <= 0:  # cut at a pause: nothing heard twice
            seams.append(Seam(len(pieces[i]), 0, 0))
            continue
        lg = len(pieces[i]) * overlap / len(windows[i])
        rg = len(pieces[i + 1]) * overlap / len(windows[i + 1])
        seams.append(find_seam(pieces[i], pieces[i + 1], max_overlap=2 * math.ceil(max(lg, rg))
                               + 2, left_guess=lg, right_guess=rg))
    spans, tokens = [], []
    for i, piece in enumerate(pieces):
        lo = seams[i - 1].right_skip if i > 0 else 0
        # lo <= len // 2 <= hi: a seam takes at most half a window's tokens from its side
        hi = seams[i].left_keep if i < len(seams) else len(piece)
        spans.append((lo, hi))
        tokens.extend(piece[lo:hi])
    return Stitched(tokens, spans, seams)


def kept_times(windows: Sequence[Window]) -> list[tuple[float, float]]:
    """Seconds [start, end) each window stands for after stitching: its own span, except
    that an overlap with a neighbour is split at its middle (where the token cut is too, so a
    segment's text and time agree to within a word or so at such a seam). Pauses left out
    between windows belong to no segment."""
    lo = [w.start for w in windows]
    hi = [w.stop for w in windows]
    for i, (p, w) in enumerate(pairwise(windows)):
        if p.stop > w.start:
            hi[i] = lo[i + 1] = (w.start + p.stop) / 2
    return [(a / MEL_FRAMES_PER_SECOND, b / MEL_FRAMES_PER_SECOND)
            for a, b in zip(lo, hi, strict=True)]


@dataclasses.dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclasses.dataclass(frozen=True)
class Transcript:
    """One clip's stitched transcript. decode_seconds: the clip's share of the wall time of
    the batches its windows were in (each batch's time split evenly over its real windows)."""

    text: str
    token_ids: np.ndarray
    segments: tuple[Segment, ...]
    windows: tuple[Window, ...]
    seams: tuple[Seam, ...]
    decode_seconds: float
    pieces: tuple[np.ndarray, ...] = ()  # each window's decoded text ids
    spans: tuple[tuple[int, int], ...] = ()  # the [lo, hi) of each piece that was kept


def transcribe_clips(transcriber, clips: Sequence[np.ndarray], settings: LongformSettings,
                     mode: str | None = None, speech: Sequence[np.ndarray | None] | None = None,
                     ) -> Iterator[tuple[int, Transcript]]:
    """(index, Transcript) of each log-mel clip [T, n_mels] of any length, in order, each as
    soon as its last window is decoded. speech: each clip's voice activity per frame
    (speech_frames) or None, for cutting at pauses. All clips' windows go through
    `transcriber.decode_text_ids` in batches of `settings.batch_size`."""
    overlap = settings.overlap_frames(transcriber.max_frames)
    pause = max(1, round(settings.min_pause_seconds * MEL_FRAMES_PER_SECOND))
    speech = [None] * len(clips) if speech is None else speech
    check(len(speech) == len(clips), "speech", f"one entry per clip ({len(clips)})",
          len(speech))
    plans = [plan_windows(len(c), transcriber.max_frames, overlap, s, pause)
             for c, s in zip(clips, speech, strict=True)]
    jobs = [(i, w) for i, plan in enumerate(plans) for w in plan]
    ids: dict[int, list[np.ndarray]] = {i: [] for i in range(len(clips))}
    seconds = [0.0] * len(clips)
    done = 0
    for b in range(0, len(jobs), settings.batch_size):
        batch = jobs[b:b + settings.batch_size]
        start = time.perf_counter()
        out = transcriber.decode_text_ids([clips[i][w.start:w.stop] for i, w in batch], mode,
                                          settings.batch_size)
        share = (time.perf_counter() - start) / len(batch)
        for (i, _), row in zip(batch, out, strict=True):
            ids[i].append(row)
            seconds[i] += share
        while done < len(clips) and len(ids[done]) == len(plans[done]):
            yield done, _transcript(transcriber.tokenizer, ids.pop(done), plans[done],
                                    seconds[done])
            done += 1


def _transcript(tokenizer, pieces, windows, seconds) -> Transcript:
    joined = stitch([[int(t) for t in p] for p in pieces], windows)
    segments = tuple(Segment(round(a, 3), round(b, 3), tokenizer.decode(p[lo:hi]))
                     for p, (lo, hi), (a, b) in zip(pieces, joined.spans,
                                                    kept_times(windows),
                                                    strict=True))
    return Transcript(tokenizer.decode(joined.tokens), np.asarray(joined.tokens, np.int32),
                      segments, tuple(windows), tuple(joined.seams), seconds,
                      tuple(np.asarray(p, np.int32) for p in pieces), tuple(joined.spans))


def transcript_words(transcriber, frames: np.ndarray, transcript: Transcript,
                     batch_size: int = 8) -> list[dict]:
    """[{"word", "start", "end"}] (seconds in the whole clip) of a stitched transcript: each
    window's decoded tokens are force-aligned to that window's CTC posteriors
    (`Transcriber.aligned_words`), and the words of the tokens it kept are shifted by the
    window's start. A window whose text the CTC frames cannot hold gives no words."""
    clips = [frames[w.start:w.stop] for w in transcript.windows]
    aligned = transcriber.aligned_words(clips, list(transcript.pieces),
                                        keep=list(transcript.spans), batch_size=batch_size)
    words = []
    for w, row in zip(transcript.windows, aligned, strict=True):
        offset = w.start / MEL_FRAMES_PER_SECOND
        words += [{**x, "start": round(x["start"] + offset, 3),
                   "end": round(x["end"] + offset, 3)} for x in row or []]
    return words
