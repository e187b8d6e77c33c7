"""The generalization splits of the corpus (data_pipelines.corpus_plan): test_voices speaks
only in voices no other split uses, test_prosody only outside the training rate / pitch
ranges; both draw their texts like `test`; a corpus made before them names what is missing."""

import itertools
import json
import os
import shutil

import pytest

from data_pipelines.corpus_plan import (
    HELD_OUT_PROSODY_SPLIT,
    HELD_OUT_VOICES_SPLIT,
    SPLITS,
    CorpusConfig,
    held_out_voices,
    spec_stream,
    training_voices,
)
from data_pipelines.text_generator import TEXT_SPLITS, SentenceGenerator
from data_pipelines.voices import ACCENTS, VARIANTS, VOICES, get_voice

CONFIG = CorpusConfig(seed=3)
SHARDS, PER_SHARD = 3, 200  # specs read per split


def _specs(config: CorpusConfig, split: str, shards: int = SHARDS, n: int = PER_SHARD):
    return [s for i in range(shards) for s in itertools.islice(spec_stream(config, split, i), n)]


@pytest.fixture(scope="module")
def specs():
    return {split: _specs(CONFIG, split) for split in SPLITS}


def _inside(value: int, lo_hi) -> bool:
    return lo_hi[0] <= value <= lo_hi[1]


def test_splits_keep_the_text_splits_first_in_order():
    # a split's index seeds its spec streams: the old splits' streams must keep theirs
    assert SPLITS[:4] == TEXT_SPLITS == ("train", "validation", "test", "test_compositional")
    assert SPLITS[4:] == (HELD_OUT_VOICES_SPLIT, HELD_OUT_PROSODY_SPLIT) == (
        "test_voices", "test_prosody")
    assert sum(CorpusConfig().split_fractions.values()) == pytest.approx(1.0)


def test_held_out_voices_are_every_voice_of_a_held_out_accent_or_variant():
    c = CorpusConfig(held_out_accents=("en-029",), held_out_variants=("m1", "klatt"))
    expected = {f"en-029+{v}" if v else "en-029" for v in VARIANTS}
    expected |= {f"{a}+{v}" for a in ACCENTS for v in ("m1", "klatt")}
    assert {v.name for v in held_out_voices(c)} == expected
    assert len(expected) == 21 + 7 * 2
    train = {v.name for v in training_voices(c)}
    assert not train & expected and train | expected == {v.name for v in VOICES}
    default = CorpusConfig()
    assert len(held_out_voices(default)) == 35 and len(training_voices(default)) == 133


def test_no_other_split_ever_speaks_in_a_held_out_voice(specs):
    held = {v.name for v in held_out_voices(CONFIG)}
    whispered = 0
    for split, stream in specs.items():
        spoken = {seg.voice for s in stream for seg in s.segments} | {s.voice for s in stream}
        if split == HELD_OUT_VOICES_SPLIT:
            assert spoken <= held
            assert {s.voice for s in stream} == held  # 600 draws reach all 35 voices
        else:
            assert not spoken & held, (split, sorted(spoken & held))
        whispered += sum(seg.voice != s.voice for s in stream for seg in s.segments)
        assert all(s.split == split and s.uid.startswith(split + "-") for s in stream)
    assert whispered > 0  # the "(whispering)" tag's voice switch was exercised
    # test_voices still carries inline tags, whispering included (for a held-out accent)
    tagged = [s for s in specs[HELD_OUT_VOICES_SPLIT] if s.tagged_text != s.text]
    assert tagged and any(seg.voice != s.voice for s in tagged for seg in s.segments)


def test_prosody_split_is_outside_the_training_ranges_and_the_others_inside(specs):
    c = CONFIG
    for split, stream in specs.items():
        if split == HELD_OUT_PROSODY_SPLIT:
            continue
        assert all(_inside(s.rate, c.rate_range) and _inside(s.pitch, c.pitch_range)
                   and _inside(s.volume, c.volume_range) for s in stream), split
    stream = specs[HELD_OUT_PROSODY_SPLIT]
    kinds = set()
    for s in stream:
        rate_out = any(_inside(s.rate, r) for r in c.prosody_rate_ranges)
        pitch_out = any(_inside(s.pitch, r) for r in c.prosody_pitch_ranges)
        assert rate_out or _inside(s.rate, c.rate_range)
        assert pitch_out or _inside(s.pitch, c.pitch_range)
        assert rate_out or pitch_out
        assert _inside(s.volume, c.volume_range)
        kinds.add((rate_out, pitch_out))
        # no inline tags: every segment is spoken at the drawn controls
        assert s.tagged_text == s.text and len(s.segments) == 1
        seg = s.segments[0]
        assert (seg.voice, seg.rate, seg.pitch, seg.volume) == (s.voice, s.rate, s.pitch,
                                                                s.volume)
    assert kinds == {(True, False), (False, True), (True, True)}
    # both sides of each range are reached
    assert {s.rate < c.rate_range[0] for s in stream if s.rate not in range(130, 211)} == {
        True, False}
    assert {s.pitch < c.pitch_range[0] for s in stream if s.pitch not in range(25, 76)} == {
        True, False}
    held = {v.name for v in held_out_voices(c)}
    assert not {s.voice for s in stream} & held


def test_new_splits_draw_their_texts_like_test(specs):
    gen = SentenceGenerator(CONFIG.text)
    for split in (HELD_OUT_VOICES_SPLIT, HELD_OUT_PROSODY_SPLIT):
        stream = specs[split]
        dialogue = [s for s in stream if s.category == "dialogue"]
        assert 0 < len(dialogue) < len(stream)
        for s in stream:
            key = s.text + s.persona if s.category == "dialogue" else s.text
            assert gen.split_of_key(key) == "test", (split, s.text)
    # a random sentence lands in the test bucket only ~5% of the time: the check can fail
    train_texts = [s.text for s in specs["train"] if s.category != "dialogue"]
    assert sum(gen.split_of_key(t) == "test" for t in train_texts) == 0


def test_streams_are_deterministic_from_the_config():
    for split in (HELD_OUT_VOICES_SPLIT, HELD_OUT_PROSODY_SPLIT):
        a, b = _specs(CONFIG, split, 2, 30), _specs(CorpusConfig(seed=3), split, 2, 30)
        assert a == b
        assert a != _specs(CorpusConfig(seed=4), split, 2, 30)
    other = CorpusConfig(seed=3, held_out_accents=("en-029",), held_out_variants=("m1",))
    assert {s.voice for s in _specs(other, HELD_OUT_VOICES_SPLIT, 1, 100)} <= {
        v.name for v in held_out_voices(other)}
    assert {get_voice(s.voice).accent for s in _specs(other, "train", 1, 100)} == set(
        ACCENTS) - {"en-029"}


@pytest.mark.parametrize("changes, message", [
    ({"held_out_accents": ("en-mars",)}, r"held_out_accents: expected distinct names"),
    ({"held_out_variants": ("f4", "f4")}, r"held_out_variants: expected distinct names"),
    ({"held_out_variants": ("whisperf",)}, r"held_out_variants: expected none of"),
    ({"held_out_accents": (), "held_out_variants": ()},
     r"held_out_accents/held_out_variants: expected at least one"),
    ({"held_out_accents": tuple(ACCENTS)}, r"held_out_accents: expected at least one accent"),
    ({"prosody_rate_ranges": ((95, 135),)}, r"prosody_rate_ranges: .*outside the training"),
    ({"prosody_rate_ranges": ((60, 100),)}, r"prosody_rate_ranges: .*within eSpeak's"),
    ({"prosody_pitch_ranges": ()}, r"prosody_pitch_ranges: expected"),
    ({"prosody_pitch_ranges": ((90, 80),)}, r"prosody_pitch_ranges: expected"),
    ({"pitch_range": (10, 90)}, r"prosody_pitch_ranges: .*training range \(10, 90\)"),
    ({"split_fractions": {"train": 0.85, "validation": 0.05, "test": 0.05,
                          "test_compositional": 0.05}},
     r"split_fractions: expected positive fractions for exactly .*test_voices"),
])
def test_bad_split_settings_are_refused_with_the_field(changes, message):
    with pytest.raises(ValueError, match=r"^CorpusConfig\." + message):
        CorpusConfig(**changes)


def test_codec_unseen_voices_stay_in_the_splits_the_codec_reads():
    """The codec (and TTS) find their own held-out voices in train / test / validation: none
    of those may be a corpus held-out voice (only test_voices would have it)."""
    from experiments.codec.settings import DEFAULT_HELDOUT_VOICES

    held = {v.name for v in held_out_voices(CorpusConfig())}
    assert not held & set(DEFAULT_HELDOUT_VOICES)


def test_tiny_corpus_has_every_split_and_keeps_voices_apart(tiny_asr_corpus):
    from data_pipelines.sources import open_source

    records = {}
    for split in SPLITS:
        source = open_source("chorus_speech", tiny_asr_corpus, split)
        records[split] = [source[i] for i in range(len(source))]
        assert records[split], split
    text = lambda r, k: r[k].decode() if isinstance(r[k], bytes) else str(r[k])  # noqa: E731
    config = CorpusConfig()
    held = {v.name for v in held_out_voices(config)}
    for split, rows in records.items():
        voices = {text(r, "voice") for r in rows}
        assert (voices <= held) if split == HELD_OUT_VOICES_SPLIT else not voices & held
        for r in rows:
            assert get_voice(text(r, "voice")).speaker_id == int(r["speaker_id"])
    for r in records[HELD_OUT_PROSODY_SPLIT]:
        rate, pitch = int(r["rate"]), int(r["pitch"])
        assert not (_inside(rate, config.rate_range) and _inside(pitch, config.pitch_range))


def test_a_corpus_without_the_new_splits_names_the_split_and_directory(tiny_asr_corpus,
                                                                         tmp_path):
    """A corpus made before test_voices existed: its dataset_info lists the old splits."""
    from data_pipelines.sources import SourceError, open_source
    from data_pipelines.stats import dataset_stats

    old = str(tmp_path / "old")
    shutil.copytree(os.path.join(tiny_asr_corpus, "chorus_speech"),
                    os.path.join(old, "chorus_speech"))
    shutil.copy(os.path.join(tiny_asr_corpus, "tokenizer.model"), old)
    info_path = os.path.join(old, "chorus_speech", "1.0.0", "dataset_info.json")
    with open(info_path) as f:
        info = json.load(f)
    info["splits"] = [s for s in info["splits"] if s["name"] in TEXT_SPLITS]
    with open(info_path, "w") as f:
        json.dump(info, f)
    for split in (HELD_OUT_VOICES_SPLIT, HELD_OUT_PROSODY_SPLIT):
        with pytest.raises(SourceError, match=rf"in '{old}': split '{split}'"):
            open_source("chorus_speech", old, split)
    assert len(open_source("chorus_speech", old, "test")) > 0
    stats = dataset_stats(old)
    assert "error" in stats["test_voices"] and "error" not in stats["test"]
    # The ASR evaluation pool (the `chorus eval` table): a one-line ConfigError, not a crash
    from asr_runs import ASR

    from chorus.config import ConfigError, load_config
    from experiments.asr.regime import eval_examples
    from experiments.asr.settings import asr_settings

    config = load_config("cpu-tiny", ASR + [f"experiment.data_dir={old}"])
    settings = asr_settings(config)
    assert "test_voices" in settings.eval_splits and "test_prosody" in settings.eval_splits
    assert len(eval_examples(config, settings, "test", 2)) == 2
    with pytest.raises(ConfigError, match=rf"in '{old}': split 'test_voices'.*a corpus made "
                                          r"before split 'test_voices' existed"):
        eval_examples(config, settings, "test_voices", 2)


def test_stats_show_each_splits_rate_and_pitch_range(tiny_asr_corpus):
    from data_pipelines.stats import dataset_stats, format_stats

    stats = dataset_stats(tiny_asr_corpus)
    assert set(stats) == set(SPLITS)
    c = CorpusConfig()
    lo, hi = stats["test"]["rate_min_max"]
    assert c.rate_range[0] <= lo <= hi <= c.rate_range[1]
    rates, pitches = stats["test_prosody"]["rate_min_max"], stats["test_prosody"]["pitch_min_max"]
    assert rates[0] < c.rate_range[0] or rates[1] > c.rate_range[1] or (
        pitches[0] < c.pitch_range[0] or pitches[1] > c.pitch_range[1])
    row = next(line for line in format_stats(stats).splitlines() if "| test_prosody |" in line)
    assert row.endswith(f"| {rates[0]}-{rates[1]} | {pitches[0]}-{pitches[1]} |")


def test_synth_command_takes_the_held_out_voices(tmp_path, capsys):
    from data_pipelines import cli

    out = str(tmp_path / "c")
    base = ["synth", "--out", out, "--hours", "0.002", "--shard-size", "1", "--workers", "2",
            "--vocab-size", "200", "--no-progress"]
    assert cli.main([*base, "--held-out-variants", "whisper"]) == 2
    assert "CorpusConfig.held_out_variants: expected none of" in capsys.readouterr().err
    assert cli.main([*base, "--held-out-accents", "en-029", "--held-out-variants", ""]) == 0
    with open(os.path.join(out, "corpus_config.json")) as f:
        saved = json.load(f)
    assert (saved["held_out_accents"], saved["held_out_variants"]) == (["en-029"], [])
    from data_pipelines.sources import open_source

    voices = open_source("chorus_speech", out, "test_voices")
    assert {get_voice(voices[i]["voice"].decode()).accent for i in range(len(voices))} == {
        "en-029"}
