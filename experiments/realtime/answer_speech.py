"""The spoken answers: every answer a persona can give, spoken by eSpeak NG and encoded by a
trained codec once, cached beside the corpus, read by the answer's text.

    cache = answer_speech(codec_run, data_dir)     # built on first use (process 0), then opened
    cache.get("My name is Maya.")["codes"]          # int32 [n] 25 Hz codes
    answer_codes(cache, "My name is Maya.")         # the same, or None for an unknown answer

The dialogue turn's target is the answer's text, `<tts_start>`, these codes, `<tts_end>`
(DialogueRegime with `answer_codes`). Fresh cards re-derive each turn's answer, so the cache
holds all of them (`personas.every_answer`: ~2,200 for the default lexicon, the held-out
names and places included for evaluation; eSpeak speaks one in ~2 ms).

The codes are the words, spoken in one voice (`voice`, an eSpeak catalog name); the voice a
listener hears is the persona's, the codec detokenizer's speaker (the card's `voice`, as
`chorus chat` speaks it): the codec's flow takes its speaker as an embedding beside the codes.

    <data_dir>/caches/<codec producer key>/persona_answers-<voice>.{array_record,meta.json}

The meta's `answers_sha1` names the answer list it holds; a cache made for another list (a
changed lexicon or template) is rebuilt rather than read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import jax
import numpy as np

from data_pipelines.record_cache import ArraySpec, CacheError, RecordCache, write_record_cache

SPLIT_PREFIX = "persona_answers"
CODES = "codes"
DEFAULT_VOICE = "en-us"
HINT = ("it is written by `chorus train --experiment realtime` with experiment.codec_run set "
        "(experiments/realtime/answer_speech.py)")


def answers_sha1(texts: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(texts).encode()).hexdigest()


def split_name(voice: str) -> str:
    return f"{SPLIT_PREFIX}-{voice}"


def _entries(codec, texts: Sequence[str], voice: str):
    from data_pipelines.synthesis import synthesize

    for text in texts:
        wave, _ = synthesize(text, voice=voice)
        yield text, {CODES: codec.encode(wave)}


def build_answer_speech(codec, data_dir: str, voice: str = DEFAULT_VOICE,
                        texts: Sequence[str] | None = None, progress: bool = False
                        ) -> RecordCache:
    """Speaks and encodes `texts` (default: every persona answer) with `codec` (a chorus
    Codec with its tokenizer), written as the cache of the codec's producer key; it is
    returned opened. Reuses a complete cache of the same answers."""
    from data_pipelines.personas import every_answer
    from data_pipelines.voices import get_voice
    from experiments.codec.corpus_codes import producer_key, wait_for_cache

    get_voice(voice)  # a clear error for an unknown voice before anything is spoken
    texts = tuple(every_answer() if texts is None else texts)
    if not texts or any(not t.strip() for t in texts):
        raise ValueError(f"answer speech texts: expected non-empty answers, got {len(texts)} "
                         f"with {sum(not t.strip() for t in texts)} empty")
    key, split, sha = producer_key(codec), split_name(voice), answers_sha1(texts)
    try:
        cache = RecordCache.open(data_dir, key, split, hint=HINT)
        if cache.meta.attrs.get("answers_sha1") == sha:
            return cache
    except CacheError:
        pass  # missing, or left incomplete by a killed run: (re)write it
    if jax.process_index() != 0:
        return wait_for_cache(data_dir, key, split, HINT)
    cfg = codec.cfg
    return write_record_cache(
        data_dir, key, split, _entries(codec, texts, voice), total=len(texts),
        arrays={CODES: ArraySpec("int32", (None,))}, progress=progress,
        attrs={"num_codes": cfg.fsq.num_codes, "voice": voice, "answers_sha1": sha,
               "codes_per_second": cfg.mel.sample_rate // cfg.mel.samples_per_code})


def answer_speech(codec_run: str, data_dir: str, voice: str = DEFAULT_VOICE,
                  num_codes: int | None = None, field: str = "experiment.codec_run"
                  ) -> RecordCache:
    """The spoken-answer cache of the codec trained in `codec_run` (built if missing), checked
    to hold `num_codes` codes (the model's model.num_audio_codes)."""
    from chorus.codec.pipeline import Codec
    from chorus.config import ConfigError
    from experiments.codec.corpus_codes import ENCODERS

    path = os.path.expanduser(codec_run)
    try:
        codec = Codec.load(path, networks=ENCODERS)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{field}: expected a trained codec run, got {codec_run!r}: "
                          f"{e}") from None
    if num_codes is not None and codec.cfg.fsq.num_codes != num_codes:
        raise ConfigError(f"{field}: the codec {codec_run!r} has num_codes="
                          f"{codec.cfg.fsq.num_codes}, expected model.num_audio_codes="
                          f"{num_codes}; --set model.num_audio_codes="
                          f"{codec.cfg.fsq.num_codes} or use a matching codec")
    with jax.set_mesh(None):  # the codec's jits run on its one device, whatever mesh is active
        return build_answer_speech(codec, data_dir, voice)


def answer_codes(cache: RecordCache, text: str) -> np.ndarray | None:
    """The codes of an answer, or None when the cache does not hold it."""
    entry = cache.get(text, (CODES,))
    return None if entry is None else entry[CODES]
