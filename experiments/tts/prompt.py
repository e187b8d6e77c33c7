"""The one TTS prompt: what training, synthesis and RL all put before the codes.

    <tts> <instruction> instruction <speaker> speaker [<audio> x N] <text> text <tts_start>
"""

from __future__ import annotations

import numpy as np

from chorus.vocab import VocabLayout
from data_pipelines.streams import audio_placeholders, ids


def speaker_prompt(speaker: str) -> str:
    return f"speaker {speaker}" if speaker.isdigit() else speaker


def prompt_ids(layout: VocabLayout, encode, instruction: str, speaker: str, text: str,
               clip_frames: int = 0) -> np.ndarray:
    """The one TTS prompt (training, synthesis and RL alike), ending at <tts_start>:
    <tts> <instruction> instruction <speaker> speaker [<audio> x N] <text> text <tts_start>,
    with N the placeholders of a speaker clip of `clip_frames` log-mel frames (0: no clip).
    An empty piece keeps its marker (what control dropout trains)."""
    s = layout.special
    return np.concatenate([ids(s("<tts>"), s("<instruction>")), encode(instruction),
                           ids(s("<speaker>")), encode(speaker),
                           audio_placeholders(layout, clip_frames), ids(s("<text>")),
                           encode(text), ids(s("<tts_start>"))]).astype(np.int32)
