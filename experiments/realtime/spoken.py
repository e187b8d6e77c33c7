"""The spoken answers of a realtime run, judged: the spoken table of `chorus eval`.

Each held-out turn (a card of the held-out names and places, its voice one of the codec's
voices, picked by a hash of the turn's id) is played into a `Session` in 80 ms chunks as
`chorus chat` plays a WAV; the session answers with text, `<tts_start>`, codes, and the
codec's streaming detokenizer speaks them in the card's voice. Three rows, same turns:

    ground truth     the reference answer spoken by eSpeak NG in the card's voice
    codec            the reference answer's codes (answer_speech.py), decoded by the codec in
                     the card's voice: the ceiling a model that speaks codes can reach
    model            the session's own answer

and for each: CER by each ASR judge (pocketsphinx's bundled acoustic model with a language
model of every persona answer, a listener not trained here; the chorus ASR run when
`asr_run` is set, which has heard the corpus' questions but never its answers) and by the
codec's CTC head on the codes (cheap, the codec's own view), all against the row's text (for
the model: the text it wrote, "does it say what it wrote"); speaker
similarity (the codec's speaker encoder) to the card's voice; for the model also its persona
checks on the text, the share of answers that spoke and closed with `<tts_end>` before the
code cap, the answer's length, and end of speech -> first audio sample (p50 / p95).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from chorus.audio.text import normalize_text
from chorus.codec.speaker import cosine
from chorus.eval.text_metrics import error_rates

ROWS = ("ground truth", "codec", "model")


def card_voice(example: dict, voices: Sequence[str]) -> str:
    """The voice a held-out turn's persona speaks in: one of `voices`, by its id."""
    key = str(example.get("id", example["question"])).encode()
    return sorted(voices)[zlib.crc32(key) % len(voices)]


def _cer(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Corpus CER over the pairs whose reference has words (None when none has: an answer
    that wrote no words has nothing to be heard against)."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if normalize_text(r)]
    if not pairs:
        return None
    return error_rates(*zip(*pairs, strict=True))["cer"]


def model_answers(model, params, tokenizer, codec, examples: Sequence[dict], voices: list[str],
                  max_text_tokens: int, max_codes: int) -> list:
    """The session's TurnResult of each example (its question streamed in 80 ms chunks)."""
    from experiments.realtime.session import Session, SessionConfig, play

    longest = max(ex["question_wave"].size for ex in examples) / 16000
    config = SessionConfig(max_turn_seconds=math.ceil(longest) + 1.0,
                           max_text_tokens=max_text_tokens, max_codes=max_codes)
    out = []
    for ex, voice in zip(examples, voices, strict=True):
        session = Session(model, params, tokenizer, codec, ex["persona"], voice, config)
        out.append(play(session, ex["question_wave"]))
    return out


def _row(texts, waves, codes, voices, codec, judges) -> dict:
    spoken = [i for i, c in enumerate(codes) if c.size]
    picked = [texts[i] for i in spoken]
    cer = {j.name: _cer(picked, j.transcribe([waves[i] for i in spoken])) if spoken else None
           for j in judges}
    ctc = [codec.transcribe_codes(codes[i]) for i in spoken]
    sims = [float(cosine(codec.speaker_embedding(waves[i]), codec.voices[voices[i]]))
            for i in spoken if waves[i].size >= codec.min_samples]
    return {"cer": cer, "codec_ctc_cer": _cer(picked, ctc),
            "speaker_sim": float(np.mean(sims)) if sims else None,
            "seconds": float(np.mean([waves[i].size / 16000 for i in spoken])) if spoken else 0.0}


def answer_judge(cache_dir: str):
    """pocketsphinx with a trigram LM of every persona answer (written once under
    `cache_dir`)."""
    from data_pipelines.personas import every_answer
    from experiments.tts.judges import SphinxJudge, sphinx_lm

    return SphinxJudge(sphinx_lm([normalize_text(t) for t in every_answer()], cache_dir))


def spoken_table(model, params, tokenizer, codec, examples: Sequence[dict], answer_cache,
                 judges: Sequence = (), max_text_tokens: int = 32, max_codes: int = 150) -> dict:
    """{"turns", "judges", "rows": {row: {...}}, "model": {spoke, closed, consistency,
    latency}, "samples"} (the module doc); `judges`: ASR judges (.name, .transcribe)."""
    from data_pipelines.synthesis import synthesize
    from experiments.realtime.answer_speech import answer_codes
    from experiments.realtime.checker import check_answer

    if not codec.voices:
        raise ValueError("spoken table: the codec run has no voices.json (no voice to speak in)")
    voices = [card_voice(ex, codec.voices) for ex in examples]
    refs = [ex["reference_text"] for ex in examples]
    truth = [synthesize(r, voice=v)[0] for r, v in zip(refs, voices, strict=True)]
    truth_codes = [codec.encode(w) for w in truth]
    bank = [answer_codes(answer_cache, r) for r in refs]
    if any(c is None for c in bank):
        missing = [r for r, c in zip(refs, bank, strict=True) if c is None]
        raise ValueError(f"spoken table: {answer_cache.path} holds no speech for "
                         f"{len(missing)} reference answers, e.g. {missing[0]!r}")
    resynth = [codec.decode(c, speaker=v) for c, v in zip(bank, voices, strict=True)]
    turns = model_answers(model, params, tokenizer, codec, examples, voices, max_text_tokens,
                          max_codes)
    texts = [t.text for t in turns]
    rows = {"ground truth": _row(refs, truth, truth_codes, voices, codec, judges),
            "codec": _row(refs, resynth, bank, voices, codec, judges),
            "model": _row(texts, [t.wave for t in turns], [t.codes for t in turns], voices,
                          codec, judges)}
    checks = [check_answer(ex["persona"], ex["question"], t)
              for ex, t in zip(examples, texts, strict=True)]
    first = np.array([t.latency.first_audio_ms for t in turns if t.codes.size])
    model = {"spoke": float(np.mean([t.codes.size > 0 for t in turns])),
             "closed": float(np.mean([0 < t.codes.size < max_codes for t in turns])),
             "fact": float(np.mean([c.fact for c in checks])),
             "consistent": float(np.mean([c.consistent for c in checks])),
             "first_audio_ms_p50": float(np.percentile(first, 50)) if first.size else None,
             "first_audio_ms_p95": float(np.percentile(first, 95)) if first.size else None}
    return {"turns": len(examples), "judges": [j.name for j in judges], "rows": rows,
            "model": model,
            "samples": [{"question": ex["question"], "voice": v, "reference": ex["reference_text"],
                         "answer": t.text, "codes": int(t.codes.size),
                         "codec_heard": codec.transcribe_codes(t.codes) if t.codes.size else ""}
                        for ex, v, t in list(zip(examples, voices, turns, strict=True))[:4]]}


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def spoken_markdown(table: dict) -> str:
    m, judges = table["model"], table["judges"]
    lines = [f"Spoken answers ({table['turns']} held-out turns, each card in one of the codec's "
             f"voices; CER against the row's text):", "",
             "| row | " + "".join(f"{j} CER | " for j in judges)
             + "codec CTC CER | speaker sim | seconds |", "|---" * (4 + len(judges)) + "|"]
    for name in ROWS:
        r = table["rows"][name]
        lines.append(f"| {name} | " + "".join(f"{_fmt(r['cer'][j])} | " for j in judges)
                     + f"{_fmt(r['codec_ctc_cer'])} | {_fmt(r['speaker_sim'])} | "
                       f"{r['seconds']:.2f} |")
    lines += ["", f"model: spoke {m['spoke']:.3f}, closed with <tts_end> {m['closed']:.3f}, "
                  f"fact {m['fact']:.3f}, consistent {m['consistent']:.3f}, first audio "
                  f"p50 {_fmt(m['first_audio_ms_p50'], '.1f')} ms / p95 "
                  f"{_fmt(m['first_audio_ms_p95'], '.1f')} ms"]
    return "\n".join(lines) + "\n"
