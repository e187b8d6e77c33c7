"""The realtime experiment's settings: `--set experiment.<field>=...` of `chorus train
--experiment realtime` (RealtimeSettings) and `chorus rl --experiment realtime`
(RealtimeRLSettings: these keys, the RL keys and the prompt pools, flat)."""

from __future__ import annotations

import dataclasses

from chorus.config import Config, check, settings_from
from chorus.rl.settings import RLSettings


@dataclasses.dataclass(frozen=True)
class RealtimeSettings:
    data_dir: str = ""  # the prepared corpus (`--data DIR`); its dialogue turns are the data
    dataset: str = "chorus_speech"
    train_split: str = "train"
    eval_split: str = "validation"  # the trainer's periodic eval loop
    data_workers: int = 0  # grain worker processes per host (0 = in the training process)
    # A run whose exported backbone initializes this one: an ASR run (its encoder already
    # hears speech; the corpus' ~1,100 dialogue turns alone are too few to learn it).
    backbone_from: str = ""
    # Training turns whose card is replaced by a fresh one from the training names and places
    # (the answer re-derived; DialogueRegime): 1 = every turn, so no name or place of the
    # held-out part (every held_out_every-th, as the judge holds out) is ever on a training card.
    fresh_cards: float = 1.0
    held_out_every: int = 4
    # The share of the corpus' other utterances (commands, facts: ~85 % of a split) trained on
    # as out-of-scope requests, declined in character (DialogueRegime): 0.03 makes ~15 % of
    # the training turns. `chorus eval` adds their table (held-out cards) whatever the share.
    out_of_scope: float = 0.03
    # The persona table of `chorus eval` (experiments/realtime/evaluate.py): the dialogue
    # turns of these splits, at most eval_examples each, answered greedily, once with their
    # corpus cards and once with held-out cards; and as many out-of-scope requests.
    eval_splits: tuple[str, ...] = ("test",)
    eval_examples: int = 200
    max_answer_tokens: int = 32  # the text answer's cap (then <tts_start> is due)
    # The spoken answer (answer_speech.py): a trained codec run. Set, every turn's target goes
    # on after <tts_start> with the answer's codes (spoken by eSpeak in `answer_voice`,
    # encoded by this codec, cached beside the corpus on first use) and <tts_end>; `chorus
    # chat` speaks through it, and `chorus eval` adds the spoken table (spoken.py) of
    # spoken_eval_examples held-out turns, streamed through the session, their codes capped
    # at max_answer_codes; `asr_run` (an ASR run) judges their intelligibility beside the
    # codec's own CTC head. Empty: text answers up to <tts_start>.
    codec_run: str = ""
    answer_voice: str = "en-us"
    # The loss weight of the spoken answer (its codes and <tts_end>) beside the text's 1: an
    # answer has ~4 codes per text token, so at 1 the codes hold ~80 % of the loss and the
    # text answers lose most of their facts (README); 0.25 gives the text half of it.
    speech_weight: float = 0.25
    asr_run: str = ""
    spoken_eval_examples: int = 32
    max_answer_codes: int = 150

    def __post_init__(self):
        check(self.data_workers >= 0, "experiment.data_workers", "a number >= 0",
              self.data_workers)
        check(0 <= self.fresh_cards <= 1, "experiment.fresh_cards", "a probability in [0, 1]",
              self.fresh_cards)
        check(isinstance(self.held_out_every, int) and self.held_out_every >= 2,
              "experiment.held_out_every", "an int >= 2", self.held_out_every)
        check(0 <= self.out_of_scope <= 1, "experiment.out_of_scope", "a fraction in [0, 1]",
              self.out_of_scope)
        from data_pipelines.voices import VOICES

        check(self.answer_voice in {v.name for v in VOICES}, "experiment.answer_voice",
              "a voice of data_pipelines.voices ('en-us', 'en-gb+f3', ...)", self.answer_voice)
        check(self.speech_weight > 0, "experiment.speech_weight", "a loss weight > 0",
              self.speech_weight)
        check(isinstance(self.eval_splits, tuple) and len(self.eval_splits) > 0,
              "experiment.eval_splits", "at least one split", self.eval_splits)
        for name in ("eval_examples", "max_answer_tokens", "spoken_eval_examples",
                     "max_answer_codes"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"experiment.{name}", "an int >= 1",
                  value)


@dataclasses.dataclass(frozen=True)
class RealtimeRLSettings(RLSettings, RealtimeSettings):
    """`chorus rl --experiment realtime`: rewards such as {judge: {weight: 1, run: R},
    persona_rules: 0.5, persona_fact: 0} (a weight of 0 logs a component without training
    on it: the checker beside the judge)."""

    # Prompts: the first N dialogue turns of train with training-lexicon cards, and of
    # eval_splits[0] with held-out cards (DialogueRegime cards="train" / "held_out").
    rl_train_pool: int = 512
    rl_eval_pool: int = 128

    def __post_init__(self):
        RealtimeSettings.__post_init__(self)
        RLSettings.__post_init__(self)
        for name in ("rl_train_pool", "rl_eval_pool"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"experiment.{name}", "an int >= 1",
                  value)


def realtime_settings(config: Config) -> RealtimeSettings:
    """The settings of a realtime run, or of an RL run of one (`chorus rl` sets
    experiment.algo)."""
    cls = RealtimeRLSettings if "algo" in config.experiment else RealtimeSettings
    return settings_from(cls, config.experiment)
