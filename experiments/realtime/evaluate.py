"""Persona consistency of a realtime run's text answers: the table of `chorus eval`.

Each dialogue turn of `experiment.eval_splits` (the user's question as audio, a card never in
train: the corpus splits turns by card + question) is answered greedily up to <tts_start>,
then checked by the exact persona checker (checker.py):

    fact            the answer states the card's fact for what was asked
    style           in the card's style (its template, whatever the fact)
    in_character    neither an AI's voice nor a refusal
    consistent      all three
    exact           the answer is the corpus' reference answer, word for word

with the fact accuracy per question kind. The split's cards share names and places with
train (the corpus draws them from one lexicon); the judge's evaluation holds those out. On
out-of-scope requests (the split's other utterances, fresh held-out cards) `fact` is the
share declined (the reply is a decline, stating no fact), `style` declined in the card's style.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chorus.audio.text import normalize_text
from chorus.decoding import greedy_decode
from chorus.vocab import VocabLayout
from data_pipelines.personas import QUESTION_KINDS
from experiments.asr.transcriber import pad_requests
from experiments.realtime.checker import check_answer
from experiments.realtime.turns import ANSWER_END, answer_text, text_answer_mask

CHECKS = ("fact", "style", "in_character", "consistent", "exact")
WIDTH_BUCKET = 32  # prompt columns are padded to a multiple (few compiled shapes)


class Responder:
    """Greedy text answers of a backbone to dialogue-turn prompts, in fixed-shape batches."""

    def __init__(self, model, params, tokenizer, layout: VocabLayout, max_frames: int,
                 max_answer_tokens: int, batch_size: int = 8):
        self.model, self.params, self.tokenizer, self.layout = model, params, tokenizer, layout
        self.max_frames, self.batch_size = max_frames, batch_size
        self.max_new = max_answer_tokens + 1  # <tts_start> included
        self.allowed = jnp.asarray(text_answer_mask(layout))
        self.stop = (layout.special(ANSWER_END),)

    def answers(self, examples: Sequence[dict]) -> list[str]:
        longest = max(len(ex["prompt_tokens"]) for ex in examples)
        width = -(-longest // WIDTH_BUCKET) * WIDTH_BUCKET
        out = []
        for b in range(0, len(examples), self.batch_size):
            chunk = list(examples[b:b + self.batch_size])
            rows = chunk + chunk[-1:] * (self.batch_size - len(chunk))  # one shape
            request = pad_requests(rows, self.layout, self.max_frames, width)
            result = greedy_decode(
                self.model, self.params, jnp.asarray(request["prompts"]),
                jnp.asarray(request["lengths"]), max_new_tokens=self.max_new,
                stop_tokens=self.stop, allowed_ids=self.allowed,
                audio_features=jnp.asarray(request["audio_features"]),
                audio_mask=jnp.asarray(request["audio_mask"]))
            tokens, lengths = jax.device_get((result.tokens, result.lengths))
            out += [answer_text(tokens[r, :lengths[r]], self.tokenizer, self.layout)
                    for r in range(len(chunk))]
        return out


def persona_table(answers: Sequence[str], examples: Sequence[dict]) -> dict:
    """The checks' rates over the turns, the fact accuracy per question kind, and a few
    (question, answer, reference) samples."""
    totals, kinds = collections.Counter(), collections.defaultdict(list)
    for reply, ex in zip(answers, examples, strict=True):
        check = check_answer(ex["persona"], ex["question"], reply)
        exact = normalize_text(reply) == normalize_text(ex["reference_text"])
        for name, value in zip(CHECKS, (check.fact, check.style, check.in_character,
                                        check.consistent, exact), strict=True):
            totals[name] += int(value)
        kinds[check.kind].append(check.fact)
    n = len(examples)
    return {"turns": n, **{name: totals[name] / n for name in CHECKS},
            "fact_by_kind": {k: float(np.mean(kinds[k])) for k in QUESTION_KINDS if kinds[k]},
            "samples": [{"question": ex["question"], "answer": reply,
                         "reference": ex["reference_text"]}
                        for reply, ex in list(zip(answers, examples, strict=True))[:4]]}


def report_markdown(tables: dict[str, dict]) -> str:
    """{split: persona_table(...)} as a markdown table."""
    kinds = [k for k in QUESTION_KINDS if any(k in t["fact_by_kind"] for t in tables.values())]
    lines = ["| split | turns | " + " | ".join(CHECKS) + " | "
             + " | ".join(f"fact: {k}" for k in kinds) + " |",
             "|---" * (2 + len(CHECKS) + len(kinds)) + "|"]
    for split, t in tables.items():
        by_kind = [f"{t['fact_by_kind'][k]:.2f}" if k in t["fact_by_kind"] else "-"
                   for k in kinds]
        lines.append(f"| {split} | {t['turns']} | "
                     + " | ".join(f"{t[c]:.3f}" for c in CHECKS) + " | "
                     + " | ".join(by_kind) + " |")
    return "\n".join(lines) + "\n"
