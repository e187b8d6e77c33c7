"""The text tokenizer: SentencePiece (unigram) trained on corpus text, with our own specials.

Ids are 0..vocab_size-1 (0 = <unk>); SentencePiece's bos/eos/pad are disabled because the
unified vocabulary (`chorus.vocab.VocabLayout`) owns the special tokens, placed after the text
ids. No text normalization happens inside the model (identity rules, whitespace kept), and
every printable ASCII character is a piece, so decode(encode(s)) == s for any printable-ASCII
string (tested). Non-ASCII text is rejected upstream by the pipelines.
"""

from __future__ import annotations

import io
import os
import string
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm

from chorus.atomic import atomic_path

TOKENIZER_FILENAME = "tokenizer.model"  # in a corpus directory and in a run's assets
# Printable ASCII except whitespace (the space is always a piece, as "▁").
REQUIRED_CHARS = "".join(c for c in string.printable if not c.isspace())


def tokenizer_assets(data_dir: str) -> dict[str, str]:
    """A run's `Experiment.assets` for the corpus tokenizer: {TOKENIZER_FILENAME:
    <data_dir>/TOKENIZER_FILENAME}, copied into the run at its start (so inference needs the run
    directory alone); {} for an unset data_dir (which fails where data is opened)."""
    if not data_dir:
        return {}
    return {TOKENIZER_FILENAME: os.path.join(os.path.expanduser(data_dir), TOKENIZER_FILENAME)}


UNK_ID = 0  # SentencePiece's <unk> piece: the one special the text tokenizer has


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: str,
                    model_type: str = "unigram") -> TextTokenizer:
    """Trains a SentencePiece model (`model_type` "unigram" or "bpe") of at most `vocab_size`
    pieces (exactly, when the texts are rich enough; a tiny corpus gets fewer); writes it
    atomically."""
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"train_tokenizer model_type: expected 'unigram' or 'bpe', got "
                         f"{model_type!r}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_tokenizer texts: expected at least one non-empty text, got none")
    min_size = len(REQUIRED_CHARS) + 2
    if vocab_size < min_size:
        raise ValueError(f"train_tokenizer vocab_size: expected >= {min_size} (one piece per "
                         f"printable ASCII character + <unk>), got {vocab_size}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=1.0, required_chars=REQUIRED_CHARS,
        unk_id=UNK_ID, bos_id=-1, eos_id=-1, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        f.write(model.getvalue())
    return TextTokenizer(model.getvalue())


class TextTokenizer:
    """A loaded SentencePiece model; picklable (grain workers get the model bytes)."""

    def __init__(self, model_proto: bytes):
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def from_file(cls, path: str) -> TextTokenizer:
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as e:
            raise FileNotFoundError(f"tokenizer: cannot read {path!r} ({e}); train one with "
                                    "`chorus data tokenizer --data DIR`") from e

    def __getstate__(self):
        return {"model_proto": self._proto}

    def __setstate__(self, state):
        self.__init__(state["model_proto"])

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids])

    def pieces(self, ids) -> list[str]:
        """The SentencePiece pieces of ids ("▁" marks a word start): what word-level
        alignment needs, since decode() drops the markers."""
        return [self._sp.id_to_piece(int(i)) for i in ids]
