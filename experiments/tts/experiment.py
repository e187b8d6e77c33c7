"""`chorus train --experiment tts`: text (+ an instruction and a speaker) in, codec codes out.
The supervised (SFT) regime, top to bottom:

    data     the `chorus_speech` dataset and the codes of its utterances, computed once by a
             trained codec and cached beside it (data_pipelines.record_cache, written by the
             codec's corpus encoding under `experiment.cache_key`); no model runs in the
             data pipeline
    prompt   <tts> <instruction> instr... <speaker> spk... <audio>xN <text> text... <tts_start>
    target   codes... <tts_end>               supervised: unified ids audio_offset + code
    loss     next-token cross-entropy on the target positions (chorus.training.lm_loss)

    chorus train --experiment tts --workdir runs/tts --data DATA_DIR \
        --set experiment.cache_key=<the codec's producer key>

The text is the record's inline-tagged text when it has one (`tagged_text`), else the
transcript; the speaker prompt is "speaker <id>" for numeric ids, then a clip of another
utterance of the same voice as `<audio>` placeholders (experiments/tts/speaker_clips.py, its
first `speaker_clip_seconds`; at synthesis the user's reference WAV takes its place).
`paraphrase` says each training instruction in a random phrasing (instructions.py);
`control_dropout` drops the instruction, the speaker text and the speaker clip, each
independently, from that share of the training examples, so the model also learns to speak
without them; `hold_out` keeps the held-out voices and control combinations out of training
(and of the validation loss), so the test split can measure them. The cache's `num_codes`
must equal `model.num_audio_codes`.

Settings (`--set experiment.<key>=...`): see `TtsSettings`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

import numpy as np

from chorus.config import Config, settings_from
from chorus.model.factory import backbone_init
from chorus.model.flops import backbone_train_flops
from chorus.model.unified import UnifiedAudioLM
from chorus.training.experiment import Experiment
from chorus.training.lm_loss import backbone_lm_loss
from chorus.vocab import VocabLayout
from data_pipelines.record_cache import CacheError, RecordCache
from data_pipelines.regime import ExampleInputs
from data_pipelines.streams import Stream, assemble, ids
from data_pipelines.tokenizer import tokenizer_assets
from experiments.tts.instructions import raw_held_out, training_instruction
from experiments.tts.prompt import prompt_ids, speaker_prompt
from experiments.tts.settings import TtsSettings
from experiments.tts.speaker_clips import SpeakerClips, clip_frames, speaker_clips

CODES = "codes"  # the RecordCache array: int32 [n] codec codes of the record's audio

# ----------------------------------------------------------------------------- settings


# ----------------------------------------------------------------------------- regime


@dataclasses.dataclass(frozen=True)
class TtsRegime:
    """The data_pipelines regime: texts in, the cached codes of the record's audio out."""

    control_dropout: float = 0.0
    paraphrase: bool = False  # training: instructions said in varied phrasings (instructions.py)
    hold_out: bool = False  # skip the held-out voices and control combinations
    speaker_clips: SpeakerClips | None = None  # speaker prompts (None: text only)

    name: ClassVar[str] = "tts"
    required_texts: ClassVar[tuple[str, ...]] = ()
    # The input clip is a speaker prompt (`input_wave`); the record's own audio is the target
    # (as codes), never an input.
    audio_input: ClassVar[bool] = True
    cached: ClassVar[tuple[str, ...]] = (CODES,)

    def __post_init__(self):
        if not 0.0 <= self.control_dropout <= 1.0:
            raise ValueError(f"TtsRegime.control_dropout: expected a probability in [0, 1], "
                             f"got {self.control_dropout}")

    @property
    def accepts(self):
        """With hold_out, the record filter of the data pipeline (None: every record)."""
        return self._held_in if self.hold_out else None

    @staticmethod
    def _held_in(raw: dict, fields=None) -> bool:
        return not raw_held_out(raw)

    def input_wave(self, rec, rng: np.random.Generator | None) -> np.ndarray | None:
        """Another utterance of the record's voice (dropped like the other controls)."""
        if self.speaker_clips is None:
            return None
        if rng is not None and self.control_dropout and rng.random() < self.control_dropout:
            return None
        return self.speaker_clips.choose(rec.speaker, rec.id, rng)

    def stream(self, ex: ExampleInputs) -> Stream:
        rec, s = ex.record, ex.layout.special
        instruction, speaker = rec.instruction, speaker_prompt(rec.speaker)
        if ex.rng is not None and self.paraphrase:
            instruction = training_instruction(instruction, ex.rng)
        if ex.rng is not None and self.control_dropout:
            instruction = "" if ex.rng.random() < self.control_dropout else instruction
            speaker = "" if ex.rng.random() < self.control_dropout else speaker
        frames = 0 if ex.features is None else len(ex.features)
        prompt = prompt_ids(ex.layout, ex.encode, instruction, speaker,
                            rec.tagged_text or rec.text, frames)
        return assemble([(prompt, False),
                         (ex.layout.audio_code_ids(ex.cached[CODES]), True),
                         (ids(s("<tts_end>")), True)], ex.layout.pad_id)

    def reference(self, ex: ExampleInputs) -> dict:
        rec = ex.record
        return {"reference_text": rec.tagged_text or rec.text,
                "reference_ids": ex.layout.audio_code_ids(ex.cached[CODES]).astype(np.int32),
                "reference_audio": rec.wave, "instruction": rec.instruction,
                "speaker": rec.speaker}


def open_codes(data_dir: str, cache_key: str, split: str, layout: VocabLayout) -> RecordCache:
    """The split's code cache, checked to fit the model's audio-code range."""
    cache = RecordCache.open(
        data_dir, cache_key, split,
        hint=f"encode the corpus with the codec whose producer key is experiment.cache_key="
             f"{cache_key!r} (`chorus codec encode`, see docs/codec.md)")
    cache.require((CODES,), "the TTS regime")
    num_codes = cache.meta.attrs.get("num_codes")
    if num_codes != layout.num_audio_codes:
        raise CacheError(f"{cache.path}: the codec's num_codes={num_codes!r} (record cache "
                         f"{cache_key!r}) != model.num_audio_codes={layout.num_audio_codes}; "
                         f"set --set model.num_audio_codes={num_codes} or use a matching codec")
    return cache


# ----------------------------------------------------------------------------- experiment


def audio_slot_frames(config: Config, settings: TtsSettings) -> int:
    """The frames of a packed row's audio slot: the speaker clip's length, capped by
    train.max_mel_frames. The only audio of a TTS example is its speaker clip, and the encoder
    runs over every slot in full, so the preset's ASR-sized slot (560 frames at cpu-tiny for a
    200-frame clip) made a cpu-tiny SFT step 1.5x dearer on the same batches."""
    return min(config.train.max_mel_frames, clip_frames(settings.speaker_clip_seconds))


def make_data(config: Config, settings: TtsSettings, layout: VocabLayout):
    """(train_iterator, eval_iterator) factories: (shard_index, shard_count, seed) -> iterator.
    The caches are opened (and checked) when an iterator is made, not by `build`."""
    from data_pipelines import make_train_iterator

    t = config.train
    data_dir = os.path.expanduser(settings.data_dir)
    frames = audio_slot_frames(config, settings)

    def iterator(split: str, regime: TtsRegime, shard_index: int, shard_count: int, seed: int,
                 **kwargs):
        return make_train_iterator(
            regime, data_dir, split, layout, batch_size=t.batch_size // shard_count,
            seq_len=t.seq_len, seed=seed, shard_index=shard_index, shard_count=shard_count,
            dataset_name=settings.dataset, max_clips=t.max_audio_clips,
            max_frames=frames,
            cache=open_codes(data_dir, settings.cache_key, split, layout), **kwargs)

    def clips(split: str) -> SpeakerClips | None:
        if not settings.speaker_clip_seconds:
            return None
        return speaker_clips(data_dir, settings.dataset, split, settings.speaker_clip_seconds)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        regime = TtsRegime(settings.control_dropout, settings.paraphrase, settings.hold_out,
                           clips(settings.train_split))
        return iterator(settings.train_split, regime, shard_index, shard_count, seed,
                        num_workers=settings.data_workers)

    def eval_iterator(shard_index: int, shard_count: int, seed: int):
        # One ordered pass with every control kept: the same eval batches every time.
        regime = TtsRegime(hold_out=settings.hold_out, speaker_clips=clips(settings.eval_split))
        return iterator(settings.eval_split, regime, shard_index, shard_count, seed,
                        num_epochs=1, shuffle=False)

    return train_iterator, eval_iterator


def build(config: Config) -> Experiment:
    settings = settings_from(TtsSettings, config.experiment)
    layout = VocabLayout.from_model_config(config.model)
    model = UnifiedAudioLM(config)
    backbone = backbone_init(model, config)
    train_iterator, eval_iterator = make_data(config, settings, layout)
    t = config.train

    def evaluate(params, workdir: str) -> dict:
        # The table of experiments/tts/evaluate.py: this checkpoint beside the ground truth
        # and the codec's resynthesis, judged by pocketsphinx, the chorus ASR, DNSMOS and
        # the speaker encoders; written under <workdir>/eval/<split>/.
        from experiments.tts.evaluate import run_evaluate

        return run_evaluate(config, params, workdir)

    return Experiment(
        name="tts", init_fn=lambda rng: {"backbone": backbone(rng)},
        loss_fn=backbone_lm_loss(model),  # CE on the codes + <tts_end>
        evaluate=evaluate,
        train_iterator=train_iterator, eval_iterator=eval_iterator,
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len,
                                             t.max_audio_clips,
                                             audio_slot_frames(config, settings)),
        tokens_per_batch=t.batch_size * t.seq_len,
        assets=tokenizer_assets(settings.data_dir))
