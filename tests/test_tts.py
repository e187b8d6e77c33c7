"""experiments/tts/experiment.py: the TTS regime on a hand-written code cache (codes land at
audio_offset + code, control dropout, the num_codes check), its settings, and `build`'s batches
and loss on the tiny corpus."""

import jax
import numpy as np
import pytest
from train_toy import TINY

from chorus.config import ConfigError, load_config, settings_from
from chorus.vocab import VocabLayout
from data_pipelines.record_cache import ArraySpec, CacheError, write_record_cache
from data_pipelines.records import AudioLimits, Record
from data_pipelines.regime import ExampleInputs
from experiments.tts.experiment import TtsRegime, build, open_codes
from experiments.tts.settings import TtsSettings

LAYOUT = VocabLayout(text_size=128, num_audio_codes=32)
CODES = np.array([0, 5, 31, 7], np.int32)


def _encode(text: str) -> np.ndarray:  # a stand-in tokenizer: one id per character
    return np.array([ord(c) % 128 for c in text], np.int32)


def _inputs(rng=None, codes=CODES, features=None, **record):
    fields = dict(wave=np.zeros(160, np.float32), text="hello", speaker="7", id="u1",
                  instruction="slow", tagged_text="(softly) hello", persona="", answer="")
    return ExampleInputs(record=Record(**(fields | record)), features=features,
                         cached={"codes": codes}, encode=_encode, layout=LAYOUT, rng=rng)


def _part(tokens, start, end):
    i = int(np.flatnonzero(tokens == LAYOUT.special(start))[0]) + 1
    j = int(np.flatnonzero(tokens == LAYOUT.special(end))[0])
    return tokens[i:j]


def test_stream_layout_and_codes_at_the_audio_offset():
    stream = TtsRegime().stream(_inputs())
    t, s = stream.tokens, LAYOUT.special
    assert t[0] == s("<tts>") and t[-1] == s("<tts_end>")
    np.testing.assert_array_equal(_part(t, "<instruction>", "<speaker>"), _encode("slow"))
    np.testing.assert_array_equal(_part(t, "<speaker>", "<text>"), _encode("speaker 7"))
    np.testing.assert_array_equal(_part(t, "<text>", "<tts_start>"), _encode("(softly) hello"))
    np.testing.assert_array_equal(_part(t, "<tts_start>", "<tts_end>"),
                                  LAYOUT.audio_offset + CODES)
    assert t[stream.prompt_length - 1] == s("<tts_start>")
    # supervised: exactly the codes and <tts_end> (loss_mask[i] marks targets[i])
    assert stream.loss_mask.sum() == len(CODES) + 1
    np.testing.assert_array_equal(stream.targets[stream.loss_mask > 0],
                                  np.append(LAYOUT.audio_offset + CODES, s("<tts_end>")))
    ref = TtsRegime().reference(_inputs(tagged_text=""))
    assert ref["reference_text"] == "hello" and ref["speaker"] == "7"
    np.testing.assert_array_equal(ref["reference_ids"], LAYOUT.audio_offset + CODES)
    with pytest.raises(ValueError, match=r"audio codes: expected values in \[0, 32\)"):
        TtsRegime().stream(_inputs(codes=np.array([32], np.int32)))


def test_control_dropout_drops_instruction_and_speaker_independently():
    regime, rng = TtsRegime(control_dropout=0.3), np.random.default_rng(0)
    kept = np.array([[len(_part(regime.stream(_inputs(rng)).tokens, a, b)) > 0
                      for a, b in (("<instruction>", "<speaker>"), ("<speaker>", "<text>"))]
                     for _ in range(2000)])
    np.testing.assert_allclose(kept.mean(axis=0), 0.7, atol=0.04)
    both_dropped = (~kept).all(axis=1).mean()
    np.testing.assert_allclose(both_dropped, 0.09, atol=0.03)  # independent: 0.3 * 0.3
    eval_stream = regime.stream(_inputs(rng=None))  # eval never drops
    assert len(_part(eval_stream.tokens, "<instruction>", "<speaker>")) == 4
    with pytest.raises(ValueError, match="control_dropout: expected a probability"):
        TtsRegime(control_dropout=1.5)


def test_open_codes_checks_the_codec_code_count(tmp_path):
    entries = [("u1", {"codes": CODES})]
    write_record_cache(str(tmp_path), "codec-a", "train", entries,
                       arrays={"codes": ArraySpec("int32")}, attrs={"num_codes": 1000},
                       progress=False)
    with pytest.raises(CacheError, match=r"num_codes=1000 .*!= model.num_audio_codes=32"):
        open_codes(str(tmp_path), "codec-a", "train", LAYOUT)
    with pytest.raises(CacheError, match=r"'codec-b' split 'train': missing; expected .*"
                                         r"caches/codec-b/train.meta.json.*experiment.cache_key"):
        open_codes(str(tmp_path), "codec-b", "train", LAYOUT)
    write_record_cache(str(tmp_path), "codec-c", "train", [("u1", {"speaker": CODES})],
                       arrays={"speaker": ArraySpec("int32")}, progress=False)
    with pytest.raises(CacheError, match=r"the TTS regime needs arrays \['codes'\]"):
        open_codes(str(tmp_path), "codec-c", "train", LAYOUT)


def test_settings_are_typed_and_validated():
    base = ["model.text_vocab_size=128"]
    with pytest.raises(ConfigError, match="experiment.cache_key: expected the producer key"):
        build(load_config("cpu-tiny", base + ["experiment.data_dir=/x"]))
    with pytest.raises(ConfigError, match="experiment.control_dropout"):
        build(load_config("cpu-tiny", base + ["experiment.data_dir=/x", "experiment.cache_key=k",
                                              "experiment.control_dropout=2"]))
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['cache_kee'\]"):
        build(load_config("cpu-tiny", base + ["experiment.data_dir=/x",
                                              "experiment.cache_kee=k"]))
    assert TtsSettings(data_dir="d", cache_key="k").eval_split == "validation"


def test_the_audio_slot_is_the_speaker_clip_capped_by_max_mel_frames():
    """A packed row's audio slot holds the whole clip in whole 8-frame placeholders and no
    more: the preset's 560 frames (sized for ASR utterances) would be encoder work on padding."""
    from chorus.audio.mel import log_mel
    from experiments.tts.experiment import audio_slot_frames
    from experiments.tts.speaker_clips import clip_frames

    for seconds in (0.5, 1.0, 2.0, 2.05, 3.3):
        frames = len(log_mel(np.zeros(int(seconds * 16_000), np.float32)))
        assert clip_frames(seconds) % 8 == 0 and frames <= clip_frames(seconds) < frames + 8
    assert clip_frames(0) == 8  # no clip: the smallest slot
    base = ["model.text_vocab_size=128", "experiment.data_dir=/x", "experiment.cache_key=k"]
    for extra, slot in (([], 200), (["experiment.speaker_clip_seconds=1"], 104),
                        (["train.max_mel_frames=96"], 96)):
        config = load_config("cpu-tiny", base + extra)
        assert config.train.max_mel_frames in (560, 96)
        settings = settings_from(TtsSettings, config.experiment)
        assert audio_slot_frames(config, settings) == slot, extra


TTS = [o for o in TINY if not o.startswith(("audio.n_mels", "model.text_vocab_size",
                                            "model.num_audio_codes", "train.seq_len"))]
TTS += ["model.text_vocab_size=128", "model.num_audio_codes=16", "train.seq_len=256"]


def test_build_trains_on_cached_codes(tiny_asr_corpus):
    from data_pipelines.sources import open_source

    data_dir = tiny_asr_corpus
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        source = open_source("chorus_speech", data_dir, split)
        ids = [source[i]["id"] for i in range(len(source))]
        write_record_cache(data_dir, "tiny-codec", split,
                           [(i, {"codes": rng.integers(0, 16, 30).astype(np.int32)})
                            for i in ids], arrays={"codes": ArraySpec("int32")},
                           attrs={"num_codes": 16}, progress=False)
    config = load_config("cpu-tiny", TTS + [f"experiment.data_dir={data_dir}",
                                            "experiment.cache_key=tiny-codec",
                                            "experiment.control_dropout=0.5"])
    experiment = build(config)
    assert experiment.assets["tokenizer.model"].endswith("tokenizer.model")
    batch = next(experiment.train_iterator(0, 1, 0))
    layout = VocabLayout.from_model_config(config.model)
    supervised = batch["targets"][batch["loss_mask"] > 0]
    assert supervised.size and ((supervised >= layout.audio_offset)
                                | (supervised == layout.special("<tts_end>"))).all()
    # speaker clips: one per example, 2 s at most (200 log-mel frames)
    assert batch["audio_mask"].any() and batch["audio_mask"].sum(-1).max() <= 200
    placeholders = (batch["tokens"] == layout.audio_placeholder_id).sum()
    assert placeholders == sum(-(-int(n) // 8) for n in batch["audio_mask"].sum(-1).ravel())
    params = jax.jit(experiment.init_fn)(jax.random.key(0))
    params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                          is_leaf=lambda x: hasattr(x, "value"))
    loss, metrics = jax.jit(experiment.loss_fn)(params, batch, jax.random.key(1))
    # an untrained model is near uniform over the vocabulary: CE ~ log(V)
    assert abs(float(loss) - np.log(layout.size)) < 1.0, (float(loss), np.log(layout.size))
    assert float(metrics["tokens"]) == batch["loss_mask"].sum()
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    eval_batches = list(experiment.eval_iterator(0, 1, 0))
    assert eval_batches and all(b["tokens"].shape == batch["tokens"].shape for b in eval_batches)


# ----------------------------------------------------------------------------- instructions


def test_instructions_parse_the_template_and_rephrase_every_control():
    from data_pipelines.corpus_plan import control_levels, describe_controls
    from data_pipelines.voices import VOICES
    from experiments.tts.instructions import _SAY, MAX_CHARS, parse, rephrase

    rng = np.random.default_rng(0)
    seen = set()
    for voice in VOICES[::7]:
        for rate, pitch, volume in ((140, 30, 70), (170, 50, 100), (200, 70, 120)):
            text = describe_controls(voice.name, rate, pitch, volume)
            controls = parse(text)
            assert controls is not None, text
            assert (controls.pace, controls.height, controls.loudness) == control_levels(
                rate, pitch, volume)
            assert controls.voice == voice.describe()
            for _ in range(5):
                said = rephrase(controls, rng)
                seen.add(said)
                assert len(said) <= MAX_CHARS and voice.describe() in said.lower()
                # every non-default level is said, in one of its own phrasings only
                for level in (controls.pace, controls.height, controls.loudness):
                    if "normal" not in level:
                        assert any(p in said for p in _SAY[level]), (level, said)
    assert len(seen) > 100  # varied phrasings, not one template
    assert parse("Speak like a pirate.") is None


def test_hold_out_filters_voices_and_combinations(tiny_asr_corpus):
    from data_pipelines.sources import open_source
    from experiments.tts.instructions import HELD_OUT_COMBINATIONS, held_out, raw_held_out

    assert held_out("en-us+f3", 170, 50, 100) == ("unseen_voice",)  # the codec's too
    assert held_out("en-us+f1", 200, 30, 70) == ("unseen_combination",)
    assert held_out("en-us+f1", 170, 50, 100) == ()
    assert ("quickly", "a low pitch", "quietly") in HELD_OUT_COMBINATIONS
    assert raw_held_out({"text": "x"}) == ()  # a dataset without control fields keeps all
    source = open_source("chorus_speech", tiny_asr_corpus, "train")
    raws = [source[i] for i in range(len(source))]
    regime = TtsRegime(hold_out=True)
    kept = [r for r in raws if regime.accepts(r, None)]
    assert all(raw_held_out(r) == () for r in kept)
    assert len(kept) == sum(raw_held_out(r) == () for r in raws)
    assert TtsRegime().accepts is None  # no filter pass over the split without hold_out


def test_paraphrase_applies_in_training_only():
    from data_pipelines.corpus_plan import describe_controls

    canonical = describe_controls("en-gb+f3", 140, 70, 120)
    regime = TtsRegime(paraphrase=True)
    rng = np.random.default_rng(1)
    said = {tuple(_part(regime.stream(_inputs(rng, instruction=canonical)).tokens,
                        "<instruction>", "<speaker>")) for _ in range(20)}
    assert len(said) > 5
    eval_part = _part(regime.stream(_inputs(None, instruction=canonical)).tokens,
                      "<instruction>", "<speaker>")
    np.testing.assert_array_equal(eval_part, _encode(canonical))


def test_speaker_clip_is_another_utterance_of_the_voice(tiny_asr_corpus):
    from data_pipelines.records import read_record
    from data_pipelines.sources import DEFAULT_FIELDS, open_source
    from experiments.tts.speaker_clips import speaker_clips

    clips = speaker_clips(tiny_asr_corpus, "chorus_speech", "train", seconds=1.0)
    source = open_source("chorus_speech", tiny_asr_corpus, "train")
    records = [read_record(source[i], DEFAULT_FIELDS, AudioLimits(max_seconds=None))
               for i in range(len(source))]
    by_id = {r.id: r for r in records}
    speaker = next(k for k, v in clips.clips.items() if len(v) >= 2)
    first_id, first_wave = clips.clips[speaker][0]
    assert by_id[first_id].speaker == speaker and first_wave.size <= 16000
    # the clip is the record's own audio (int16-rounded), never the target record's
    np.testing.assert_allclose(first_wave / 32768.0, by_id[first_id].wave[:16000], atol=1 / 32768)
    rng = np.random.default_rng(0)
    for _ in range(20):
        clip = clips.choose(speaker, exclude_id=first_id, rng=rng)
        assert not np.array_equal(clip, first_wave / 32768.0)
    assert clips.choose("no-such-voice", "x", rng) is None
    regime = TtsRegime(speaker_clips=clips, control_dropout=1.0)
    rec = by_id[first_id]
    assert regime.input_wave(rec, rng) is None  # dropped like the other controls
    assert regime.input_wave(rec, None) is not None  # eval keeps it
    stream = TtsRegime().stream(_inputs(features=np.zeros((17, 128), np.float32)))
    clip_part = _part(stream.tokens, "<speaker>", "<text>")
    assert (clip_part == LAYOUT.audio_placeholder_id).sum() == 3  # ceil(17 / 8)


def test_a_clip_from_elsewhere_needs_an_audio_input_regime():
    import dataclasses as dc
    from typing import ClassVar

    from data_pipelines.regime import check_regime

    @dc.dataclass(frozen=True)
    class TextOnly(TtsRegime):
        audio_input: ClassVar[bool] = False

    check_regime(TtsRegime())
    with pytest.raises(TypeError, match=r"input_wave: expected a method .*audio_input=False"):
        check_regime(TextOnly())
