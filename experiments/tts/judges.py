"""The judges of synthesized speech in the TTS evaluation (experiments/tts/evaluate.py).

    lm = sphinx_lm(corpus_texts(data_dir).texts, cache_dir)   # ARPA LM + dictionary, cached
    SphinxJudge(lm).transcribe(waves)       # pocketsphinx, English acoustic model, corpus LM
    SphinxJudge(None).transcribe(waves)     # its bundled default LM (the comparison row)
    ChorusAsrJudge.load(asr_run).transcribe(waves)     # the chorus ASR run
    Dnsmos().score(waves)                   # DNSMOS P.835 (speechmos' bundled ONNX models)
    CodecSpeaker(codec).embed(wave)         # the codec's speaker encoder
    ResemblyzerSpeaker().embed(wave)        # optional: GE2E, not trained here

Why two ASR judges: the chorus ASR is the policy's sibling (same corpus, same voices), so an
intelligibility figure judged by it alone can be gamed or flattered; pocketsphinx was trained
on none of this and its acoustic model ships in its wheel. Its bundled default LM knows
little of the corpus' names and numbers, so its LM is built from the corpus' *training*
texts (pocketsphinx.lm.ArpaBoLM, a trigram with a fixed back-off) over the CMU dictionary;
the held-out texts are never in it. Every judge reads 16 kHz float waves in [-1, 1].
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
from collections.abc import Sequence

import numpy as np

from chorus.audio.resample import SAMPLE_RATE
from chorus.audio.text import normalize_text
from chorus.config import ConfigError

SPHINX_PEAK = 0.5  # clips are peak-normalized: the judge reads content, not loudness
SPHINX_PAD_S = 0.3  # silence each side: the endpointer sees the whole first and last word
SILENT_PEAK = 1e-4  # below this a clip is silence: no words, nothing to normalize
ASR_BATCH = 8


class JudgeError(ConfigError):
    """A judge cannot be built (missing run, package or file); the message names it. A
    ConfigError, so `chorus eval` reports it on one line."""


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ----------------------------------------------------------------------------- corpus texts


@dataclasses.dataclass(frozen=True)
class CorpusTexts:
    texts: tuple[str, ...]  # normalized spoken texts (chorus.audio.text.normalize_text)
    voices: frozenset[str]  # the eSpeak voices the split was spoken in


def corpus_texts(data_dir: str, split: str = "train", dataset: str = "chorus_speech"
                 ) -> CorpusTexts:
    """The normalized texts and voices of a prepared split (the LM's text, the seen voices)."""
    from data_pipelines.records import field_text
    from data_pipelines.sources import open_source

    try:
        source = open_source(dataset, os.path.expanduser(data_dir), split)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise JudgeError(f"{data_dir}: expected the prepared dataset {dataset!r} with a "
                         f"{split!r} split (the corpus' training texts), got: "
                         f"{_first_line(e)}") from None
    texts, voices = [], set()
    for i in range(len(source)):
        raw = source[i]
        text = normalize_text(field_text(raw, "text"))
        if text:
            texts.append(text)
        voices.add(field_text(raw, "voice"))
    if not texts:
        raise JudgeError(f"{data_dir}: split {split!r} of {dataset!r}: expected texts to "
                         f"build the LM from, got none")
    return CorpusTexts(tuple(texts), frozenset(voices - {""}))


# ----------------------------------------------------------------------------- pocketsphinx


@dataclasses.dataclass(frozen=True)
class SphinxLM:
    arpa: str  # the ARPA trigram file
    dictionary: str  # the CMU dictionary entries of its words
    words: int  # distinct words in the texts
    oov: tuple[str, ...]  # words with no CMU pronunciation (the judge cannot say them)


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError:
        raise JudgeError("pocketsphinx: expected the package (pip install "
                         "pocketsphinx==5.1.1, the `tts-eval` extra), got ImportError") from None
    return pocketsphinx


def sphinx_lm(texts: Sequence[str], cache_dir: str) -> SphinxLM:
    """The corpus LM of `texts` (normalized), written once under `cache_dir` and reused: the
    file names carry a hash of the texts, so another corpus gets another LM."""
    from chorus.atomic import write_text

    ps = _pocketsphinx()
    from pocketsphinx.lm import ArpaBoLM

    texts = [t for t in texts if t]
    if not texts:
        raise JudgeError("sphinx_lm texts: expected at least one non-empty text, got none")
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    arpa = os.path.join(cache_dir, f"sphinx-{key}.arpa")
    dictionary = os.path.join(cache_dir, f"sphinx-{key}.dict")
    words = sorted({w for t in texts for w in t.split()})
    entries: dict[str, list[str]] = {}
    with open(ps.get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as f:
        wanted = set(words)
        for line in f:
            head = line.split(maxsplit=1)[0] if line.strip() else ""
            base = head.split("(")[0]
            if base in wanted:
                entries.setdefault(base, []).append(line if line.endswith("\n") else line + "\n")
    oov = tuple(w for w in words if w not in entries)
    if not (os.path.isfile(arpa) and os.path.isfile(dictionary)):
        lm = ArpaBoLM(text="\n".join(texts), add_start=True)
        lm.compute()
        buf = io.StringIO()
        lm.write(buf)
        write_text(arpa, buf.getvalue())
        write_text(dictionary, "".join(line for w in sorted(entries) for line in entries[w]))
    return SphinxLM(arpa, dictionary, len(words), oov)


def sphinx_input(wave: np.ndarray) -> bytes | None:
    """16-bit PCM of a clip peak-normalized to SPHINX_PEAK with SPHINX_PAD_S of silence each
    side; None for silence (nothing to recognize)."""
    wave = np.asarray(wave, np.float32)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak < SILENT_PEAK:
        return None
    pad = np.zeros(int(SPHINX_PAD_S * SAMPLE_RATE), np.float32)
    x = np.concatenate([pad, wave * (SPHINX_PEAK / peak), pad])
    return np.round(x * 32767).astype(np.int16).tobytes()


class SphinxJudge:
    """pocketsphinx's bundled US English acoustic model with the corpus LM (`lm`), or with
    its bundled default LM and dictionary (`lm=None`)."""

    def __init__(self, lm: SphinxLM | None):
        ps = _pocketsphinx()
        self.lm = lm
        self.name = "sphinx" if lm is not None else "sphinx_default_lm"
        kwargs = {} if lm is None else {"lm": lm.arpa, "dict": lm.dictionary}
        try:
            self._decoder = ps.Decoder(loglevel="FATAL", **kwargs)
        except RuntimeError as e:
            raise JudgeError(f"pocketsphinx: cannot load {kwargs or 'its default model'}: "
                             f"{_first_line(e)}") from None

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        out = []
        for wave in waves:
            pcm = sphinx_input(wave)
            if pcm is None:
                out.append("")
                continue
            # full_utt: the whole clip at once, so cepstral mean normalization is the clip's
            # own (no state carried from the previous clip: the order does not matter).
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
            out.append(hyp.hypstr if hyp is not None else "")
        return out


# ----------------------------------------------------------------------------- chorus ASR


class ChorusAsrJudge:
    """The chorus ASR run (verified decoding); clips longer than its train.max_mel_frames are
    cut there, and counted in `truncated`."""

    name = "chorus_asr"

    def __init__(self, transcriber, mesh=None):
        self.transcriber, self.mesh = transcriber, mesh  # the mesh its params live on
        self.truncated = 0

    @classmethod
    def load(cls, asr_run: str, field: str = "experiment.asr_run") -> ChorusAsrJudge:
        from experiments.asr.transcriber import load_transcriber

        if not asr_run:
            raise JudgeError(f"{field}: expected the ASR run that judges intelligibility "
                             f"(`chorus train --experiment asr` workdir), got ''")
        path = os.path.expanduser(asr_run)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise JudgeError(f"{field}: expected an ASR run directory with a config.json, got "
                             f"{asr_run!r}")
        try:
            transcriber, run = load_transcriber(path)
        except Exception as e:  # noqa: BLE001 -- any restore failure is reported on one line
            raise JudgeError(f"{field}: cannot load the ASR run {asr_run!r}: "
                             f"{_first_line(e)}") from None
        return cls(transcriber, run.mesh)

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        from chorus import sharding
        from chorus.audio.mel import log_mel
        from experiments.asr.regime import asr_prompt
        from experiments.asr.transcriber import pad_requests

        t = self.transcriber
        examples = []
        for wave in waves:
            frames = log_mel(np.asarray(wave, np.float32))
            if frames.shape[0] > t.max_frames:
                self.truncated += 1
                frames = frames[:t.max_frames]
            examples.append({"prompt_tokens": asr_prompt(t.layout, len(frames)),
                             "audio_features": frames,
                             "audio_mask": np.ones(len(frames), bool)})
        out = []
        # Under the run's own mesh, whatever mesh the caller has active (a TTS checkpoint's).
        with sharding.activate(self.mesh) if self.mesh is not None else contextlib.nullcontext():
            for i in range(0, len(examples), ASR_BATCH):
                chunk = examples[i:i + ASR_BATCH]
                # Fixed batch shape (one compile): pad the last chunk with its first row.
                padded = chunk + [chunk[0]] * (ASR_BATCH - len(chunk))
                texts = t.texts(t.decode(pad_requests(padded, t.layout, t.max_frames)))
                out += texts[:len(chunk)]
        return out


# ----------------------------------------------------------------------------- quality


DNSMOS_KEYS = ("ovrl", "sig", "bak", "p808")


class Dnsmos:
    """DNSMOS P.835 (overall, signal, background) and P.808 MOS, 1-5, from the ONNX models
    bundled in the speechmos wheel (no download). Clips under 9 s are tiled to 9 s by
    speechmos, as the DNS challenge scorer does."""

    name = "dnsmos"

    def __init__(self):
        try:
            from speechmos import dnsmos
        except ImportError as e:
            raise JudgeError(f"dnsmos: expected the speechmos and onnxruntime packages "
                             f"(pip install speechmos==0.0.1.1 onnxruntime==1.31.1), got "
                             f"{_first_line(e)}") from None
        self._run = dnsmos.run

    def score(self, waves: Sequence[np.ndarray]) -> list[dict[str, float]]:
        out = []
        for wave in waves:
            wave = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
            if wave.size == 0 or float(np.abs(wave).max()) < SILENT_PEAK:
                # speechmos would tile silence forever / divide by zero: no score for it
                out.append({k: float("nan") for k in DNSMOS_KEYS})
                continue
            r = self._run(wave, SAMPLE_RATE)
            out.append({k: float(r[f"{k}_mos"]) for k in DNSMOS_KEYS})
        return out


# ----------------------------------------------------------------------------- speakers


class CodecSpeaker:
    """The codec's speaker encoder (trained here, on the corpus' voices)."""

    name = "codec_sim"

    def __init__(self, codec):
        self.codec = codec

    def embed(self, wave: np.ndarray) -> np.ndarray:
        return np.asarray(self.codec.speaker_embedding(np.asarray(wave, np.float32)))


class ResemblyzerSpeaker:
    """Resemblyzer's GE2E speaker encoder with its bundled weights: a verifier not trained
    here. Optional (it pulls torch): `available()` says whether it is installed."""

    name = "resemblyzer_sim"

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("resemblyzer") is not None

    def __init__(self):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as e:
            raise JudgeError(f"resemblyzer: expected the optional package (pip install "
                             f"resemblyzer==0.1.4 torch), got {_first_line(e)}") from None
        self._encoder = VoiceEncoder(device="cpu", verbose=False)
        self._preprocess = preprocess_wav

    def embed(self, wave: np.ndarray) -> np.ndarray:
        wave = self._preprocess(np.asarray(wave, np.float32), source_sr=SAMPLE_RATE)
        return np.asarray(self._encoder.embed_utterance(wave), np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    from chorus.codec.speaker import cosine

    return float(cosine(a, b))


# ----------------------------------------------------------------------------- the panel


@dataclasses.dataclass
class Judges:
    """The panel one evaluation uses for every system (so the rows compare)."""

    asr: list  # objects with .name and .transcribe(waves) -> texts
    quality: Dnsmos | None = None
    speakers: list = dataclasses.field(default_factory=list)  # .name, .embed(wave)
    seen_voices: frozenset[str] = frozenset()  # voices of the training split

    def __post_init__(self):
        names = [j.name for j in (*self.asr, *self.speakers)]
        if len(set(names)) != len(names):
            raise JudgeError(f"Judges: expected distinct judge names, got {names}")
        if not self.asr:
            raise JudgeError("Judges.asr: expected at least one ASR judge, got none")


def build_judges(data_dir: str, cache_dir: str, *, asr_run: str = "", codec=None,
                 default_lm: bool = True, dnsmos: bool = True,
                 resemblyzer: bool | None = None, train_split: str = "train",
                 dataset: str = "chorus_speech") -> Judges:
    """The standard panel: pocketsphinx with the corpus LM (and its default LM when
    `default_lm`), the chorus ASR when `asr_run`, DNSMOS, the codec's speaker encoder when
    `codec`, and resemblyzer (None: when installed)."""
    corpus = corpus_texts(data_dir, train_split, dataset)
    asr = [SphinxJudge(sphinx_lm(corpus.texts, cache_dir))]
    if default_lm:
        asr.append(SphinxJudge(None))
    if asr_run:
        asr.append(ChorusAsrJudge.load(asr_run))
    speakers = [CodecSpeaker(codec)] if codec is not None else []
    if resemblyzer or (resemblyzer is None and ResemblyzerSpeaker.available()):
        speakers.append(ResemblyzerSpeaker())
    return Judges(asr=asr, quality=Dnsmos() if dnsmos else None, speakers=speakers,
                  seen_voices=corpus.voices)
