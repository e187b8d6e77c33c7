"""Token streams of the three regimes, in the unified vocabulary (`chorus.vocab`).

    ASR       <asr> <audio>xN <transcript> text... <eos>            loss: text + <eos>
    TTS       <tts> <instruction> instr... <speaker> spk... <text> text... <tts_start>
              codes... <tts_end>                                    loss: codes + <tts_end>
    dialogue  <chat> <persona> card... <user> <audio>xN <assistant> answer... <eos>
                                                                    loss: answer + <eos>

A stream is a list of parts (ids, supervised). `targets[i] = tokens[i + 1]` (pad after the last
token) and `loss_mask[i] = 1` exactly when `targets[i]` belongs to a supervised part. The prompt
(what a decoder is given at eval) is every token up to and including the last unsupervised one.
N = num_audio_placeholders(valid mel frames) of the clip.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chorus.vocab import VocabLayout, num_audio_placeholders

Part = tuple[np.ndarray, bool]


@dataclasses.dataclass(frozen=True)
class Stream:
    tokens: np.ndarray  # int32 [n]
    targets: np.ndarray  # int32 [n]
    loss_mask: np.ndarray  # float32 [n]
    prompt_length: int  # tokens[:prompt_length] is the decoding prompt


def _ids(*ids: int) -> np.ndarray:
    return np.asarray(ids, dtype=np.int32)


def assemble(parts: list[Part], pad_id: int) -> Stream:
    tokens = np.concatenate([np.asarray(ids, np.int32) for ids, _ in parts])
    supervised = np.concatenate([np.full(len(ids), sup, bool) for ids, sup in parts])
    targets = np.append(tokens[1:], np.int32(pad_id)).astype(np.int32)
    loss_mask = np.append(supervised[1:], False).astype(np.float32)
    first_supervised = int(np.argmax(supervised)) if supervised.any() else len(tokens)
    return Stream(tokens, targets, loss_mask, prompt_length=first_supervised)


def asr_stream(layout: VocabLayout, num_mel_frames: int, text_ids: np.ndarray) -> Stream:
    s = layout.special
    n = num_audio_placeholders(num_mel_frames)
    return assemble([(_ids(s("<asr>")), False),
                     (np.full(n, layout.audio_placeholder_id, np.int32), False),
                     (_ids(s("<transcript>")), False),
                     (text_ids, True), (_ids(layout.eos_id), True)], layout.pad_id)


def tts_stream(layout: VocabLayout, instruction_ids: np.ndarray, speaker_ids: np.ndarray,
               text_ids: np.ndarray, codes: np.ndarray) -> Stream:
    s = layout.special
    return assemble([(_ids(s("<tts>"), s("<instruction>")), False), (instruction_ids, False),
                     (_ids(s("<speaker>")), False), (speaker_ids, False),
                     (_ids(s("<text>")), False), (text_ids, False),
                     (_ids(s("<tts_start>")), False),
                     (layout.audio_code_ids(codes).astype(np.int32), True),
                     (_ids(s("<tts_end>")), True)], layout.pad_id)


def dialogue_stream(layout: VocabLayout, persona_ids: np.ndarray, num_mel_frames: int,
                    answer_ids: np.ndarray) -> Stream:
    s = layout.special
    n = num_audio_placeholders(num_mel_frames)
    return assemble([(_ids(s("<chat>"), s("<persona>")), False), (persona_ids, False),
                     (_ids(s("<user>")), False),
                     (np.full(n, layout.audio_placeholder_id, np.int32), False),
                     (_ids(s("<assistant>")), False),
                     (answer_ids, True), (_ids(layout.eos_id), True)], layout.pad_id)
