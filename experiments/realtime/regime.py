"""Realtime spoken dialogue: the supervised dialogue-turn regime the realtime mode builds on.

    prompt   <chat> <persona> card ... <user> <audio>xN <assistant>
    target   answer ... <tts_start>            supervised (loss_mask marks these positions)

The text answer (the inner monologue) ends where the spoken answer begins: `<tts_start>`,
the token the streaming session (session.py) and the RL task stop the text at.

A record is a dialogue turn when its persona card is non-empty (`chorus data synth` makes
15 % of train/validation/test such turns: a persona question as audio, the card and the
answer as text); `DialogueRegime.accepts` keeps only those. `chorus train --experiment
realtime` (experiment.py) trains on these streams; the spoken answer (codes after
<tts_start>) has no data yet.

    from data_pipelines import make_train_iterator
    it = make_train_iterator(DialogueRegime(), data_dir, "train", layout)
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import ClassVar, Literal

import numpy as np

from data_pipelines.personas import answer, sample_persona, split_lexicon
from data_pipelines.records import Skip
from data_pipelines.regime import ExampleInputs
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap
from data_pipelines.streams import Stream, assemble, audio_placeholders, ids
from experiments.realtime.checker import question_kind

CARDS = ("corpus", "train", "held_out")


def _nonempty(value) -> bool:
    return value is not None and len(value) > 0


@dataclasses.dataclass(frozen=True)
class DialogueRegime:
    """Persona card + the user's spoken question in, the assistant's text answer out, up to
    the `<tts_start>` that hands it to speech.

    The question's audio fixes only what is asked (its kind); any card can answer it. So a
    turn may take a fresh card, its answer re-derived from that card (`personas.answer`):
      fresh_cards   in training, the probability that a turn's card is replaced by one drawn
                    from the training part of the lexicon (the corpus has ~1,100 training
                    cards; a model that sees each a few times memorizes their facts instead
                    of reading them off the card)
      cards         "corpus": the record's own card (or a fresh one, with fresh_cards);
                    "held_out": every turn gets a card of the held-out names and places
                    (`split_lexicon(every=held_out_every)`), seeded by the record id: the
                    evaluation cards no training card named; "train": the same from the
                    training part (the RL task's training prompts)
    """

    fresh_cards: float = 0.0
    cards: Literal["corpus", "train", "held_out"] = "corpus"
    held_out_every: int = 4

    name: ClassVar[str] = "dialogue"
    required_texts: ClassVar[tuple[str, ...]] = ("persona", "answer")
    audio_input: ClassVar[bool] = True
    cached: ClassVar[tuple[str, ...]] = ()

    def accepts(self, raw: dict, fields: FieldMap = DEFAULT_FIELDS) -> bool:
        """Dialogue turns only: records with a non-empty persona card (the raw record's
        `fields.persona` key; the data pipeline passes its FieldMap)."""
        return fields.persona is not None and _nonempty(raw.get(fields.persona))

    def __post_init__(self):
        if not 0 <= self.fresh_cards <= 1:
            raise ValueError(f"DialogueRegime.fresh_cards: expected a probability in [0, 1], "
                             f"got {self.fresh_cards!r}")
        if self.cards not in CARDS:
            raise ValueError(f"DialogueRegime.cards: expected one of {list(CARDS)}, got "
                             f"{self.cards!r}")
        split_lexicon(every=self.held_out_every)  # checks it

    def card_and_answer(self, ex: ExampleInputs) -> tuple[str, str] | Skip:
        """The turn's (card, answer): the record's, or a fresh card's (see the class doc)."""
        record = ex.record
        if self.cards != "corpus":
            part = CARDS.index(self.cards)  # 1 = train, 2 = held out
            rng = np.random.default_rng([zlib.crc32(record.id.encode()), part])
            lexicon = split_lexicon(every=self.held_out_every)[part - 1]
        elif ex.rng is not None and self.fresh_cards and ex.rng.random() < self.fresh_cards:
            rng, lexicon = ex.rng, split_lexicon(every=self.held_out_every)[0]
        else:
            return record.persona, record.answer
        try:
            kind = question_kind(record.text)
        except ValueError as e:
            return Skip("unknown_question", f"{record.id}: {e}")
        persona = sample_persona(rng, lexicon)
        return persona.card(), answer(persona, kind)

    def stream(self, ex: ExampleInputs) -> Stream | Skip:
        turn = self.card_and_answer(ex)
        if isinstance(turn, Skip):
            return turn
        card, reply = turn
        s = ex.layout.special
        return assemble([(ids(s("<chat>"), s("<persona>")), False),
                         (ex.encode(card), False), (ids(s("<user>")), False),
                         (audio_placeholders(ex.layout, len(ex.features)), False),
                         (ids(s("<assistant>")), False),
                         (ex.encode(reply), True), (ids(s("<tts_start>")), True)],
                        ex.layout.pad_id)

    def reference(self, ex: ExampleInputs) -> dict:
        card, reply = self.card_and_answer(ex)
        return {"reference_text": reply, "reference_ids": np.asarray(ex.encode(reply), np.int32),
                "persona": card, "question": ex.record.text}
