"""The judge's reward: p(yes) / (p(yes) + p(no)) at <verdict>, after the judge's rationale.

    scorer = JudgeScorer(model, params["backbone"], tokenizer, settings)
    j = scorer.pointwise(cards, questions, answers)             # j.reward [n] in (0, 1)
    p = scorer.pairwise(cards, questions, answers_a, answers_b)  # p.reward [n]: a is better

Pointwise: the prompt ends at <rationale>; the judge writes its rationale (greedy, or K =
experiment.reward_samples samples at sample_temperature) over the KV cache
(chorus.rl.rollout.sample, chorus.decoding.generate) until it emits <verdict> (appended when
it does not within max_rationale_tokens); one teacher-forced forward of prompt + rationale then
gives the verdict logits, and the reward is the mean over samples of
sigmoid(logit<yes> - logit<no>) = p(yes) / (p(yes) + p(no)). A judge trained without
rationales (experiment.rationale=false) is asked `<rationale> <verdict>` directly.

Pairwise: the same with <choice_a> / <choice_b>, in both orderings; the reward that a beats b
is 0.5 * (q(a, b) + 1 - q(b, a)) with q(x, y) = p(<choice_a>) / (p(<choice_a>) +
p(<choice_b>)) for x in slot a: position bias cancels, and reward(a, b) = 1 - reward(b, a).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import DecodeConfig
from chorus.model.unified import UnifiedAudioLM
from chorus.rl import rollout
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import TextTokenizer
from experiments.judge.prompt import VERDICTS, judge_prompt, pair_prompt
from experiments.judge.settings import JudgeSettings

WIDTH_MULTIPLE = 16  # rows are padded to this, so scoring compiles for few widths


@dataclasses.dataclass(frozen=True)
class Judgement:
    reward: np.ndarray  # [n] mean over samples of p(first) / (p(first) + p(second))
    samples: np.ndarray  # [n, K] the per-rationale values
    rationales: tuple[tuple[str, ...], ...]  # [n][K] the rationale texts
    rationale_ids: tuple[tuple[np.ndarray, ...], ...]  # [n][K] their ids, <verdict> last
    verdict_mass: np.ndarray  # [n] mean p(first) + p(second) over the whole vocabulary


@functools.partial(jax.jit, static_argnames=("model",))
def _verdict_logits(model: UnifiedAudioLM, params, rows: dict) -> jax.Array:
    """Log-softmax of the next-token logits at each row's last token, [R, V]."""
    out = model.apply({"params": params}, rows["tokens"], rows["positions"],
                      rows["segment_ids"])
    last = jnp.take_along_axis(out["logits"], rows["last"][:, None, None], axis=1)[:, 0]
    return jax.nn.log_softmax(last.astype(jnp.float32), axis=-1)


def round_up(n: int) -> int:
    """A row width for `n` tokens: a multiple of WIDTH_MULTIPLE."""
    return max(WIDTH_MULTIPLE, -(-n // WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def padded_rows(sequences: Sequence[np.ndarray], width: int, pad_id: int) -> dict:
    """Id sequences as right-padded rows: tokens, positions, segment_ids [R, width] and last
    [R] (the index of each row's last token). ValueError when one is longer than `width`."""
    longest = max((len(x) for x in sequences), default=0)
    if longest > width:
        raise ValueError(f"expected exchanges of <= {width} tokens, got {longest}")
    tokens, lengths = rollout.stack_ids(list(sequences), width, pad_id)
    valid = np.arange(width)[None, :] < lengths[:, None]
    return {"tokens": tokens, "segment_ids": valid.astype(np.int32),
            "positions": np.where(valid, np.arange(width)[None, :], 0).astype(np.int32),
            "last": (lengths - 1).astype(np.int32)}


class JudgeScorer:
    """Batched judge scoring with one run's backbone params (unboxed, on their mesh)."""

    def __init__(self, model: UnifiedAudioLM, params, tokenizer: TextTokenizer,
                 settings: JudgeSettings):
        self.model, self.params, self.tokenizer, self.settings = model, params, tokenizer, settings
        self.layout = VocabLayout.from_model_config(model.config.model)

    def encode(self, text: str) -> np.ndarray:
        return self.tokenizer.encode(text)

    # ------------------------------------------------------------------ public API

    def pointwise(self, cards: Sequence[str], questions: Sequence[str], answers: Sequence[str],
                  *, samples: int | None = None, rng: jax.Array | None = None) -> Judgement:
        """p(yes) / (p(yes) + p(no)) per exchange; samples: K rationales (None: the settings'
        reward_samples; 0 = one greedy rationale)."""
        n = _same_length(cards=cards, questions=questions, answers=answers)
        prompts = [judge_prompt(self.layout, self.encode, cards[i], questions[i], answers[i])
                   for i in range(n)]
        return self._judge(prompts, VERDICTS["pointwise"], samples, rng)

    def pairwise(self, cards: Sequence[str], questions: Sequence[str],
                 answers_a: Sequence[str], answers_b: Sequence[str], *,
                 samples: int | None = None, rng: jax.Array | None = None) -> dict:
        """{"reward": [n] a beats b, averaged over both orderings, "a_first": q(a, b),
        "b_first": q(b, a)} (q: p(<choice_a>) / (p(<choice_a>) + p(<choice_b>)))."""
        n = _same_length(cards=cards, questions=questions, answers_a=answers_a,
                         answers_b=answers_b)
        prompts = [pair_prompt(self.layout, self.encode, cards[i], questions[i], x, y)
                   for i in range(n) for x, y in ((answers_a[i], answers_b[i]),
                                                  (answers_b[i], answers_a[i]))]
        judged = self._judge(prompts, VERDICTS["pairwise"], samples, rng)
        a_first, b_first = judged.reward[0::2], judged.reward[1::2]
        return {"reward": 0.5 * (a_first + 1.0 - b_first), "a_first": a_first,
                "b_first": b_first, "judgement": judged}

    # ------------------------------------------------------------------ internals

    def _judge(self, prompts: list[np.ndarray], verdict: tuple[str, str], samples: int | None,
               rng: jax.Array | None) -> Judgement:
        s = self.settings
        k = s.reward_samples if samples is None else samples
        if not isinstance(k, int) or k < 0:
            raise ValueError(f"samples: expected an int >= 0 (0 = greedy rationale), got {k!r}")
        if not prompts:
            return Judgement(np.zeros(0), np.zeros((0, max(k, 1))), (), (), np.zeros(0))
        rng = jax.random.key(0) if rng is None else rng
        lay = self.layout
        first, second = (lay.special(v) for v in verdict)
        values, masses, texts, rationale_ids = [], [], [], []
        for start in range(0, len(prompts), s.eval_batch):
            chunk = prompts[start: start + s.eval_batch]
            rows = chunk + [chunk[-1]] * (s.eval_batch - len(chunk))  # one compiled batch size
            rationales = self._rationales(rows, k, jax.random.fold_in(rng, start))
            g = len(rationales) // len(rows)
            full = [np.concatenate([rows[i // g], r]) for i, r in enumerate(rationales)]
            logp = self._last_logprobs(full)
            value = 1.0 / (1.0 + np.exp(logp[:, second] - logp[:, first]))
            mass = np.exp(logp[:, first]) + np.exp(logp[:, second])
            keep = len(chunk) * g
            values.append(value[:keep].reshape(len(chunk), g))
            masses.append(mass[:keep].reshape(len(chunk), g).mean(-1))
            texts += [tuple(self._text(r) for r in rationales[i * g:(i + 1) * g])
                      for i in range(len(chunk))]
            rationale_ids += [tuple(rationales[i * g:(i + 1) * g]) for i in range(len(chunk))]
        per_sample = np.concatenate(values).astype(np.float64)
        return Judgement(per_sample.mean(-1), per_sample, tuple(texts), tuple(rationale_ids),
                         np.concatenate(masses).astype(np.float64))

    def _rationales(self, prompts: list[np.ndarray], k: int, rng) -> list[np.ndarray]:
        """Each prompt's rationale ids ending with <verdict> (max(k, 1) per prompt, in
        contiguous groups): empty for a judge without rationales."""
        verdict_id = self.layout.special("<verdict>")
        if not self.settings.rationale:
            return [np.asarray([verdict_id], np.int32) for _ in prompts]
        ids, lengths = rollout.stack_ids(prompts, round_up(max(len(p) for p in prompts)),
                                         self.layout.pad_id)
        decode = DecodeConfig(max_new_tokens=self.settings.max_rationale_tokens,
                              temperature=0.0 if k == 0 else self.settings.sample_temperature)
        out = rollout.sample(self.model, self.params, ids, lengths, rng, decode,
                             num_samples=max(k, 1), stop_tokens=(verdict_id,))
        tokens, counts = np.asarray(out.tokens), np.asarray(out.lengths)
        result = []
        for row, count in zip(tokens, counts, strict=True):
            r = row[:count]
            if not (count and r[-1] == verdict_id):
                r = np.append(r, verdict_id)
            result.append(r.astype(np.int32))
        return result

    def _last_logprobs(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Log-softmax at each sequence's last token, [R, V] (teacher-forced, padded rows)."""
        rows = padded_rows(sequences, round_up(max(len(x) for x in sequences)),
                           self.layout.pad_id)
        return np.asarray(rollout.on_params_mesh(_verdict_logits, self.model, self.params, rows))

    def _text(self, rationale: np.ndarray) -> str:
        text = rationale[rationale < self.layout.text_size]
        return self.tokenizer.decode(text)


def _same_length(**columns: Sequence) -> int:
    lengths = {name: len(v) for name, v in columns.items()}
    n = next(iter(lengths.values()))
    if any(v != n for v in lengths.values()):
        raise ValueError(f"judge inputs: expected one entry per exchange in every column, got "
                         f"lengths {lengths}")
    return n
