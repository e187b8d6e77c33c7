"""What a 16 kHz wave did with the controls a TTS prompt asks for: pitch, rate, loudness,
voicing, and the change inside an inline-tagged stretch. NumPy + librosa, no model.

    track = analyze(wave)                               # frame tracks, computed once
    m = measure(track, text)                            # Measures(f0, voiced, loudness, ...)
    inline_change(track, "turn on (softly) the light")  # ("(softly)", "loudness", -5.8 dB)
    control_errors(measured, reference)                 # per-control error vs another wave

Definitions (frames are 10 ms, `MeasureConfig.hop_length` samples, not overlapping):
  active    a frame whose energy is within `active_db` of the utterance's loudest frame and
            above `floor_dbfs` absolute: speech, as opposed to silence and pauses. Relative to
            the loudest frame, so scaling a wave by g moves its loudness by exactly 20 log10 g
            and keeps the same frames active.
  loudness  10 log10 of the mean squared sample over the active frames (dBFS; a full-scale
            sine is -3.01 dB); `floor_dbfs` when nothing is active.
  f0        median of librosa.pyin's f0 over its voiced frames, Hz; NaN with fewer than
            `min_voiced_frames` voiced frames (whispered or silent speech has no pitch).
  voiced    the share of active frames pyin calls voiced (whisper: near 0).
  duration  seconds from the first to the last active frame: the speech without leading and
            trailing silence.
  wpm       spoken words (the normalized text: "412" is three words) per minute of duration.
  cps       letters of the normalized text per second of duration: the `rate` control. On the
            corpus it follows eSpeak's rate a little better than wpm (Pearson 0.79 vs 0.77 on
            486 validation records), and between two stretches of one sentence it is unbiased
            where wpm is not (short words vs long ones): mean log ratio 0.03 vs -0.25.

An inline direction ("Can you (loudly) unlock the door?") is measured on its stretch against
the untagged rest. The stretches are found by cutting the speech where the text's characters
put the boundary, moved to the longest pause near it (the corpus joins the stretches with a
0.15 s pause; a tag changes the stretch's rate, so characters alone misplace the cut). A tag
at the start of the text covers all of it: there is no rest, so no change to measure
(compare the whole wave with a reference instead).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from chorus.audio.resample import SAMPLE_RATE
from chorus.audio.text import normalize_text
from chorus.config import check
from experiments.tts.target import spans

CONTROLS = ("pitch", "rate", "loudness", "voicing")
# What each inline direction should move (data_pipelines.corpus_plan._apply_tag): the
# control, and the sign of its change in the tagged stretch against the rest.
TAG_EFFECTS: dict[str, tuple[str, int]] = {
    "(whispering)": ("voicing", -1), "(fast)": ("rate", +1), "(slowly)": ("rate", -1),
    "(high pitch)": ("pitch", +1), "(low pitch)": ("pitch", -1),
    "(loudly)": ("loudness", +1), "(softly)": ("loudness", -1),
}
INLINE_TAG_ORDER = tuple(TAG_EFFECTS)
# The unit of `change` per control.
CHANGE_UNIT = {"pitch": "semitones", "rate": "ln ratio", "loudness": "dB", "voicing": "share"}
# The change each control's tag must at least reach to count as a change (the unit of
# `change`). Two stretches of one plain sentence already differ (intonation, consonants): on
# the corpus' validation records, by a standard deviation of 2.0 semitones, 0.24 in log rate,
# 2.3 dB and 0.26 in voiced share; a tag moves its control by ~3-6 semitones, 0.3-0.4,
# 3.4-5.2 dB and 0.7 (`chorus bench tts-controls` reports both).
MIN_CHANGE = {"pitch": 1.5, "rate": math.log(1.1), "loudness": 1.5, "voicing": 0.4}


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    fmin: float = 50.0  # pyin's search range, Hz: eSpeak's lowest male to highest female
    fmax: float = 600.0
    frame_length: int = 1024  # pyin window: 64 ms, > 2 periods of fmin
    hop_length: int = 160  # 10 ms
    resolution: float = 0.25  # pyin's pitch grid, semitones (0.1, its default, is 4x slower)
    active_db: float = 35.0
    floor_dbfs: float = -70.0
    min_voiced_frames: int = 10  # 100 ms of voicing before a pitch is reported
    min_pause_frames: int = 5  # a silent run this long (50 ms) may separate stretches
    boundary_window: float = 0.25  # share of the speech searched for a pause around a cut

    def __post_init__(self):
        f = "MeasureConfig."
        check(0 < self.fmin < self.fmax < SAMPLE_RATE / 2, f + "fmin/fmax",
              f"0 < fmin < fmax < {SAMPLE_RATE // 2}", (self.fmin, self.fmax))
        check(self.hop_length >= 1 and self.frame_length >= 2 * self.hop_length,
              f + "frame_length/hop_length", "hop >= 1 and frame_length >= 2 hop",
              (self.frame_length, self.hop_length))
        check(self.frame_length * self.fmin >= 2 * SAMPLE_RATE, f + "frame_length",
              f"at least two periods of fmin ({math.ceil(2 * SAMPLE_RATE / self.fmin)} "
              "samples)", self.frame_length)
        check(0 < self.resolution < 1, f + "resolution", "semitones in (0, 1)",
              self.resolution)
        check(self.active_db > 0, f + "active_db", "a positive dB range", self.active_db)
        check(self.floor_dbfs < 0, f + "floor_dbfs", "a negative dBFS level", self.floor_dbfs)
        check(self.min_voiced_frames >= 1, f + "min_voiced_frames", "an int >= 1",
              self.min_voiced_frames)
        check(self.min_pause_frames >= 1, f + "min_pause_frames", "an int >= 1",
              self.min_pause_frames)
        check(0 <= self.boundary_window <= 1, f + "boundary_window", "a share in [0, 1]",
              self.boundary_window)

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / SAMPLE_RATE


DEFAULT = MeasureConfig()


@dataclasses.dataclass(frozen=True, eq=False)
class Track:
    """Per-frame tracks of one wave: energy dBFS, pyin f0 (NaN unvoiced), voiced, active."""

    energy_db: np.ndarray  # [T] float64
    f0: np.ndarray  # [T] float64
    voiced: np.ndarray  # [T] bool
    active: np.ndarray  # [T] bool
    cfg: MeasureConfig

    def __len__(self) -> int:
        return self.energy_db.shape[0]


@dataclasses.dataclass(frozen=True)
class Measures:
    f0: float  # Hz, NaN when unvoiced
    voiced: float  # share of active frames, [0, 1]
    loudness: float  # dBFS over active frames
    duration: float  # seconds of speech
    words: int  # spoken words of the text measured
    wpm: float  # words per minute of `duration` (0 when there is no speech)
    letters: int  # letters of the normalized text
    cps: float  # letters per second of `duration` (0 when there is no speech)


def _check_wave(wave) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"controls: expected a 1-D float 16 kHz wave, got shape {wave.shape} "
                         f"dtype {wave.dtype}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("controls: expected a finite wave, got NaN or Inf samples")
    return wave.astype(np.float64)


def analyze(wave: np.ndarray, cfg: MeasureConfig = DEFAULT) -> Track:
    """The frame tracks of a 16 kHz wave (empty tracks for a wave shorter than one frame)."""
    import librosa

    wave = _check_wave(wave)
    hop = cfg.hop_length
    frames = wave.size // hop
    if frames == 0:
        empty = np.zeros((0,))
        return Track(empty, empty, empty.astype(bool), empty.astype(bool), cfg)
    power = np.mean(wave[:frames * hop].reshape(frames, hop) ** 2, axis=1)
    energy_db = 10.0 * np.log10(np.maximum(power, 1e-20))
    active = (energy_db >= energy_db.max() - cfg.active_db) & (energy_db >= cfg.floor_dbfs)
    # pyin frame i is centered on sample i * hop; energy frame i spans [i hop, (i + 1) hop).
    padded = wave if wave.size >= cfg.frame_length else np.pad(
        wave, (0, cfg.frame_length - wave.size))
    f0, voiced, _ = librosa.pyin(padded, fmin=cfg.fmin, fmax=cfg.fmax, sr=SAMPLE_RATE,
                                 frame_length=cfg.frame_length, hop_length=hop,
                                 resolution=cfg.resolution)
    f0 = np.asarray(f0, np.float64)[:frames]
    voiced = np.asarray(voiced, bool)[:frames]
    if f0.size < frames:  # never with center=True; kept so the tracks always align
        f0 = np.pad(f0, (0, frames - f0.size), constant_values=np.nan)
        voiced = np.pad(voiced, (0, frames - voiced.size))
    return Track(energy_db, f0, voiced, active, cfg)


def spoken_words(text: str) -> tuple[int, int]:
    """(words, letters) of the text as spoken (normalized: numbers in words)."""
    spoken = normalize_text(text)
    return len(spoken.split()), sum(ch.isalpha() for ch in spoken)


def _extent(active: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the active frames, (0, 0) when none."""
    idx = np.flatnonzero(active)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


def measure(track: Track, text: str, ranges: list[tuple[int, int]] | None = None
            ) -> Measures:
    """The measures of the frames in `ranges` ([start, stop) frame ranges; all frames when
    None) of a track, for the words of `text` said there."""
    cfg = track.cfg
    ranges = [(0, len(track))] if ranges is None else ranges
    sel = np.zeros(len(track), bool)
    frames = 0
    for start, stop in ranges:
        sel[start:stop] = True
        first, last = _extent(track.active[start:stop])
        frames += last - first
    active = sel & track.active
    n_active = int(active.sum())
    energy = 10.0 ** (track.energy_db[active] / 10.0)
    loudness = float(10.0 * np.log10(energy.mean())) if n_active else cfg.floor_dbfs
    voiced = sel & track.voiced & np.isfinite(track.f0)
    f0 = (float(np.median(track.f0[voiced])) if voiced.sum() >= cfg.min_voiced_frames
          else math.nan)
    voiced_share = float((voiced & active).sum() / n_active) if n_active else 0.0
    duration = frames * cfg.frame_seconds
    words, letters = spoken_words(text)
    wpm = words / duration * 60.0 if duration > 0 else 0.0
    cps = letters / duration if duration > 0 else 0.0
    return Measures(f0=f0, voiced=voiced_share, loudness=loudness, duration=duration,
                    words=words, wpm=wpm, letters=letters, cps=cps)


def measure_wave(wave: np.ndarray, text: str, cfg: MeasureConfig = DEFAULT) -> Measures:
    return measure(analyze(wave, cfg), text)


# ----------------------------------------------------------------------------- stretches


def _pause_near(track: Track, lo: int, hi: int, expected: int) -> int | None:
    """The middle of the longest inactive run (>= min_pause_frames) inside [lo, hi), the one
    nearest `expected` among equals; None when there is none."""
    quiet = ~track.active[lo:hi]
    best, best_key = None, None
    i = 0
    while i < quiet.size:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < quiet.size and quiet[j]:
            j += 1
        if j - i >= track.cfg.min_pause_frames:
            middle = lo + (i + j) // 2
            key = (j - i, -abs(middle - expected))
            if best_key is None or key > best_key:
                best, best_key = middle, key
        i = j
    return best


def stretch_ranges(track: Track, tagged_text: str) -> list[tuple[str | None, str,
                                                                  tuple[int, int]]]:
    """(tag, text, [start, stop) frames) of each span of the tagged text
    (experiments.tts.target.spans), cut as the module docstring says."""
    pieces = spans(tagged_text)
    first, last = _extent(track.active)
    if not pieces:
        return []
    lengths = np.array([len(p.text) for p in pieces], np.float64)
    shares = np.cumsum(lengths)[:-1] / lengths.sum()
    speech = last - first
    window = int(round(track.cfg.boundary_window * speech))
    cuts, previous = [], first
    for share in shares:
        expected = first + int(round(share * speech))
        lo, hi = max(previous + 1, expected - window), min(last, expected + window + 1)
        cut = _pause_near(track, lo, hi, expected) if lo < hi else None
        cut = expected if cut is None else cut
        cut = min(max(cut, previous), last)
        cuts.append(cut)
        previous = cut
    bounds = [first, *cuts, last]
    return [(p.tag, p.text, (bounds[i], bounds[i + 1])) for i, p in enumerate(pieces)]


def change(control: str, tagged: Measures, rest: Measures) -> float:
    """How much the tagged stretch moved `control` against the rest, in the control's unit:
    semitones of f0, the log ratio of the rates (cps), dB of loudness, the voiced share's
    difference. NaN when either side has no value (no pitch, no speech)."""
    if control == "pitch":
        ok = tagged.f0 > 0 and rest.f0 > 0  # False for NaN
        return 12.0 * math.log2(tagged.f0 / rest.f0) if ok else math.nan
    if control == "rate":
        ok = tagged.cps > 0 and rest.cps > 0
        return math.log(tagged.cps / rest.cps) if ok else math.nan
    if control == "loudness":
        return tagged.loudness - rest.loudness
    if control == "voicing":
        return tagged.voiced - rest.voiced
    raise ValueError(f"control: expected one of {list(CONTROLS)}, got {control!r}")


@dataclasses.dataclass(frozen=True)
class InlineChange:
    tag: str
    control: str  # what the tag moves (TAG_EFFECTS)
    direction: int  # +1 / -1: the way it should move
    change: float  # measured (tagged stretch vs the rest), in the control's unit; may be NaN
    tagged: Measures
    rest: Measures

    @property
    def moved(self) -> bool:
        """The stretch moved the tag's way by at least MIN_CHANGE."""
        return bool(self.direction * self.change >= MIN_CHANGE[self.control])


def inline_change(track: Track, tagged_text: str) -> InlineChange | None:
    """The tagged stretch against the untagged rest; None when the text has no tag or the
    tag covers it all (a tag at the start)."""
    ranges = stretch_ranges(track, tagged_text)
    tags = {t for t, _, _ in ranges if t is not None}
    if not tags or all(t is not None for t, _, _ in ranges):
        return None
    if len(tags) > 1:
        raise ValueError(f"inline_change: expected one inline direction, got {sorted(tags)} "
                         f"in {tagged_text!r}")
    tag = tags.pop()
    control, direction = TAG_EFFECTS[tag]

    def side(is_tagged: bool) -> Measures:
        chosen = [(text, r) for t, text, r in ranges if (t is not None) == is_tagged]
        return measure(track, " ".join(text for text, _ in chosen), [r for _, r in chosen])

    tagged, rest = side(True), side(False)
    return InlineChange(tag, control, direction, change(control, tagged, rest), tagged, rest)


# ----------------------------------------------------------------------------- errors


def control_error(control: str, measured: Measures, reference: Measures) -> float:
    """The error of one control against a reference wave's measures, in [0, 1] (1 = worst):
    relative error of f0 and of the rate, of the RMS amplitude (from the dB difference), the
    absolute difference of the voiced share. Pitch: 0 when neither has a pitch (both
    whispered), 1 when only one has."""
    if control == "pitch":
        a, b = measured.f0, reference.f0
        if math.isnan(a) or math.isnan(b):
            return 0.0 if math.isnan(a) and math.isnan(b) else 1.0
        return min(abs(a - b) / b, 1.0)
    if control == "rate":
        if reference.cps <= 0:
            return 0.0 if measured.cps <= 0 else 1.0
        return min(abs(measured.cps - reference.cps) / reference.cps, 1.0)
    if control == "loudness":
        return min(abs(10.0 ** ((measured.loudness - reference.loudness) / 20.0) - 1.0), 1.0)
    if control == "voicing":
        return min(abs(measured.voiced - reference.voiced), 1.0)
    raise ValueError(f"control: expected one of {list(CONTROLS)}, got {control!r}")


def control_errors(measured: Measures, reference: Measures,
                   controls: tuple[str, ...] = CONTROLS) -> dict[str, float]:
    return {c: control_error(c, measured, reference) for c in controls}


def measure_target(wave: np.ndarray, target, cfg: MeasureConfig = DEFAULT
                   ) -> tuple[Measures, InlineChange | None]:
    """A wave's measures for a SpeechTarget: the whole utterance's, and the tagged stretch's
    change when the target's text has an inline direction."""
    track = analyze(wave, cfg)
    inline = inline_change(track, target.tagged_text) if target.tag else None
    return measure(track, target.text), inline


def adherence(measured: tuple[Measures, InlineChange | None],
              reference: tuple[Measures, InlineChange | None],
              controls: tuple[str, ...] = CONTROLS, tag: bool = True) -> dict[str, float]:
    """Each control's error in [0, 1] against the reference's measures (measure_target of
    both), + "tag" (tag_error; NaN when the target has no inline stretch)."""
    out = control_errors(measured[0], reference[0], controls)
    if tag:
        out["tag"] = tag_error(measured[1], reference[1])
    return out


def tag_error(measured: InlineChange | None, reference: InlineChange | None) -> float:
    """How far short of the reference's change the tagged stretch fell, in [0, 1]: 0 at or
    beyond the reference's change in the tag's direction, 1 for none or the wrong way; the
    reference's change counts as at least MIN_CHANGE. NaN when the target has no inline
    stretch (`reference` None); 1 when the measured wave has no stretch to compare."""
    if reference is None:
        return math.nan
    if measured is None or math.isnan(measured.change):
        return 1.0
    goal = MIN_CHANGE[reference.control]
    if not math.isnan(reference.change):
        goal = max(goal, reference.direction * reference.change)
    reached = reference.direction * measured.change / goal
    return float(min(max(1.0 - reached, 0.0), 1.0))
