"""experiments/tts/rewards.py + listen.py: every reward against a hand-computed reference on a
tiny case (a codec with random params, eSpeak audio with known controls), the listening memo,
and the real path (the tiny trained TTS stack + ASR run, built from a run config)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from codec_fixtures import random_codec

from chorus.config import ConfigError, load_config
from chorus.rl.rewards import RewardMix, RewardMixConfig, available_rewards, get_reward
from chorus.rl.task import Completion
from chorus.vocab import VocabLayout
from data_pipelines.synthesis import SEGMENT_PAUSE_SECONDS, synthesize
from experiments.tts import controls as C
from experiments.tts import rewards as R
from experiments.tts.listen import Listener, listener_from_config
from experiments.tts.target import SpeechTarget

LAYOUT = VocabLayout(text_size=128, num_audio_codes=1000)
STOP = LAYOUT.special("<tts_end>")
TEXT = "Turn left at the bank and wait for me there."


def completion(codes, stop: bool = True) -> Completion:
    codes = np.asarray(codes, np.int32)
    ids = LAYOUT.audio_code_ids(codes)
    return Completion.from_ids(np.concatenate([ids, [STOP]] if stop else [ids]), "", LAYOUT)


def target(id="r1", text=TEXT, tagged=None, voice="voice0") -> str:
    return SpeechTarget(id=id, text=text, tagged_text=tagged or text, instruction="",
                        voice=voice, speaker_id=0, rate=175, pitch=50, volume=100).to_json()


class FakeRecordings(R.Recordings):
    """The dataset's recordings, given by id (the real reader is tested on the tiny stack)."""

    def __init__(self, waves: dict[str, np.ndarray]):
        super().__init__("", "chorus_speech", ())
        self.waves = waves

    def wave(self, record_id: str) -> np.ndarray:
        return self.waves[record_id]


class WaveCodec:
    """A codec stand-in whose decode returns given eSpeak waves (for the control rewards,
    which need real speech); counts its decodes."""

    voices = {"voice0": np.ones(4, np.float32)}
    min_samples = 640

    def __init__(self, waves: dict[tuple, np.ndarray]):
        self.waves, self.calls = waves, 0

    def flow_settings(self, steps, guidance):
        return 1, 0.0

    def decode(self, codes, speaker, steps, guidance, seed, vocoder):
        self.calls += 1
        return self.waves[tuple(int(c) for c in codes)]


@pytest.fixture(scope="module")
def codec():
    return random_codec()


def test_the_tts_rewards_are_registered():
    names = {"tts_cer", "tts_code_cer", "tts_speaker_sim", "tts_control", "tts_length",
             *(f"tts_control_{c}" for c in (*C.CONTROLS, "tag"))}
    assert names <= set(available_rewards())
    assert all(callable(getattr(get_reward(n), "build", None)) for n in names)


def test_listener_decodes_each_completion_once_and_evicts_the_oldest(codec):
    calls = []
    decode = codec.decode
    codec.decode = lambda *a, **k: calls.append(1) or decode(*a, **k)
    try:
        listener = Listener(codec)
        a, b = np.arange(10) % 1000, np.arange(5, 30) % 1000
        wave = listener.wave(a, "voice0")
        steps, guidance = codec.flow_settings(None, None)
        np.testing.assert_array_equal(wave, decode(a, codec.voices["voice0"], steps, guidance))
        # Two listening rewards on one batch, duplicates and an empty completion among it.
        sim = R.TtsSpeakerSim(listener, None)
        code_cer = R.TtsCodeCer(listener)
        batch = [completion(a), completion(a), completion(b), completion([])]
        refs = [target()] * 4
        calls.clear()
        for _ in range(2):
            first = sim(None, batch, references=refs)
            code_cer(None, batch, references=refs)
        assert len(calls) == 1  # b only: a was heard above, and each once
        assert listener.decodes == 2
        assert first[0] == first[1] and first[3] == R.WORST
        # A voice outside the codec's table is spoken by its first voice.
        np.testing.assert_array_equal(listener.wave(a, "unknown"), wave)
        # a voice outside codec.voices is spoken with its cached mean embedding when known
        emb = np.asarray(codec.voices["voice0"]) * -1.0
        more = Listener(codec, more_voices=lambda: {"held_out": emb})
        np.testing.assert_array_equal(more.speaker("held_out"), emb)
        np.testing.assert_array_equal(more.speaker("voice0"), codec.voices["voice0"])
        assert more.speaker("unknown") is None
        small = Listener(codec, capacity=1)
        for codes in (a, b, a):
            small.wave(codes, "voice0")
        assert small.decodes == 3  # a was evicted by b
    finally:
        codec.decode = decode
    assert Listener(codec).wave(np.zeros(0, np.int32), "voice0").size == 0


def test_code_cer_is_the_cer_of_the_codec_ctc_transcript(codec):
    codes = np.arange(30) % 1000
    heard = codec.transcribe_codes(codes)
    assert len(heard) >= 4 and heard.isalpha()  # seed 0's random codec says 'abakakak'
    wrong = heard[:-1] + ("x" if heard[-1] != "x" else "y")
    reward = R.TtsCodeCer(Listener(codec))
    got = reward(None, [completion(codes)] * 3 + [completion([])],
                 references=[target(text=heard), target(text=wrong), target(text="q"),
                             target(text=heard)])
    # One substitution in len(heard) characters; 'q' vs the transcript: CER > 1, capped.
    np.testing.assert_allclose(got, [0.0, -1 / len(heard), -1.0, -1.0], rtol=0, atol=1e-12)


def test_speaker_sim_is_the_cosine_with_the_voice_or_the_recording(codec):
    codes = np.arange(40) % 1000
    steps, guidance = codec.flow_settings(None, None)
    wave = codec.decode(codes, codec.voices["voice0"], steps, guidance)
    emb = codec.speaker_embedding(wave).astype(np.float64)
    voice = codec.voices["voice0"].astype(np.float64)
    recording = synthesize("Hello there.", "en-us")[0]
    rec = codec.speaker_embedding(recording).astype(np.float64)
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    listener = Listener(codec)
    got = R.TtsSpeakerSim(listener, None)(None, [completion(codes), completion([])],
                                          references=[target()] * 2)
    # fp32 embeddings, compared in fp64: only the rounding of the sum differs.
    np.testing.assert_allclose(got, [cos(emb, voice), -1.0], rtol=0, atol=1e-6)
    by_recording = R.TtsSpeakerSim(listener, FakeRecordings({"r1": recording}), "recording")
    np.testing.assert_allclose(by_recording(None, [completion(codes)], references=[target()]),
                               [cos(emb, rec)], rtol=0, atol=1e-6)
    # A voice the codec's table lacks (spoken by its first voice): compared with the recording.
    unseen = R.TtsSpeakerSim(listener, FakeRecordings({"r1": recording}))
    np.testing.assert_allclose(unseen(None, [completion(codes)],
                                      references=[target(voice="en-zz")]),
                               [cos(emb, rec)], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="record 'r1': voice 'en-zz' is not in the codec"):
        R.TtsSpeakerSim(listener, None)(None, [completion(codes)],
                                        references=[target(voice="en-zz")])
    with pytest.raises(ConfigError, match="tts_speaker_sim.reference: expected one of"):
        R.TtsSpeakerSim(listener, None, "speaker")


def _join(first, second):
    pause = np.zeros(int(SEGMENT_PAUSE_SECONDS * 16000), np.float32)
    return np.concatenate([first, pause, second])


def test_control_reward_is_minus_the_mean_error_against_the_recording():
    base, high = synthesize(TEXT, "en-us", 175, 50, 100)[0], synthesize(TEXT, "en-us", 175,
                                                                         75, 60)[0]
    fake = WaveCodec({(1, 2): high, (3, 4): base})
    measures = R._Controls(Listener(fake), FakeRecordings({"r1": base}))
    batch = [completion([1, 2]), completion([3, 4]), completion([])]
    refs = [target()] * 3
    want, ref = C.measure_wave(high, TEXT), C.measure_wave(base, TEXT)
    by_hand = {  # controls.control_error, written out
        "pitch": abs(want.f0 - ref.f0) / ref.f0,
        "rate": abs(want.cps - ref.cps) / ref.cps,
        "loudness": abs(10 ** ((want.loudness - ref.loudness) / 20) - 1),
        "voicing": abs(want.voiced - ref.voiced)}
    assert by_hand["pitch"] > 0.1 and by_hand["loudness"] > 0.3  # pitch 75 vs 50, volume 60
    whole = R.TtsControl(measures)(None, batch, references=refs)
    # fp64 measures of the same waves: equal up to rounding.
    np.testing.assert_allclose(whole, [-np.mean(list(by_hand.values())), 0.0, -1.0], rtol=0,
                               atol=1e-12)
    for control, error in by_hand.items():
        one = get_reward(f"tts_control_{control}")(measures, (control,), tag=False)
        np.testing.assert_allclose(one(None, batch, references=refs), [-error, 0.0, -1.0],
                                   rtol=0, atol=1e-12)
    assert fake.calls == 2  # every reward above heard each completion once
    tag_only = get_reward("tts_control_tag")(measures, (), tag=True)
    assert list(tag_only(None, batch, references=refs)) == [0.0, 0.0, 0.0]  # untagged text
    with pytest.raises(ConfigError, match="tts_control.controls: expected some of"):
        R.TtsControl(measures, ("speed",))


def test_control_reward_scores_the_inline_stretch():
    first = synthesize("Can you tell me", "en-us", 175, 50, 100, seed=0)[0]
    soft = synthesize("where the station is?", "en-us", 175, 50, 50, seed=1)[0]
    plain = synthesize("where the station is?", "en-us", 175, 50, 100, seed=1)[0]
    recording, flat = _join(first, soft), _join(first, plain)
    measures = R._Controls(Listener(WaveCodec({(1,): recording, (2,): flat})),
                           FakeRecordings({"r1": recording}))
    tagged = "Can you tell me (softly) where the station is?"
    refs = [target(text="Can you tell me where the station is?", tagged=tagged)] * 2
    tag = get_reward("tts_control_tag")(measures, (), tag=True)
    got = tag(None, [completion([1]), completion([2])], references=refs)
    # The recording itself: no error; the unsoftened stretch: by hand from its change.
    ref_change = C.inline_change(C.analyze(recording), tagged)
    flat_change = C.inline_change(C.analyze(flat), tagged)
    goal = max(C.MIN_CHANGE["loudness"], -ref_change.change)
    expect = min(max(1 + flat_change.change / goal, 0.0), 1.0)
    assert ref_change.change < -3.0 and expect > 0.5
    np.testing.assert_allclose(got, [0.0, -expect], rtol=0, atol=1e-12)


def test_length_reward_by_hand():
    two_seconds = np.zeros(32000, np.float32)
    reward = R.TtsLength(STOP, FakeRecordings({"r1": two_seconds}), low=0.5, high=2.0)
    batch = [completion(np.zeros(50)), completion(np.zeros(125)), completion(np.zeros(20)),
             completion(np.zeros(50), stop=False), completion([]), completion(np.zeros(400))]
    got = reward(None, batch, references=[target()] * len(batch))
    # 2 s: in range; 5 s = 2.5x: log2(2.5 / 2) past the range; 0.8 s = 0.4x: log2(0.5 / 0.4);
    # no <tts_end> (truncated): -1; no codes: -1; 16 s = 8x: two doublings past, capped.
    expect = [0.0, -math.log2(1.25), -math.log2(1.25), -1.0, -1.0, -1.0]
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="tts_length.low/high"):
        R.TtsLength(STOP, FakeRecordings({}), low=1.5)


class KnownTranscripts(R.TtsCer):
    """tts_cer with the ASR transcription replaced by given texts (by wave length): checks
    the reward's bookkeeping; the real transcription is tested on the tiny stack below."""

    def __init__(self, listener, texts):
        super().__init__(listener, transcriber=None)
        self.texts, self.batches = texts, []

    def transcribe(self, waves):
        self.batches.append(len(waves))
        return [self.texts[w.size] for w in waves]


def test_cer_reward_bookkeeping_by_hand():
    fake = WaveCodec({(1,): np.zeros(1000, np.float32), (2,): np.zeros(2000, np.float32)})
    reward = KnownTranscripts(Listener(fake), {1000: "hello world", 2000: "jello"})
    batch = [completion([1]), completion([2]), completion([1]), completion([])]
    refs = [target(text="Hello, world!"), target(text="hello"), target(text="hello word"),
            target(text="hello")]
    got = reward(None, batch, references=refs)
    # 'hello world' = the normalized reference: 0; 'jello' vs 'hello': 1 / 5; 'hello world'
    # vs 'hello word': one insertion in 10 characters; no audio: -1.
    np.testing.assert_allclose(got, [0.0, -0.2, -0.1, -1.0], rtol=0, atol=1e-12)
    assert reward.batches == [2]  # each distinct completion transcribed once
    reward(None, batch, references=refs)
    assert reward.batches == [2]  # and remembered
    # A memo too small for the batch still scores every row by its own transcript.
    small = KnownTranscripts(Listener(fake, capacity=1), {1000: "hello world", 2000: "jello"})
    np.testing.assert_allclose(small(None, batch, references=refs), [0.0, -0.2, -0.1, -1.0],
                               rtol=0, atol=1e-12)


def test_bad_references_and_configs_are_named(codec):
    reward = R.TtsCodeCer(Listener(codec))
    with pytest.raises(ValueError, match="expected 2 references, got 1"):
        reward(None, [completion([1]), completion([2])], references=[target()])
    with pytest.raises(ValueError, match="SpeechTarget.from_json: expected the JSON"):
        reward(None, [completion([1])], references=["the text"])
    with pytest.raises(ValueError, match="expected a `references` field"):
        reward(None, [completion([1])])
    config = load_config("cpu-tiny", ["experiment.data_dir=/nowhere",
                                      "experiment.cache_key=k"])
    with pytest.raises(ConfigError, match=r"experiment.codec_run: expected the codec run"):
        listener_from_config(config)
    with pytest.raises(ConfigError, match=r"experiment.codec_run: expected a codec run dir"):
        listener_from_config(load_config("cpu-tiny", [
            "experiment.data_dir=/nowhere", "experiment.cache_key=k",
            "experiment.codec_run=/nowhere/codec"]))


# ----------------------------------------------------------------------------- the real path


@pytest.mark.slow
def test_the_mix_on_the_tiny_stack_matches_direct_computation(tiny_tts_stack, tiny_asr_run):
    """All five rewards built from a TTS run config by RewardMix, on the validation records'
    own codes (+ a duplicate and an empty completion); tts_cer and tts_code_cer equal the
    transcripts computed directly; each completion is decoded once."""
    from chorus.audio.mel import log_mel
    from chorus.codec.pipeline import Codec
    from chorus.config import apply_overrides
    from chorus.training.run_config import read_run_config
    from data_pipelines.sources import open_source
    from experiments.asr.regime import asr_prompt
    from experiments.asr.transcriber import load_transcriber, pad_requests
    from experiments.tts.experiment import open_codes

    stack = tiny_tts_stack
    config = apply_overrides(read_run_config(stack["tts"]), [
        f"experiment.codec_run={stack['codec']}", f"experiment.asr_run={tiny_asr_run}"])
    layout = VocabLayout.from_model_config(config.model)
    source = open_source("chorus_speech", stack["data_dir"], "validation")
    cache = open_codes(stack["data_dir"], stack["cache_key"], "validation", layout)
    targets = [SpeechTarget.from_raw(source[i]) for i in range(3)]
    codes = [cache.get(t.id)["codes"] for t in targets]
    stop = layout.special("<tts_end>")
    batch = [Completion.from_ids(np.append(layout.audio_code_ids(c), stop), "", layout)
             for c in codes]
    batch += [batch[0], Completion.from_ids(np.array([stop]), "", layout)]
    refs = [t.to_json() for t in targets] + [targets[0].to_json(), targets[1].to_json()]
    mix = RewardMix(RewardMixConfig.from_mapping({
        "tts_cer": 1.0, "tts_code_cer": 1.0, "tts_speaker_sim": 0.5, "tts_control": 0.5,
        "tts_length": 0.1, "tts_control_pitch": 0.0}), config)
    out = mix([None] * len(batch), batch, references=refs)
    listener = listener_from_config(config)
    assert listener.decodes == 3
    for name, values in out.components.items():
        assert values.shape == (5,) and np.all((values >= -1) & (values <= 1)), name
        assert values[3] == values[0] and values[4] == -1.0, name
    # The recordings' own codes are as long as the recordings: in range.
    assert list(out.components["tts_length"][:3]) == [0.0, 0.0, 0.0]
    codec = Codec.load(stack["codec"])
    code_cer = [R.neg_cer(t.text, codec.transcribe_codes(c))
                for t, c in zip(targets, codes, strict=True)]
    np.testing.assert_allclose(out.components["tts_code_cer"][:3], code_cer, rtol=0, atol=0)
    transcriber, _ = load_transcriber(str(tiny_asr_run))
    frames = [log_mel(listener.wave(c, t.voice))[:transcriber.max_frames]
              for c, t in zip(codes, targets, strict=True)]
    frames += [log_mel(np.zeros(1600, np.float32))] * (8 - len(frames))
    request = pad_requests([{"prompt_tokens": asr_prompt(transcriber.layout, len(f)),
                             "audio_features": f, "audio_mask": np.ones(len(f), bool)}
                            for f in frames],
                           transcriber.layout, transcriber.max_frames)
    texts = transcriber.texts(transcriber.decode(request))[:3]
    np.testing.assert_allclose(out.components["tts_cer"][:3],
                               [R.neg_cer(t.text, h) for t, h in zip(targets, texts, strict=True)],
                               rtol=0, atol=0)


def test_recordings_read_the_dataset_by_record_id(tiny_asr_corpus):
    from chorus.audio.io import from_int16
    from data_pipelines.records import field_text
    from data_pipelines.sources import open_source

    source = open_source("chorus_speech", tiny_asr_corpus, "validation")
    raw = source[len(source) - 1]
    recordings = R.Recordings(tiny_asr_corpus, "chorus_speech", ("train", "validation"))
    np.testing.assert_array_equal(recordings.wave(field_text(raw, "id")),
                                  from_int16(np.asarray(raw["speech"])))
    assert recordings._scanned == {"validation"}  # the id's own split first
    with pytest.raises(KeyError, match=r"record 'nope': not in the splits \['train', 'valid"):
        recordings.wave("nope")
