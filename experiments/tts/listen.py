"""Hearing completions: codes -> waveform through one trained codec, once per completion.

    listener = listener_for("runs/codec", steps=None, guidance=None, seed=0)
    wave = listener.wave(completion.audio_codes, target.voice)    # decoded once, then memoized
    m = listener.memo(("controls", listener.key(codes, voice)), lambda: measure(...))

Several listening rewards in one mix (CER, speaker similarity, controls) ask for the same
completions' audio; the LRU memo (keyed by the codes' bytes and the voice) decodes each once,
and keeps what the rewards derived from it (a transcript, an embedding, measures) beside it.
One Listener per (codec run, flow settings) per process. `capacity` counts entries of every
kind (a completion makes up to five: wave, transcripts, embedding, measures), so the default
holds a few batches of a few hundred completions; the waves dominate its memory (6 s of
audio = 384 KB). The flow's speaker is the codec's mean embedding of the target voice
(`codec.voices`); a voice the codec held out of that table gets the mean embedding of its
recordings in the code cache (`more_voices`, read once when such a voice first comes up), and
the codec's first voice only when neither has it. Empty codes (a completion that stopped at
once) are no audio: `wave` returns an empty array without decoding; the rewards score it
worst.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from chorus.config import Config, ConfigError


class Listener:
    def __init__(self, codec, steps: int | None = None, guidance: float | None = None,
                 seed: int = 0, vocoder: str = "neural", capacity: int = 4096,
                 more_voices: Callable[[], dict] | None = None):
        if capacity < 1:
            raise ValueError(f"Listener.capacity: expected an int >= 1, got {capacity}")
        self.codec = codec
        self.steps, self.guidance = codec.flow_settings(steps, guidance)
        self.seed, self.vocoder, self.capacity = seed, vocoder, capacity
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()
        self.decodes = 0  # codec decodes run (the memo's misses for waves)
        self.more_voices = more_voices  # () -> {voice: embedding} beyond codec.voices
        self._more: dict | None = None

    @staticmethod
    def key(codes: np.ndarray, voice: str) -> tuple[bytes, str]:
        return np.ascontiguousarray(codes, np.int32).tobytes(), voice

    def __contains__(self, key: Hashable) -> bool:
        return key in self._memo

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """compute() once per key while it stays among the `capacity` most recent ones."""
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        value = compute()
        self._memo[key] = value
        while len(self._memo) > self.capacity:
            self._memo.popitem(last=False)
        return value

    def speaker(self, voice: str):
        if voice in self.codec.voices or self.more_voices is None:
            return self.codec.voices.get(voice)
        if self._more is None:
            self._more = {k: np.asarray(v, np.float32) for k, v in self.more_voices().items()}
        return self._more.get(voice)

    def wave(self, codes: np.ndarray, voice: str) -> np.ndarray:
        """The 16 kHz waveform of `codes` in `voice` (float32; empty for empty codes)."""
        codes = np.asarray(codes).reshape(-1)
        if codes.size == 0:
            return np.zeros((0,), np.float32)

        def decode():
            self.decodes += 1
            return np.asarray(self.codec.decode(codes, self.speaker(voice), self.steps,
                                                self.guidance, self.seed, self.vocoder),
                              np.float32)

        return self.memo(("wave", *self.key(codes, voice)), decode)


_LISTENERS: dict[tuple, Listener] = {}


def listener_for(codec_run: str, steps: int | None = None, guidance: float | None = None,
                 seed: int = 0, vocoder: str = "neural") -> Listener:
    """The process's one Listener of this codec run and flow settings (the codec loaded once)."""
    from chorus.codec.pipeline import Codec

    path = os.path.abspath(os.path.expanduser(codec_run))
    key = (path, steps, guidance, seed, vocoder)
    if key not in _LISTENERS:
        _LISTENERS[key] = Listener(Codec.load(path), steps, guidance, seed, vocoder)
    return _LISTENERS[key]


def listener_from_config(config: Config, field: str = "experiment.codec_run") -> Listener:
    """The Listener of a TTS (or TTS RL) run's `codec_run` and `decoding` flow settings."""
    from experiments.tts.settings import tts_settings

    settings = tts_settings(config)
    if not settings.codec_run:
        raise ConfigError(f"{field}: expected the codec run the listening rewards decode "
                          "through (--set experiment.codec_run=DIR), got ''")
    if not os.path.isdir(os.path.expanduser(settings.codec_run)):
        raise ConfigError(f"{field}: expected a codec run directory, got "
                          f"{settings.codec_run!r} (not a directory)")
    d = settings.decoding
    listener = listener_for(settings.codec_run, d.flow_steps, d.guidance, d.seed)
    if listener.more_voices is None:
        listener.more_voices = lambda: cached_voices(settings)
    return listener


def cached_voices(settings) -> dict:
    """Voice -> mean speaker embedding of its recordings in the train split's code cache,
    every voice included (the codec's voices.json leaves its held-out voices out)."""
    from data_pipelines.record_cache import RecordCache
    from data_pipelines.sources import open_source
    from experiments.codec.corpus_codes import voice_table

    data_dir = os.path.expanduser(settings.data_dir)
    cache = RecordCache.open(data_dir, settings.cache_key, settings.train_split)
    return voice_table(cache, open_source(settings.dataset, data_dir, settings.train_split),
                       frozenset())
