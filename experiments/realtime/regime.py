"""Realtime spoken dialogue: the supervised dialogue-turn regime the realtime mode builds on.

    prompt   <chat> <persona> card ... <user> <audio>xN <assistant>
    target   answer ... <tts_start> [codes ... <tts_end>]      supervised (loss_mask)

The text answer (the inner monologue) ends where the spoken answer begins: `<tts_start>`,
the token the RL task stops the text at. With `answer_codes` (answer_speech.py: every persona
answer spoken and encoded by a codec) the spoken answer follows: its codes, then `<tts_end>`,
what the streaming session (session.py) decodes and speaks.

A record is a dialogue turn when its persona card is non-empty (`chorus data synth` makes
15 % of train/validation/test such turns: a persona question as audio, the card and the
answer as text); `DialogueRegime.accepts` keeps those, and with `out_of_scope` a share of the
corpus' other utterances (commands, facts, questions no card answers) as **out-of-scope
requests**: a fresh card, the user's utterance as audio, and the persona's in-character
decline (`personas.decline`) as the answer. `chorus train --experiment realtime`
(experiment.py) trains on these streams.

    from data_pipelines import make_train_iterator
    it = make_train_iterator(DialogueRegime(), data_dir, "train", layout)
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import ClassVar, Literal

import numpy as np

from data_pipelines.personas import answer, decline, sample_persona, split_lexicon
from data_pipelines.record_cache import RecordCache
from data_pipelines.records import Skip
from data_pipelines.regime import ExampleInputs
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap
from data_pipelines.streams import Stream, assemble, audio_placeholders, ids
from experiments.realtime.answer_speech import answer_codes
from experiments.realtime.checker import OUT_OF_SCOPE, request_kind

CARDS = ("corpus", "train", "held_out")
SCOPES = ("all", "out_of_scope")


def _nonempty(value) -> bool:
    return value is not None and len(value) > 0


def _unit(raw: dict, fields: FieldMap) -> float:
    """A record's place in [0, 1), from a hash of its id (or its transcript)."""
    key = raw.get(fields.id) if fields.id is not None else None
    if key is None:
        key = raw.get(fields.text, b"")
    key = key if isinstance(key, bytes) else str(key).encode()
    return zlib.crc32(key) / 2**32


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
      out_of_scope  the share of the corpus' other utterances taken as out-of-scope
                    requests (chosen by a hash of the record id: the same records every
                    epoch); an utterance that contains a persona question is skipped
                    ("ambiguous_request"), it is not out of scope
      scope         "all": dialogue turns and the out-of-scope requests; "out_of_scope":
                    only the latter (their evaluation)
      answer_codes  None: the target ends at <tts_start>; a spoken-answer cache
                    (answer_speech.py): the answer's codes and <tts_end> follow (an answer it
                    lacks is skipped and counted, "missing_cache_entry")
      speech_weight their loss weight beside the text answer's 1 (an answer has ~4 codes per
                    text token, so at 1 the codes hold ~80 % of the loss)
    An out-of-scope request's card is always a fresh one (it has none in the corpus): of the
    training names and places (drawn anew each time in training), or with cards="held_out"
    of the held-out ones (seeded by the record id, as a dialogue turn's).
    """

    fresh_cards: float = 0.0
    cards: Literal["corpus", "train", "held_out"] = "corpus"
    held_out_every: int = 4
    out_of_scope: float = 0.0
    scope: Literal["all", "out_of_scope"] = "all"
    answer_codes: RecordCache | None = None
    speech_weight: float = 1.0

    name: ClassVar[str] = "dialogue"
    audio_input: ClassVar[bool] = True
    cached: ClassVar[tuple[str, ...]] = ()

    @property
    def required_texts(self) -> tuple[str, ...]:
        """Card and answer, unless other utterances are taken too (they have neither)."""
        return () if self.out_of_scope else ("persona", "answer")

    def accepts(self, raw: dict, fields: FieldMap = DEFAULT_FIELDS) -> bool:
        """Dialogue turns (a non-empty persona card: the raw record's `fields.persona` key;
        the data pipeline passes its FieldMap) unless scope="out_of_scope", and the
        `out_of_scope` share of the other records."""
        if fields.persona is not None and _nonempty(raw.get(fields.persona)):
            return self.scope == "all"
        return bool(self.out_of_scope) and _unit(raw, fields) < self.out_of_scope

    def __post_init__(self):
        if not 0 <= self.fresh_cards <= 1:
            raise ValueError(f"DialogueRegime.fresh_cards: expected a probability in [0, 1], "
                             f"got {self.fresh_cards!r}")
        if self.cards not in CARDS:
            raise ValueError(f"DialogueRegime.cards: expected one of {list(CARDS)}, got "
                             f"{self.cards!r}")
        if not 0 <= self.out_of_scope <= 1:
            raise ValueError(f"DialogueRegime.out_of_scope: expected a fraction in [0, 1], got "
                             f"{self.out_of_scope!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"DialogueRegime.scope: expected one of {list(SCOPES)}, got "
                             f"{self.scope!r}")
        if not self.speech_weight > 0:
            raise ValueError(f"DialogueRegime.speech_weight: expected a loss weight > 0, got "
                             f"{self.speech_weight!r}")
        if self.scope == "out_of_scope" and not self.out_of_scope:
            raise ValueError("DialogueRegime.scope: 'out_of_scope' takes no dialogue turn, so "
                             "expected out_of_scope > 0, got 0")
        split_lexicon(every=self.held_out_every)  # checks it

    def card_and_answer(self, ex: ExampleInputs) -> tuple[str, str] | Skip:
        """The turn's (card, answer): the record's, or a fresh card's (see the class doc)."""
        record = ex.record
        if not record.persona:  # an out-of-scope request
            if request_kind(record.text) != OUT_OF_SCOPE:
                return Skip("ambiguous_request", f"{record.id}: {record.text!r} has no card "
                                                 "but asks a persona question")
            part = 2 if self.cards == "held_out" else 1
            # 7: a stream of its own, apart from the dialogue turns' [id, part] cards
            rng = (ex.rng if self.cards == "corpus" and ex.rng is not None else
                   np.random.default_rng([zlib.crc32(record.id.encode()), part, 7]))
            persona = sample_persona(rng, split_lexicon(every=self.held_out_every)[part - 1])
            return persona.card(), decline(persona)
        if not record.answer:
            return Skip("empty_text", f"{record.id}: a card without an answer")
        if self.cards != "corpus":
            part = CARDS.index(self.cards)  # 1 = train, 2 = held out
            rng = np.random.default_rng([zlib.crc32(record.id.encode()), part])
            lexicon = split_lexicon(every=self.held_out_every)[part - 1]
        elif ex.rng is not None and self.fresh_cards and ex.rng.random() < self.fresh_cards:
            rng, lexicon = ex.rng, split_lexicon(every=self.held_out_every)[0]
        else:
            return record.persona, record.answer
        kind = request_kind(record.text)
        if kind == OUT_OF_SCOPE:
            return Skip("unknown_question", f"{record.id}: {record.text!r} is none of the "
                                            "persona questions (data_pipelines.personas)")
        persona = sample_persona(rng, lexicon)
        return persona.card(), answer(persona, kind)

    def stream(self, ex: ExampleInputs) -> Stream | Skip:
        turn = self.card_and_answer(ex)
        if isinstance(turn, Skip):
            return turn
        card, reply = turn
        s = ex.layout.special
        spoken = []
        if self.answer_codes is not None:
            codes = answer_codes(self.answer_codes, reply)
            if codes is None:
                return Skip("missing_cache_entry", f"{ex.record.id}: no speech for the answer "
                                                   f"{reply!r} in {self.answer_codes.path}")
            weight = self.speech_weight
            spoken = [(ex.layout.audio_code_ids(codes), weight), (ids(s("<tts_end>")), weight)]
        return assemble([(ids(s("<chat>"), s("<persona>")), False),
                         (ex.encode(card), False), (ids(s("<user>")), False),
                         (audio_placeholders(ex.layout, len(ex.features)), False),
                         (ids(s("<assistant>")), False),
                         (ex.encode(reply), True), (ids(s("<tts_start>")), True), *spoken],
                        ex.layout.pad_id)

    def reference(self, ex: ExampleInputs) -> dict:
        card, reply = self.card_and_answer(ex)
        return {"reference_text": reply, "reference_ids": np.asarray(ex.encode(reply), np.int32),
                "persona": card, "question": ex.record.text,
                "question_wave": ex.record.wave}
