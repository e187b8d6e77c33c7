"""What an RL task gives the RL experiment, and what its rollouts are read back as.

    Prompts      a batch of prompts: right-padded ids, lengths, reference answers and, for
                 audio prompts, the clips the model hears (encoded once per prompt)
    Completion   one sampled answer: its ids, the task's reading of them as text, and the
                 ids in the vocabulary's audio-code range as codec codes
    Task         the protocol: prompts, stop tokens, answer width, decoding, reference answers
                 and corrupted ones (DPO pairs), companion params, assets; optionally the ids
                 a rollout may sample (`allowed_ids`, read by `allowed_ids(task)`)

A mode's task lives in its experiment module (experiments/rl_tasks.py, experiments/asr/rl.py);
nothing here knows a mode. NumPy only: rewards import it without JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from chorus.vocab import VocabLayout

AUDIO_KEYS = ("audio_features", "audio_mask")


@dataclasses.dataclass(frozen=True, eq=False)
class Prompts:
    """`n` prompts. ids [n, P] int32 right-padded, lengths [n] in [1, P], one reference per
    prompt, audio None (text prompts) or {"audio_features" [n, A, T, mels], "audio_mask"
    [n, A, T]}."""

    ids: np.ndarray
    lengths: np.ndarray
    references: tuple[str, ...]
    audio: Mapping[str, np.ndarray] | None = None

    def __post_init__(self):
        ids, lengths = np.asarray(self.ids, np.int32), np.asarray(self.lengths, np.int32)
        if ids.ndim != 2:
            raise ValueError(f"Prompts.ids: expected [n, P] token ids, got shape {ids.shape}")
        n, width = ids.shape
        if lengths.shape != (n,):
            raise ValueError(f"Prompts.lengths: expected shape ({n},), got {lengths.shape}")
        if n and (lengths.min() < 1 or lengths.max() > width):
            raise ValueError(f"Prompts.lengths: expected values in [1, {width}], got range "
                             f"[{lengths.min()}, {lengths.max()}]")
        references = tuple(self.references)
        if len(references) != n:
            raise ValueError(f"Prompts.references: expected {n} (one per prompt), got "
                             f"{len(references)}")
        audio = None
        if self.audio is not None:
            if sorted(self.audio) != sorted(AUDIO_KEYS):
                raise ValueError(f"Prompts.audio: expected keys {list(AUDIO_KEYS)}, got "
                                 f"{sorted(self.audio)}")
            audio = {k: np.asarray(self.audio[k]) for k in AUDIO_KEYS}
            for k, v in audio.items():
                if v.shape[:1] != (n,):
                    raise ValueError(f"Prompts.audio[{k!r}]: expected {n} rows, got shape "
                                     f"{v.shape}")
        for name, value in (("ids", ids), ("lengths", lengths), ("references", references),
                            ("audio", audio)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return self.ids.shape[0]

    def repeat(self, times: int) -> Prompts:
        """Each prompt `times` times in a row: rows i*G .. i*G+G-1 are prompt i (the layout of
        a rollout's G samples per prompt)."""
        rep = lambda x: np.repeat(x, times, axis=0)
        return Prompts(rep(self.ids), rep(self.lengths),
                       tuple(r for r in self.references for _ in range(times)),
                       None if self.audio is None else {k: rep(v) for k, v in self.audio.items()})


@dataclasses.dataclass(frozen=True, eq=False)
class Completion:
    """One sampled answer. ids: the generated ids (the stop token included when one ended the
    row); text: the task's reading of its text ids ("" for an audio-only answer);
    audio_codes: the ids in the layout's audio-code range, as codec codes (empty for text)."""

    ids: np.ndarray
    text: str
    audio_codes: np.ndarray

    @classmethod
    def from_ids(cls, ids: np.ndarray, text: str, layout: VocabLayout) -> Completion:
        ids = np.asarray(ids, np.int32).reshape(-1)
        codes = layout.ids_to_audio_codes(ids[layout.is_audio_code(ids)]).astype(np.int32)
        return cls(ids, text, codes)


class Task(Protocol):
    """A verifiable task. `split` is "train" or "eval" (held out, disjoint from train).

    companions(rng) returns flax-boxed param trees (by top-level name) that the RL run keeps
    frozen beside the policy and exports with it, filled from the `--init-from` run's exported
    trees of the same names (ASR: the "mtp" and "ctc" heads, so the run's directory alone
    transcribes); {} for none. assets: {name: source file} copied into the run directory (a
    tokenizer). Neither may open data: the experiment is built for inference too.
    """

    name: str
    answer_width: int  # most answer tokens, the stop token included
    stop_tokens: tuple[int, ...]  # a rollout row ends at the first of these (kept in the row)
    assets: Mapping[str, str]

    def prompts(self, split: str, rng: np.random.Generator, n: int) -> Prompts: ...

    def answers(self, references: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The reference answers as ids [n, answer_width] (stop token included) and lengths:
        the SFT targets and DPO's chosen answers."""

    def corrupt(self, references: Sequence[str], rng: np.random.Generator) -> list[str]:
        """Wrong answers close to the references: DPO's rejected ones."""

    def decode(self, ids: np.ndarray) -> Completion:
        """One completion's ids (no padding) as a Completion."""

    def companions(self, rng: Any) -> dict[str, Any]: ...


def allowed_ids(task: Any, vocab_size: int) -> np.ndarray | None:
    """The task's optional `allowed_ids` (a bool mask [V] of the ids its rollouts may sample:
    e.g. TTS answers are audio codes and <tts_end>), checked; None when the task has none (or
    sets it None): sampling is then over the whole vocabulary. Not part of the Protocol's
    required members, so tasks without it (ASR, the symbol tasks) need no change."""
    mask = getattr(task, "allowed_ids", None)
    if mask is None:
        return None
    mask = np.asarray(mask)
    name = f"task {getattr(task, 'name', type(task).__name__)!r}: allowed_ids"
    if mask.shape != (vocab_size,) or mask.dtype != np.bool_:
        raise ValueError(f"{name}: expected a bool mask of shape ({vocab_size},) (the model's "
                         f"vocabulary), got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError(f"{name}: expected at least one allowed id, got none")
    for stop in getattr(task, "stop_tokens", ()):
        if not mask[stop]:
            raise ValueError(f"{name}: expected the stop token {stop} allowed (else no rollout "
                             "row could end before the answer width), got it masked")
    return mask
