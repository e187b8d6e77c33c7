"""Word timestamps from a CTC best-path alignment.

CTC greedy (`chorus.decoding.ctc.ctc_greedy`) emits each text token on a run of adaptor
frames. SentencePiece marks a word's first piece with "▁", so a word is a "▁" piece and the
pieces after it up to the next "▁"; its time is its tokens' frames, one adaptor frame =
MEL_FRAMES_PER_PLACEHOLDER / MEL_FRAMES_PER_SECOND = 80 ms:

    start = first frame of the word's first token * 0.08 s
    end   = (last frame of its last token + 1) * 0.08 s

CTC is peaky: a token fires on one or two frames, usually near its acoustic onset, so these
are the frames where the model decided, not phone boundaries (expect a lag of a frame or
two and words that touch the next word's start less than speech does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.vocab import MEL_FRAMES_PER_PLACEHOLDER, MEL_FRAMES_PER_SECOND

WORD_START = "\u2581"  # SentencePiece's "▁"
FRAME_SECONDS = MEL_FRAMES_PER_PLACEHOLDER / MEL_FRAMES_PER_SECOND  # one adaptor frame


def word_timestamps(ids: Sequence[int], starts: Sequence[int], ends: Sequence[int], tokenizer,
                    frame_seconds: float = FRAME_SECONDS) -> list[dict]:
    """[{"word", "start", "end"}] (seconds) of emitted text ids with their first / last frames
    (inclusive). tokenizer: a TextTokenizer (its .pieces and .decode). A piece that is only
    "▁" (a lone space) starts a word but does not time it; words whose text is empty after
    stripping (spaces only) are dropped."""
    ids, starts, ends = (np.asarray(x, np.int64).reshape(-1) for x in (ids, starts, ends))
    if not len(ids) == len(starts) == len(ends):
        raise ValueError(f"word_timestamps: expected ids, starts and ends of one length, got "
                         f"{len(ids)}, {len(starts)} and {len(ends)}")
    if len(ids) and ((starts > ends).any() or (starts < 0).any() or (np.diff(starts) < 0).any()):
        raise ValueError(f"word_timestamps: expected 0 <= starts <= ends, starts ascending, got "
                         f"starts {starts.tolist()} and ends {ends.tolist()}")
    pieces = tokenizer.pieces(ids)
    groups: list[list[int]] = []
    for k, piece in enumerate(pieces):
        if piece.startswith(WORD_START) or not groups:
            groups.append([])
        groups[-1].append(k)
    words = []
    for group in groups:
        text = tokenizer.decode(ids[group]).strip()
        timed = [k for k in group if pieces[k] != WORD_START] or group
        if text:
            words.append({"word": text, "start": float(starts[timed[0]] * frame_seconds),
                          "end": float((ends[group[-1]] + 1) * frame_seconds)})
    return words
