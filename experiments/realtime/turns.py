"""The corpus' dialogue turns as prompts, and the text answers read back: what SFT evaluation,
the RL task and the rewards share.

    examples = dialogue_examples(config, settings, "test", 200)   # make_eval_iterator dicts
    exchange_json(examples[0])     # '{"persona": .., "question": .., "answer": ..}': a reference
    mask = text_answer_mask(layout)   # text ids + <tts_start>: what a text answer may emit
    answer_text(ids, tokenizer, layout)   # the text before <tts_start>
"""

from __future__ import annotations

import json

import numpy as np

from chorus.config import Config, ConfigError
from chorus.vocab import VocabLayout
from experiments.asr.settings import data_dir
from experiments.realtime.regime import DialogueRegime
from experiments.realtime.settings import RealtimeSettings

ANSWER_END = "<tts_start>"  # the text answer hands over to speech here


def dialogue_examples(config: Config, settings: RealtimeSettings, split: str,
                      max_examples: int | None, cards: str = "corpus",
                      out_of_scope: bool = False) -> list[dict]:
    """The first `max_examples` dialogue turns of `split` (prompt_tokens, audio_features,
    audio_mask, reference_text, persona, question), with their corpus cards or fresh ones
    (`cards`: DialogueRegime's); with `out_of_scope`, its out-of-scope requests instead (the
    split's other utterances, each with a fresh card and the persona's decline as the
    reference). ConfigError when there are none."""
    from data_pipelines import make_eval_iterator
    from data_pipelines.sources import SourceError

    folder = data_dir(settings)
    scope = dict(out_of_scope=1.0, scope="out_of_scope") if out_of_scope else {}
    regime = DialogueRegime(cards=cards, held_out_every=settings.held_out_every, **scope)
    try:
        examples = list(make_eval_iterator(
            regime, folder, split, VocabLayout.from_model_config(config.model),
            dataset_name=settings.dataset, max_frames=config.train.max_mel_frames,
            seq_len=config.train.seq_len, max_examples=max_examples))
    except (SourceError, ValueError) as e:  # a missing split, or one without dialogue turns
        raise ConfigError(f"experiment.eval_splits / data_dir: split {split!r} of {folder}: "
                          f"{e}") from None
    if not examples:
        raise ConfigError(f"{folder}: split {split!r} has no usable dialogue turn")
    return examples


def exchange_json(example: dict) -> str:
    """The reference of one turn: its card and question (what the persona rewards and the
    judge read) and the corpus' answer (the RL task's SFT / DPO target)."""
    return json.dumps({"persona": example["persona"], "question": example["question"],
                       "answer": example["reference_text"]})


def text_answer_mask(layout: VocabLayout) -> np.ndarray:
    """bool [V]: text ids and <tts_start> (the grammar of the session's text phase)."""
    mask = np.zeros((layout.size,), bool)
    mask[:layout.text_size] = True
    mask[layout.special(ANSWER_END)] = True
    return mask


def answer_text(ids, tokenizer, layout: VocabLayout) -> str:
    """The text of an answer's ids: its text tokens before the first <tts_start> (or <eos>)."""
    ids = np.asarray(ids).reshape(-1)
    ends = np.flatnonzero(np.isin(ids, [layout.special(ANSWER_END), layout.eos_id]))
    body = ids[:ends[0]] if ends.size else ids
    return tokenizer.decode([int(t) for t in body if t < layout.text_size])
