"""The ASR regime: its token layout, in one place.

    prompt   <asr> <audio>xN <transcript>      N = num_audio_placeholders(log-mel frames)
    target   text ... <eos>                    supervised (loss_mask marks these positions)

`asr_prompt(layout, num_mel_frames)` is THE prompt: the training stream, the evaluation
examples (`make_eval_iterator(AsrRegime(...), ...)["prompt_tokens"]`), `chorus transcribe`
and the RL task all get it from here. `AsrRegime` is the data_pipelines regime
(`data_pipelines.regime`): the record's audio is the input clip; the target is the raw
transcript or its `normalize_text` form (`target`). `eval_examples` is the evaluation pool
of a split (the decoding table and the RL task's prompts).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np

from chorus.audio.text import normalize_text
from chorus.config import Config, ConfigError
from chorus.vocab import VocabLayout
from data_pipelines.records import Record
from data_pipelines.regime import ExampleInputs
from data_pipelines.streams import Stream, assemble, audio_placeholders, ids
from experiments.asr.settings import AsrSettings, data_dir

AsrTarget = Literal["raw", "normalized"]


def asr_prompt(layout: VocabLayout, num_mel_frames: int) -> np.ndarray:
    """<asr> <audio>xN <transcript> for a clip of `num_mel_frames` log-mel frames."""
    s = layout.special
    return np.concatenate([ids(s("<asr>")), audio_placeholders(layout, num_mel_frames),
                           ids(s("<transcript>"))])


@dataclasses.dataclass(frozen=True)
class AsrRegime:
    """Speech in, transcript out. target: train on the raw transcript or normalize_text(it)."""

    target: AsrTarget = "raw"

    name: ClassVar[str] = "asr"
    required_texts: ClassVar[tuple[str, ...]] = ()
    audio_input: ClassVar[bool] = True
    cached: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        if self.target not in ("raw", "normalized"):
            raise ValueError(f"AsrRegime.target: expected 'raw' or 'normalized', got "
                             f"{self.target!r}")

    def target_text(self, record: Record) -> str:
        return record.text if self.target == "raw" else normalize_text(record.text)

    def stream(self, ex: ExampleInputs) -> Stream:
        text_ids = ex.encode(self.target_text(ex.record))
        return assemble([(asr_prompt(ex.layout, len(ex.features)), False),
                         (text_ids, True), (ids(ex.layout.eos_id), True)], ex.layout.pad_id)

    def reference(self, ex: ExampleInputs) -> dict:
        text = self.target_text(ex.record)
        return {"reference_text": text,
                "reference_ids": np.asarray(ex.encode(text), np.int32)}


def eval_examples(config: Config, settings: AsrSettings, split: str,
                  max_examples: int | None) -> list[dict]:
    """The first `max_examples` usable eval examples of `split` (make_eval_iterator: prompt,
    clip, reference_text, ...); ConfigError when the split has none or is missing."""
    from data_pipelines import make_eval_iterator
    from data_pipelines.sources import SourceError

    folder = data_dir(settings)
    try:
        examples = list(make_eval_iterator(
            AsrRegime(target=settings.asr_target), folder, split,
            VocabLayout.from_model_config(config.model), dataset_name=settings.dataset,
            max_frames=config.train.max_mel_frames, seq_len=config.train.seq_len,
            max_examples=max_examples))
    except SourceError as e:  # e.g. a corpus made before the split existed
        raise ConfigError(f"{e} (a corpus made before split {split!r} existed: synthesize a "
                          "new one, or choose other experiment.eval_splits)") from None
    if not examples:
        raise ConfigError(f"{folder}: split {split!r} has no usable ASR example")
    return examples
