"""SentencePiece text tokenizer: id range, exact round trip, pickling."""

import pickle
import string

import numpy as np
import pytest

from data_pipelines.personas import sample_exchange
from data_pipelines.text_generator import SentenceGenerator
from data_pipelines.tokenizer import TextTokenizer, train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    gen, rng = SentenceGenerator(), np.random.default_rng(0)
    texts = [gen.sample_for_split(rng, "train").text for _ in range(1500)]
    for _ in range(200):
        ex = sample_exchange(rng)
        texts += [ex.question, ex.answer, ex.persona.card()]
    return texts


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    tok = train_tokenizer(corpus, 512, str(path))
    assert path.exists()
    return tok


def test_vocab_size_and_id_range(tokenizer, corpus):
    assert tokenizer.vocab_size == 512
    ids = np.concatenate([tokenizer.encode(t) for t in corpus])
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 512
    assert (ids == 0).sum() == 0  # no <unk> on corpus text


def test_exact_round_trip(tokenizer, corpus):
    for text in corpus[:300]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    odd = ["Hello  World!! 7:45 ~ {x}", " leading", "trailing ", "  two  spaces  ",
           string.printable.strip(), "QUICK brown FOX #42 @ 3.14%", "a"]
    for text in odd:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert 0 not in ids  # every printable ASCII character has a piece


def test_digits_are_split(tokenizer):
    pieces = [tokenizer.decode([i]).strip() for i in tokenizer.encode("2024")]
    assert [p for p in pieces if p] == ["2", "0", "2", "4"]  # (a leading "▁" piece is ok)


def test_file_and_pickle_round_trip(tokenizer, tmp_path):
    path = tmp_path / "t.model"
    small = train_tokenizer(["the cat sat on the mat"] * 5, 120, str(path))
    assert small.vocab_size <= 120  # a tiny corpus yields fewer pieces, never more
    loaded = TextTokenizer.from_file(str(path))
    assert loaded.encode("the cat").tolist() == small.encode("the cat").tolist()
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode("Maya lives in Oslo.").tolist() == tokenizer.encode(
        "Maya lives in Oslo.").tolist()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], 50, str(tmp_path / "x.model"))
    with pytest.raises(ValueError, match="non-empty"):
        train_tokenizer(["", "  "], 512, str(tmp_path / "x.model"))
    with pytest.raises(FileNotFoundError, match="chorus data tokenizer"):
        TextTokenizer.from_file(str(tmp_path / "missing.model"))


def test_bpe_keeps_frequent_words_whole_where_unigram_splits_them(corpus, tmp_path):
    """The measured reason for `--model-type bpe` (README, ASR recipe table): on the corpus'
    mixed texts unigram stops well short of its vocabulary and cuts common words into
    fragments; BPE fills the vocabulary and spells fewer pieces per word."""
    unigram = train_tokenizer(corpus, 1024, str(tmp_path / "u.model"))
    bpe = train_tokenizer(corpus, 1024, str(tmp_path / "b.model"), model_type="bpe")
    assert bpe.vocab_size == 1024
    sentences = corpus[:1500]
    words = sum(len(t.split()) for t in sentences)
    per_word = {name: sum(len(tok.encode(t)) for t in sentences) / words
                for name, tok in (("unigram", unigram), ("bpe", bpe))}
    assert per_word["bpe"] < per_word["unigram"], per_word
    for tok in (unigram, bpe):  # both spell any text exactly
        assert tok.decode(tok.encode("How many oranges did Vera buy?").tolist()) == (
            "How many oranges did Vera buy?")
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer(corpus, 512, str(tmp_path / "x.model"), model_type="wordpiece")
