"""Speaker prompts: another utterance of the same voice, heard by the backbone's audio encoder.

A TTS example conditions on a reference clip of its voice — a different sentence, so the model
must take the voice from the clip and not copy its words — entering the prompt as `<audio>`
placeholders after `<speaker>`, like an ASR clip. The clips of a split are gathered once per
data iterator (a few per voice, the first `seconds` of each):

    clips = speaker_clips(data_dir, "chorus_speech", "train", seconds=2.0)
    wave = clips.choose("12", exclude_id=record.id, rng=rng)   # None: the voice has no other

At synthesis the user's reference WAV takes this place, so a voice never trained on can be
prompted from a clip (`chorus synthesize --speaker ref.wav`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from chorus.audio.mel import num_frames
from chorus.audio.resample import SAMPLE_RATE
from chorus.codec.features import round_up
from data_pipelines.records import AudioLimits, Record, field_text, read_record
from data_pipelines.sources import DEFAULT_FIELDS, FieldMap

_CLIP_LIMITS = AudioLimits(max_seconds=None)


@dataclasses.dataclass(frozen=True, eq=False)
class SpeakerClips:
    """speaker id -> ((record id, int16 wave), ...) of a split."""

    clips: Mapping[str, tuple[tuple[str, np.ndarray], ...]]

    def choose(self, speaker: str, exclude_id: str,
               rng: np.random.Generator | None) -> np.ndarray | None:
        """A float32 clip of `speaker` from a record other than `exclude_id` (random with an
        rng, else the first), or None when the voice has no other record."""
        options = [wave for rid, wave in self.clips.get(speaker, ()) if rid != exclude_id]
        if not options:
            return None
        wave = options[int(rng.integers(len(options)))] if rng is not None else options[0]
        return wave.astype(np.float32) / 32768.0

    def __len__(self) -> int:
        return len(self.clips)


def clip_frames(seconds: float) -> int:
    """The audio slot a speaker clip of `seconds` needs: its log-mel frames in whole 8-frame
    placeholders (at least one). The clips are cut to `seconds`, so a wider slot (the preset's
    train.max_mel_frames is sized for ASR utterances) is padding the encoder still runs over."""
    return max(8, round_up(num_frames(int(seconds * SAMPLE_RATE)), 8))


def speaker_clips(data_dir: str, dataset: str, split: str, seconds: float,
                  per_speaker: int = 4, fields: FieldMap = DEFAULT_FIELDS) -> SpeakerClips:
    """The first `per_speaker` usable records of each voice in `split` (read by the one
    reader, `read_record`), cut to `seconds`; stored as int16 to keep the table small."""
    from data_pipelines.sources import open_source

    source = open_source(dataset, data_dir, split)
    limit = int(seconds * SAMPLE_RATE)
    table: dict[str, list[tuple[str, np.ndarray]]] = {}
    for i in range(len(source)):
        raw = source[i]
        entries = table.setdefault(field_text(raw, fields.speaker), [])
        if len(entries) >= per_speaker:
            continue
        rec = read_record(raw, fields, _CLIP_LIMITS)
        if isinstance(rec, Record):
            wave = np.clip(rec.wave[:limit] * 32768.0, -32768, 32767).astype(np.int16)
            entries.append((rec.id, wave))
    return SpeakerClips({k: tuple(v) for k, v in table.items() if v})
