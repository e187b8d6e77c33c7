"""experiments/tts/controls.py: each measurement against ground truth — exact formulas on
synthetic tones, and eSpeak audio synthesized here with known controls."""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from chorus.audio.resample import SAMPLE_RATE
from chorus.config import ConfigError
from data_pipelines import synthesis
from data_pipelines.synthesis import SEGMENT_PAUSE_SECONDS
from experiments.tts import controls as C

# eSpeak's samples depend on what its process spoke before (data_pipelines/espeak.py): in the
# whole suite a stretch came out unvoiced that this module alone measures fine. So this module
# speaks in a worker process of its own: the same calls in the same order, whatever else the
# suite synthesized.
_SPEAKER: list[ProcessPoolExecutor] = []


def synthesize(*args, **kwargs):
    if not _SPEAKER:
        _SPEAKER.append(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
    return _SPEAKER[0].submit(synthesis.synthesize, *args, **kwargs).result()


@pytest.fixture(autouse=True, scope="module")
def _speaker_process():
    yield
    while _SPEAKER:
        _SPEAKER.pop().shutdown()

TEXT = "Turn left at the bank and wait for me there."


def tone(freq: float, seconds: float, amplitude: float, lead: float = 0.0,
         tail: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    body = amplitude * np.sin(2 * np.pi * freq * t)
    return np.concatenate([np.zeros(int(lead * SAMPLE_RATE)), body,
                           np.zeros(int(tail * SAMPLE_RATE))]).astype(np.float32)


def join(*waves: np.ndarray) -> np.ndarray:
    """Waves joined by the corpus' pause (data_pipelines.synthesis.synthesize_segments)."""
    pause = np.zeros(int(SEGMENT_PAUSE_SECONDS * SAMPLE_RATE), np.float32)
    out = [waves[0]]
    for w in waves[1:]:
        out += [pause, w]
    return np.concatenate(out)


@pytest.mark.parametrize("freq", [110.0, 220.0, 330.0])
def test_pyin_f0_of_a_pure_tone_within_one_percent(freq):
    # Silence around the tone: its frames are unvoiced (no f0), left out of the median.
    m = C.measure_wave(tone(freq, 1.0, 0.3, lead=0.3, tail=0.3), "a")
    # pyin's 0.25-semitone grid is 1.45 % wide: the nearest grid point is within 0.73 %.
    assert abs(m.f0 - freq) / freq < 0.01
    assert m.voiced > 0.95 and m.duration == pytest.approx(1.0, abs=0.011)


def test_loudness_and_duration_are_the_reference_formulas_on_a_sine():
    # 200 Hz = two whole periods per 10 ms frame, so every frame of the tone holds A^2 / 2
    # exactly and the silence around it is inactive: loudness = 20 log10(A / sqrt 2).
    a = 0.25
    wave = tone(200.0, 1.0, a, lead=0.5, tail=0.3)
    m = C.measure_wave(wave, "one two three")
    body = wave[int(0.5 * SAMPLE_RATE):int(1.5 * SAMPLE_RATE)].astype(np.float64)
    assert m.loudness == pytest.approx(10 * np.log10(np.mean(body ** 2)), abs=1e-9)
    assert m.loudness == pytest.approx(20 * np.log10(a / np.sqrt(2)), abs=1e-5)  # fp32 tone
    assert m.duration == pytest.approx(1.0, abs=1e-12)  # leading / trailing silence dropped
    assert m.wpm == pytest.approx(3 / 1.0 * 60, abs=1e-9)
    assert m.cps == pytest.approx(len("onetwothree") / 1.0, abs=1e-9)
    # A gain moves the loudness by exactly its dB and keeps the same frames active.
    loud = C.measure_wave(wave * 0.5, "one two three")
    assert loud.loudness - m.loudness == pytest.approx(20 * np.log10(0.5), abs=1e-6)
    assert loud.duration == m.duration


def test_an_empty_or_silent_wave_has_no_pitch_no_speech_and_the_floor_loudness():
    for wave in (np.zeros(0, np.float32), np.zeros(80, np.float32), np.zeros(16000, np.float32)):
        m = C.measure_wave(wave, "hello there")
        assert math.isnan(m.f0) and m.voiced == 0.0 and m.duration == 0.0 and m.wpm == 0.0
        assert m.loudness == C.DEFAULT.floor_dbfs


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="1-D float 16 kHz wave"):
        C.analyze(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="finite"):
        C.analyze(np.full(1000, np.nan, np.float32))
    with pytest.raises(ConfigError, match="MeasureConfig.fmin/fmax"):
        C.MeasureConfig(fmin=500.0, fmax=100.0)
    with pytest.raises(ConfigError, match="MeasureConfig.frame_length"):
        C.MeasureConfig(fmin=20.0)


def test_espeak_f0_rises_with_pitch_wpm_with_rate_loudness_with_volume():
    f0 = [C.measure_wave(synthesize(TEXT, "en-us", 175, p, 100)[0], TEXT).f0
          for p in (20, 50, 80)]
    assert f0[0] < f0[1] < f0[2] and f0[2] / f0[0] > 1.4  # measured 77.6 -> 139 Hz
    rates = [C.measure_wave(synthesize(TEXT, "en-us", r, 50, 100)[0], TEXT)
             for r in (120, 175, 260)]
    # eSpeak's rate is the speaking time's inverse: within 10 % of proportional.
    for field in ("wpm", "cps"):
        got = [getattr(m, field) for m in rates]
        assert got[0] < got[1] < got[2]
        assert got[2] / got[0] == pytest.approx(260 / 120, rel=0.1)
    loud = [C.measure_wave(synthesize(TEXT, "en-us", 175, 50, v)[0], TEXT).loudness
            for v in (50, 100, 180)]
    # eSpeak's volume scales the amplitude: within 0.5 dB of 20 log10 of the ratio.
    assert loud[1] - loud[0] == pytest.approx(20 * math.log10(2.0), abs=0.5)
    assert loud[2] - loud[1] == pytest.approx(20 * math.log10(1.8), abs=0.5)


def test_whisper_has_no_voicing_and_no_pitch():
    whisper = C.measure_wave(synthesize(TEXT, "en-us+whisper")[0], TEXT)
    plain = C.measure_wave(synthesize(TEXT, "en-us")[0], TEXT)
    assert whisper.voiced < 0.1 < 0.6 < plain.voiced
    assert math.isnan(whisper.f0) and not math.isnan(plain.f0)


def test_stretches_are_cut_at_the_pause_between_them():
    first = synthesize("Can you", "en-us", 175, 50, 100, seed=0)[0]
    second = synthesize("unlock the blue door?", "en-us", 260, 50, 100, seed=1)[0]
    track = C.analyze(join(first, second))
    ranges = C.stretch_ranges(track, "Can you (fast) unlock the blue door?")
    assert [(t, text) for t, text, _ in ranges] == [(None, "Can you"),
                                                   ("(fast)", "unlock the blue door?")]
    junction = (first.size + SEGMENT_PAUSE_SECONDS * SAMPLE_RATE / 2) / C.DEFAULT.hop_length
    # The pause is 15 frames + the pieces' 5-frame edge margins: the cut is in it.
    assert abs(ranges[0][2][1] - junction) <= 10
    assert ranges[0][2][1] == ranges[1][2][0]


@pytest.mark.parametrize("tag, changes", [
    ("(softly)", {"volume": 50}), ("(loudly)", {"volume": 150}),
    ("(fast)", {"rate": 235}), ("(slowly)", {"rate": 125}),
    ("(high pitch)", {"pitch": 75}), ("(low pitch)", {"pitch": 25}),
    ("(whispering)", {"voice": "en-us+whisper"}),
])
def test_inline_change_moves_the_way_of_the_tag(tag, changes):
    base = {"voice": "en-us", "rate": 175, "pitch": 50, "volume": 100}
    first = synthesize("Can you tell me", **base, seed=0)[0]
    second = synthesize("where the station is?", **{**base, **changes}, seed=1)[0]
    text = f"Can you tell me {tag} where the station is?"
    got = C.inline_change(C.analyze(join(first, second)), text)
    control, direction = C.TAG_EFFECTS[tag]
    assert (got.tag, got.control, got.direction) == (tag, control, direction)
    assert got.moved, got
    # No change (both stretches with the base controls) is not a move.
    flat = synthesize("where the station is?", **base, seed=1)[0]
    still = C.inline_change(C.analyze(join(first, flat)), text)
    assert not (control != "rate" and still.moved), still  # rates differ by the words said


def test_a_tag_at_the_start_or_none_has_no_inline_change():
    track = C.analyze(synthesize(TEXT)[0])
    assert C.inline_change(track, TEXT) is None
    assert C.inline_change(track, "(softly) " + TEXT) is None


def _m(**kw) -> C.Measures:
    base = {"f0": 100.0, "voiced": 0.8, "loudness": -20.0, "duration": 2.0, "words": 10,
            "wpm": 300.0, "letters": 40, "cps": 20.0}
    return C.Measures(**{**base, **kw})


def test_control_errors_by_hand():
    ref = _m()
    got = _m(f0=110.0, cps=16.0, wpm=1.0, loudness=-26.0, voiced=0.5)  # rate reads cps
    e = C.control_errors(got, ref)
    assert e["pitch"] == pytest.approx(0.1, abs=1e-12)
    assert e["rate"] == pytest.approx(0.2, abs=1e-12)
    assert e["loudness"] == pytest.approx(1 - 10 ** (-6 / 20), abs=1e-12)  # 0.4988
    assert e["voicing"] == pytest.approx(0.3, abs=1e-12)
    assert C.control_errors(ref, ref) == dict.fromkeys(C.CONTROLS, 0.0)
    assert C.control_error("pitch", _m(f0=500.0), ref) == 1.0  # capped
    assert C.control_error("pitch", _m(f0=math.nan), _m(f0=math.nan)) == 0.0  # both whispered
    assert C.control_error("pitch", _m(f0=math.nan), ref) == 1.0
    with pytest.raises(ValueError, match="control: expected one of"):
        C.control_error("speed", ref, ref)


def test_tag_error_by_hand():
    def change(value, control="loudness", direction=-1):
        return C.InlineChange("(softly)", control, direction, value, _m(), _m())

    ref = change(-6.0)
    assert C.tag_error(change(-6.0), ref) == 0.0
    assert C.tag_error(change(-9.0), ref) == 0.0  # beyond the reference: no error
    assert C.tag_error(change(-3.0), ref) == pytest.approx(0.5, abs=1e-12)
    assert C.tag_error(change(+2.0), ref) == 1.0  # the wrong way
    assert C.tag_error(None, ref) == 1.0 and math.isnan(C.tag_error(change(-1.0), None))
    # A reference that barely moved counts as MIN_CHANGE (1.5 dB).
    assert C.tag_error(change(-0.5), change(-0.1)) == pytest.approx(
        1 - 0.5 / C.MIN_CHANGE["loudness"], abs=1e-12)


# ----------------------------------------------------------------------------- the benchmark


def test_benchmark_statistics_against_scipy_and_by_hand():
    from scipy.stats import pearsonr, spearmanr

    from experiments.benchmarks.tts_controls import auc_lower, pearson, spearman

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(20), rng.standard_normal(20)
    y[3] = y[4]  # a tie
    assert pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
    # Pairs (0, 1), (0, 2), (1, 2) lower and (1, 1) tied: 3.5 / 4; then 2 of 4 lower.
    assert auc_lower([0.0, 1.0], [1.0, 2.0]) == pytest.approx(0.875, abs=1e-12)
    assert auc_lower([0.0, 3.0], [1.0, 2.0]) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def _target(text, voice="en-us", rate=175, pitch=50, volume=100, tagged=None, id="t"):
    from experiments.tts.target import SpeechTarget

    return SpeechTarget(id=id, text=text, tagged_text=tagged or text, instruction="",
                        voice=voice, speaker_id=0, rate=rate, pitch=pitch, volume=volume)


def test_validation_benchmark_finds_known_espeak_controls():
    from experiments.benchmarks.tts_controls import validate

    records = []
    for p in (20, 40, 60, 80):
        records.append((_target(TEXT, pitch=p), synthesize(TEXT, "en-us", 175, p, 100)[0]))
    for r in (120, 200, 280):
        records.append((_target(TEXT, rate=r), synthesize(TEXT, "en-us", r, 50, 100)[0]))
    for v in (50, 150):
        records.append((_target(TEXT, volume=v), synthesize(TEXT, "en-us", 175, 50, v)[0]))
    records.append((_target(TEXT, voice="en-us+whisper"),
                    synthesize(TEXT, "en-us+whisper")[0]))
    # A tag at the start: counted with the tag's parameters (rate 175 + 60).
    records.append((_target(TEXT, tagged="(fast) " + TEXT), synthesize(TEXT, rate=235)[0]))
    first = synthesize("Can you tell me", seed=0)[0]
    soft = synthesize("where the station is?", volume=50, seed=1)[0]
    records.append((_target("Can you tell me where the station is?",
                            tagged="Can you tell me (softly) where the station is?"),
                    join(first, soft)))
    res = validate(records)
    assert (res["records"], res["utterance_records"]) == (12, 11)
    corr = {c["measure"]: c for c in res["correlations"]}
    # Pearson: most rows share a parameter's default value, ties that hold Spearman down.
    # Measured 0.993, 0.999 and 0.934.
    assert corr["log f0 vs pitch (within variant)"]["pearson"] > 0.95
    assert corr["cps vs rate (the rate control)"]["pearson"] > 0.95
    assert corr["loudness dBFS vs 20 log10 volume"]["pearson"] > 0.9
    assert res["voicing"]["auc_whisper_lower"] == 1.0 and res["voicing"]["whisper_n"] == 1
    tags = {t["tag"]: t for t in res["tags"]}
    assert tags["(softly)"]["n"] == 1 and tags["(softly)"]["moved_share"] == 1.0
    assert tags["(softly)"]["mean_change"] < -3.0
    assert all(t["n"] == 0 for name, t in tags.items() if name != "(softly)")


def test_chorus_bench_tts_controls_writes_json_and_markdown(tiny_asr_corpus, tmp_path):
    import json

    from chorus import cli

    out = tmp_path / "bench"
    assert cli.main(["bench", "tts-controls", "--data", tiny_asr_corpus, "--split",
                     "validation", "--examples", "4", "--out", str(out)]) == 0
    results = json.loads((out / "tts_controls.json").read_text())
    assert results["header"]["examples"] == 4 and results["results"]["records"] == 4
    assert "| cps vs rate (the rate control) |" in (out / "tts_controls.md").read_text()
