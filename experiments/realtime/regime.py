"""Realtime spoken dialogue: the supervised dialogue-turn regime the realtime mode builds on.

    prompt   <chat> <persona> card ... <user> <audio>xN <assistant>
    target   answer ... <eos>                  supervised (loss_mask marks these positions)

A record is a dialogue turn when its persona card is non-empty (`chorus data synth` makes
15 % of train/validation/test such turns: a persona question as audio, the card and the
answer as text); `DialogueRegime.accepts` keeps only those. The realtime mode (streaming
input through `UnifiedAudioLM.extend`, the spoken answer as codes after <tts_start>) extends
this module; today it holds the regime for data_pipelines.

    from data_pipelines import make_train_iterator
    it = make_train_iterator(DialogueRegime(), data_dir, "train", layout)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from data_pipelines.regime import ExampleInputs
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap
from data_pipelines.streams import Stream, assemble, audio_placeholders, ids


def _nonempty(value) -> bool:
    return value is not None and len(value) > 0


@dataclasses.dataclass(frozen=True)
class DialogueRegime:
    """Persona card + the user's spoken question in, the assistant's text answer out."""

    name: ClassVar[str] = "dialogue"
    required_texts: ClassVar[tuple[str, ...]] = ("persona", "answer")
    audio_input: ClassVar[bool] = True
    cached: ClassVar[tuple[str, ...]] = ()

    def accepts(self, raw: dict, fields: FieldMap = DEFAULT_FIELDS) -> bool:
        """Dialogue turns only: records with a non-empty persona card (the raw record's
        `fields.persona` key; the data pipeline passes its FieldMap)."""
        return fields.persona is not None and _nonempty(raw.get(fields.persona))

    def stream(self, ex: ExampleInputs) -> Stream:
        s = ex.layout.special
        return assemble([(ids(s("<chat>"), s("<persona>")), False),
                         (ex.encode(ex.record.persona), False), (ids(s("<user>")), False),
                         (audio_placeholders(ex.layout, len(ex.features)), False),
                         (ids(s("<assistant>")), False),
                         (ex.encode(ex.record.answer), True), (ids(ex.layout.eos_id), True)],
                        ex.layout.pad_id)

    def reference(self, ex: ExampleInputs) -> dict:
        return {"reference_text": ex.record.answer,
                "reference_ids": np.asarray(ex.encode(ex.record.answer), np.int32),
                "persona": ex.record.persona}
