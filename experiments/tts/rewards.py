"""The TTS reward components (chorus.rl.rewards' registry), each logged as reward/<name>.

    tts_cer              -CER (capped at 1) of the chorus ASR run's transcript of the audio
    tts_code_cer         -CER (capped at 1) of the codec tokenizer's CTC head on the codes
                         (no detokenization: cheap)
    tts_speaker_sim      cosine of the codec speaker embeddings of the audio and of the voice
    tts_control          -mean control error vs the record's own eSpeak recording (pitch, rate,
                         loudness, voicing; + the inline tag's change when the text has one)
    tts_control_<c>      one control of it, c in pitch | rate | loudness | voicing | tag
    tts_length           0 when the completion stopped (<tts_end>) at a duration within
                         [low, high] x the recording's; down to -1 otherwise

Every reward is in [-1, 1], higher is better; a completion with no audio scores -1. The
references are the RL task's SpeechTarget.to_json() strings. Mix, e.g.:
    {"tts_cer": 1.0, "tts_speaker_sim": 0.5, "tts_control": {"weight": 0.5,
     "controls": ["pitch", "rate"]}, "tts_length": 0.2}
Models and data come from the run config (experiments.tts.settings): `codec_run` (all but
tts_length: the audio is heard through it, experiments.tts.listen), `asr_run` (tts_cer),
`data_dir` / `dataset` (the recordings). Speaker similarity compares with the voice's mean
embedding in the codec (`reference: voice`, the default): it is the identity the prompt names,
and one recording's embedding also carries that utterance's own pitch, rate and loudness;
`reference: recording` compares with the record's own recording instead (so does `voice` for
a voice the codec's table lacks: voices.json holds the voices of the codec's train split).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from chorus.config import Config, ConfigError
from chorus.eval.text_metrics import utterance_error_rates
from chorus.rl.rewards import batch_references, register_reward
from chorus.rl.task import Completion
from chorus.vocab import CODEC_FRAMES_PER_SECOND, VocabLayout
from experiments.tts import controls as C
from experiments.tts.listen import Listener, listener_from_config
from experiments.tts.settings import tts_settings
from experiments.tts.target import SpeechTarget

WORST = -1.0


def targets_of(reward: str, completions: Sequence[Completion], references) -> list[SpeechTarget]:
    """The targets of a batch, one per completion (the references parsed)."""
    references = batch_references(reward, completions, references,
                                  "SpeechTarget JSON strings")
    return [r if isinstance(r, SpeechTarget) else SpeechTarget.from_json(r) for r in references]


def neg_cer(reference: str, hypothesis: str) -> float:
    """-CER after the one normalization, capped at 1 (an empty or garbage transcript is -1)."""
    return -min(float(utterance_error_rates([reference], [hypothesis], "cer")[0]), 1.0)


# ----------------------------------------------------------------------------- recordings


class Recordings:
    """The dataset's own recordings by record id: the splits are scanned for ids on the first
    miss (the id's prefix split first: `validation-00010-000045`), waves read on demand, and
    what the rewards derive from them memoized."""

    def __init__(self, data_dir: str, dataset: str, splits: Sequence[str]):
        self.data_dir, self.dataset = os.path.expanduser(data_dir), dataset
        self.splits = tuple(dict.fromkeys(splits))
        self._sources: dict[str, Sequence[dict]] = {}
        self._index: dict[str, tuple[str, int]] = {}
        self._scanned: set[str] = set()
        self._memo: dict[tuple, object] = {}

    def _source(self, split: str):
        if split not in self._sources:
            from data_pipelines.sources import open_source

            self._sources[split] = open_source(self.dataset, self.data_dir, split)
        return self._sources[split]

    def _locate(self, record_id: str) -> tuple[str, int]:
        if record_id in self._index:
            return self._index[record_id]
        from data_pipelines.records import field_text

        prefix = record_id.split("-")[0]
        order = sorted(self.splits, key=lambda s: s != prefix)
        for split in order:
            if split in self._scanned:
                continue
            source = self._source(split)
            for i in range(len(source)):
                self._index[field_text(source[i], "id")] = (split, i)
            self._scanned.add(split)
            if record_id in self._index:
                return self._index[record_id]
        raise KeyError(f"record {record_id!r}: not in the splits {list(self.splits)} of "
                       f"{self.dataset!r} in {self.data_dir}")

    def wave(self, record_id: str) -> np.ndarray:
        from chorus.audio.io import from_int16

        split, i = self._locate(record_id)
        raw = self._source(split)[i]
        speech = np.asarray(raw["speech"])
        return (from_int16(speech) if speech.dtype == np.int16 else speech).astype(np.float32)

    def memo(self, key: tuple, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


_RECORDINGS: dict[tuple, Recordings] = {}


def recordings_from_config(config: Config) -> Recordings:
    s = tts_settings(config)
    splits = (s.train_split, s.eval_split, *s.eval_splits)
    key = (os.path.abspath(os.path.expanduser(s.data_dir)), s.dataset, splits)
    if key not in _RECORDINGS:
        _RECORDINGS[key] = Recordings(s.data_dir, s.dataset, splits)
    return _RECORDINGS[key]


# ----------------------------------------------------------------------------- intelligibility


@register_reward("tts_code_cer")
class TtsCodeCer:
    """-CER of the codec's CTC transcript of the generated codes vs the target's text."""

    def __init__(self, listener: Listener):
        self.listener = listener

    @classmethod
    def build(cls, config: Config) -> TtsCodeCer:
        return cls(listener_from_config(config))

    def transcript(self, codes: np.ndarray) -> str:
        return self.listener.memo(("code_text", *self.listener.key(codes, "")),
                                  lambda: self.listener.codec.transcribe_codes(codes))

    def __call__(self, prompts, completions, *, references=None, **_) -> np.ndarray:
        targets = targets_of("tts_code_cer", completions, references)
        return np.array([neg_cer(t.text, self.transcript(c.audio_codes)) if c.audio_codes.size
                         else WORST for c, t in zip(completions, targets, strict=True)])


@register_reward("tts_cer")
class TtsCer:
    """-CER of the chorus ASR run's transcript of the generated audio vs the target's text.
    Clips are transcribed in fixed batches of `batch_size` (padded with silence, so one
    program compiles); audio past the ASR model's longest clip is cut off (and so misses
    words)."""

    def __init__(self, listener: Listener, transcriber, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"rewards.tts_cer.batch_size: expected an int >= 1, got "
                             f"{batch_size}")
        self.listener, self.transcriber, self.batch_size = listener, transcriber, batch_size

    @classmethod
    def build(cls, config: Config, *, batch_size: int = 8) -> TtsCer:
        from experiments.asr.transcriber import load_transcriber

        s = tts_settings(config)
        if not s.asr_run or not os.path.isdir(os.path.expanduser(s.asr_run)):
            raise ConfigError(f"experiment.asr_run: expected the ASR run that transcribes the "
                              f"audio (--set experiment.asr_run=DIR), got {s.asr_run!r}")
        transcriber, _ = load_transcriber(os.path.expanduser(s.asr_run))
        return cls(listener_from_config(config), transcriber, batch_size)

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """ASR transcripts of 16 kHz waves (each at least one mel frame long)."""
        from chorus.audio.mel import log_mel
        from experiments.asr.regime import asr_prompt
        from experiments.asr.transcriber import pad_requests

        t = self.transcriber
        silence = log_mel(np.zeros((1600,), np.float32))
        out = []
        for start in range(0, len(waves), self.batch_size):
            chunk = [log_mel(w)[:t.max_frames] for w in waves[start:start + self.batch_size]]
            n = len(chunk)
            chunk += [silence] * (self.batch_size - n)
            request = pad_requests([{"prompt_tokens": asr_prompt(t.layout, len(frames)),
                                     "audio_features": frames,
                                     "audio_mask": np.ones(len(frames), bool)}
                                    for frames in chunk], t.layout, t.max_frames)
            out += t.texts(t.decode(request))[:n]
        return out

    def __call__(self, prompts, completions, *, references=None, **_) -> np.ndarray:
        targets = targets_of("tts_cer", completions, references)
        keys = [("asr_text", *Listener.key(c.audio_codes, t.voice))
                for c, t in zip(completions, targets, strict=True)]
        texts, todo = {}, {}  # this batch's transcripts: remembered ones, and ones to make
        for c, t, k in zip(completions, targets, keys, strict=True):
            if not c.audio_codes.size or k in texts or k in todo:
                continue
            if k in self.listener:
                texts[k] = self.listener.memo(k, str)
            else:
                todo[k] = self.listener.wave(c.audio_codes, t.voice)
        heard = self.transcribe(list(todo.values())) if todo else []
        for k, text in zip(todo, heard, strict=True):
            texts[k] = self.listener.memo(k, lambda text=text: text)
        return np.array([neg_cer(t.text, texts[k]) if c.audio_codes.size else WORST
                         for c, t, k in zip(completions, targets, keys, strict=True)])


# ----------------------------------------------------------------------------- speaker


@register_reward("tts_speaker_sim")
class TtsSpeakerSim:
    """Cosine of the codec speaker embedding of the generated audio and of the prompt's voice
    (see the module docstring for `reference`)."""

    REFERENCES = ("voice", "recording")

    def __init__(self, listener: Listener, recordings: Recordings | None,
                 reference: str = "voice"):
        if reference not in self.REFERENCES:
            raise ConfigError(f"rewards.tts_speaker_sim.reference: expected one of "
                              f"{list(self.REFERENCES)}, got {reference!r}")
        self.listener, self.recordings, self.reference = listener, recordings, reference

    @classmethod
    def build(cls, config: Config, *, reference: str = "voice") -> TtsSpeakerSim:
        return cls(listener_from_config(config), recordings_from_config(config), reference)

    def embedding(self, codes: np.ndarray, voice: str) -> np.ndarray | None:
        lst = self.listener

        def compute():
            wave = lst.wave(codes, voice)
            return lst.codec.speaker_embedding(wave) if wave.size >= lst.codec.min_samples \
                else None

        return lst.memo(("speaker", *lst.key(codes, voice)), compute)

    def target_embedding(self, target: SpeechTarget) -> np.ndarray:
        codec = self.listener.codec
        if self.reference == "voice" and target.voice in codec.voices:
            return codec.voices[target.voice]
        if self.recordings is None:
            raise ValueError(f"reward 'tts_speaker_sim': record {target.id!r}: voice "
                             f"{target.voice!r} is not in the codec's voice table and no "
                             "dataset (experiment.data_dir) holds its recording")
        return self.recordings.memo(
            ("speaker", id(codec), target.id),
            lambda: codec.speaker_embedding(self.recordings.wave(target.id)))

    def __call__(self, prompts, completions, *, references=None, **_) -> np.ndarray:
        from chorus.codec.speaker import cosine

        targets = targets_of("tts_speaker_sim", completions, references)
        out = []
        for c, t in zip(completions, targets, strict=True):
            emb = self.embedding(c.audio_codes, t.voice) if c.audio_codes.size else None
            out.append(WORST if emb is None else float(cosine(emb, self.target_embedding(t))))
        return np.array(out)


# ----------------------------------------------------------------------------- controls


class _Controls:
    """Measures of generated audio and of the recordings, shared by the control rewards."""

    def __init__(self, listener: Listener, recordings: Recordings,
                 cfg: C.MeasureConfig = C.DEFAULT):
        self.listener, self.recordings, self.cfg = listener, recordings, cfg

    def _of(self, wave: np.ndarray, target: SpeechTarget):
        return C.measure_target(wave, target, self.cfg)

    def generated(self, codes: np.ndarray, target: SpeechTarget):
        lst = self.listener
        return lst.memo(("controls", *lst.key(codes, target.voice), target.tagged_text),
                        lambda: self._of(lst.wave(codes, target.voice), target))

    def recorded(self, target: SpeechTarget):
        return self.recordings.memo(("controls", target.id, target.tagged_text),
                                    lambda: self._of(self.recordings.wave(target.id), target))

    def errors(self, codes: np.ndarray, target: SpeechTarget,
               controls: tuple[str, ...], tag: bool) -> dict[str, float]:
        """Each control's error in [0, 1] (+ "tag": NaN when the text has no inline stretch);
        all 1 when there is no audio."""
        names = (*controls, "tag") if tag else controls
        ref, ref_inline = self.recorded(target)
        if codes.size == 0:
            out = dict.fromkeys(names, 1.0)
            if tag and ref_inline is None:
                out["tag"] = math.nan
            return out
        return C.adherence(self.generated(codes, target), (ref, ref_inline), controls, tag)


_CONTROLS: dict[tuple, _Controls] = {}


def _controls_from_config(config: Config) -> _Controls:
    listener, recordings = listener_from_config(config), recordings_from_config(config)
    key = (id(listener), id(recordings))
    if key not in _CONTROLS:
        _CONTROLS[key] = _Controls(listener, recordings)
    return _CONTROLS[key]


@register_reward("tts_control")
class TtsControl:
    """-mean error of the chosen controls (controls.control_error, each in [0, 1]) of the
    generated audio against the record's own eSpeak recording, which realizes exactly the
    requested rate / pitch / volume / voice (a tag at the start of the text included); with
    `tag`, also the inline stretch's change (controls.tag_error) where the text has one."""

    def __init__(self, measures: _Controls, controls: Sequence[str] = C.CONTROLS,
                 tag: bool = True):
        controls = tuple(controls)
        unknown = [c for c in controls if c not in C.CONTROLS]
        if unknown or not (controls or tag):
            raise ConfigError(f"rewards.tts_control.controls: expected some of "
                              f"{list(C.CONTROLS)} (or tag: true), got {list(controls)}")
        self.measures, self.controls, self.tag = measures, controls, bool(tag)

    @classmethod
    def build(cls, config: Config, *, controls: Sequence[str] = C.CONTROLS,
              tag: bool = True) -> TtsControl:
        return cls(_controls_from_config(config), controls, tag)

    def errors(self, completions, references) -> list[dict[str, float]]:
        targets = targets_of("tts_control", completions, references)
        return [self.measures.errors(c.audio_codes, t, self.controls, self.tag)
                for c, t in zip(completions, targets, strict=True)]

    def __call__(self, prompts, completions, *, references=None, **_) -> np.ndarray:
        out = []
        for errors in self.errors(completions, references):
            values = [v for v in errors.values() if not math.isnan(v)]
            out.append(-float(np.mean(values)) if values else 0.0)
        return np.array(out)


def _one_control(control: str):
    class One(TtsControl):
        __doc__ = (f"-error of {control} alone (tts_control's sub-score; "
                   + ("0 for a text without an inline stretch)" if control == "tag" else ")"))

        @classmethod
        def build(cls, config: Config) -> TtsControl:
            controls = () if control == "tag" else (control,)
            return cls(_controls_from_config(config), controls, tag=control == "tag")

    One.__name__ = One.__qualname__ = f"TtsControl_{control}"
    return register_reward(f"tts_control_{control}")(One)


for _control in (*C.CONTROLS, "tag"):
    _one_control(_control)


# ----------------------------------------------------------------------------- length


@register_reward("tts_length")
class TtsLength:
    """Length / truncation sanity. 0 when the completion ended with <tts_end> and its duration
    (codes / 25 per s) is within [low, high] x the recording's; -1 when it did not stop (cut at
    the length guard) or has no codes; in between, -(the log2 distance to the range), capped
    at 1: each doubling past the range costs 1."""

    def __init__(self, stop_id: int, recordings: Recordings, low: float = 0.5,
                 high: float = 2.0):
        if not 0 < low <= 1 <= high:
            raise ConfigError(f"rewards.tts_length.low/high: expected 0 < low <= 1 <= high, "
                              f"got {(low, high)}")
        self.stop_id, self.recordings, self.low, self.high = stop_id, recordings, low, high

    @classmethod
    def build(cls, config: Config, *, low: float = 0.5, high: float = 2.0) -> TtsLength:
        layout = VocabLayout.from_model_config(config.model)
        return cls(layout.special("<tts_end>"), recordings_from_config(config), low, high)

    def seconds(self, target: SpeechTarget) -> float:
        from chorus.audio.resample import SAMPLE_RATE

        return self.recordings.memo(("seconds", target.id),
                                    lambda: self.recordings.wave(target.id).size / SAMPLE_RATE)

    def __call__(self, prompts, completions, *, references=None, **_) -> np.ndarray:
        targets = targets_of("tts_length", completions, references)
        out = []
        for c, t in zip(completions, targets, strict=True):
            ids = np.asarray(c.ids).reshape(-1)
            if c.audio_codes.size == 0 or ids.size == 0 or int(ids[-1]) != self.stop_id:
                out.append(WORST)
                continue
            ratio = c.audio_codes.size / CODEC_FRAMES_PER_SECOND / self.seconds(t)
            outside = max(math.log2(self.low / ratio), math.log2(ratio / self.high), 0.0)
            out.append(-min(outside, 1.0) if outside > 0 else 0.0)
        return np.array(out)
