"""Grain pipelines through regimes: the batch contract of the ASR, TTS and dialogue regimes
checked token by token, a regime written here (no mode knowledge in data_pipelines), packing,
sharding, shuffling, state restore, worker-count invariance, eval iterators."""

import json

import numpy as np
import pytest

from chorus.audio import mel
from chorus.audio.io import from_int16, to_int16
from chorus.vocab import VocabLayout, num_audio_placeholders
from data_pipelines.corpus_plan import describe_controls
from data_pipelines.personas import sample_exchange
from data_pipelines.pipeline import make_eval_iterator, make_train_iterator
from data_pipelines.record_cache import ArraySpec, write_record_cache
from data_pipelines.records import Skip
from data_pipelines.streams import assemble, audio_placeholders, ids
from data_pipelines.synthesis import synthesize
from data_pipelines.text_generator import SentenceGenerator
from data_pipelines.tokenizer import train_tokenizer
from data_pipelines.voices import VOICES
from experiments.asr.regime import AsrRegime, asr_prompt
from experiments.realtime import DialogueRegime
from experiments.tts.experiment import TtsRegime

LAYOUT = VocabLayout(text_size=384, num_audio_codes=64)
ASR, TTS, DIALOGUE = AsrRegime(), TtsRegime(), DialogueRegime()
B, L, A, T = 3, 160, 3, 400  # small shapes: 4 s clips


@pytest.fixture(scope="module")
def records():
    gen, rng = SentenceGenerator(), np.random.default_rng(0)
    out, seen = [], set()
    while len(out) < 14:
        text = gen.sample_for_split(rng, "train").text
        if text in seen:
            continue
        seen.add(text)
        ex = sample_exchange(rng)
        voice = VOICES[len(out) * 7 % len(VOICES)]
        wave, meta = synthesize(text, voice=voice.name, rate=200, seed=len(out))
        if len(wave) > 3.9 * 16000:
            continue
        out.append({"speech": to_int16(wave), "text": text,
                    "id": f"utt{len(out)}", "speaker_id": meta.speaker_id,
                    "instruction": describe_controls(voice.name, 200, 50, 100),
                    "tagged_text": f"(softly) {text}" if len(out) % 3 == 0 else text,
                    "persona": ex.persona.card(), "answer": ex.answer})
    return out


@pytest.fixture(scope="module")
def tokenizer_path(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    gen, rng = SentenceGenerator(), np.random.default_rng(1)
    texts = [gen.sample(rng).text for _ in range(800)] + gen.surface_texts()
    for r in records:
        texts += [r["text"], r["instruction"], r["persona"], r["answer"], r["tagged_text"],
                  f"speaker {r['speaker_id']}"]
    train_tokenizer(texts, 384, str(path))
    return str(path)


@pytest.fixture(scope="module")
def tok(tokenizer_path):
    from data_pipelines.tokenizer import TextTokenizer

    return TextTokenizer.from_file(tokenizer_path)


@pytest.fixture(scope="module")
def codes(records, tmp_path_factory):
    """A hand-written code cache (what the codec's corpus encoding writes): 25 Hz codes."""
    rng = np.random.default_rng(3)
    entries = [(r["id"], {"codes": rng.integers(0, 64, len(r["speech"]) // 640 + 1)
                          .astype(np.int32)}) for r in records]
    return write_record_cache(str(tmp_path_factory.mktemp("data")), "test-codec", "train",
                              entries, arrays={"codes": ArraySpec("int32")},
                              attrs={"num_codes": 64}, progress=False)


def _iterator(regime, records, tokenizer_path, **kwargs):
    args = dict(batch_size=B, seq_len=L, shard_index=0, shard_count=1, max_clips=A,
                max_frames=T, source=records)
    return make_train_iterator(regime, None, "train", LAYOUT, tokenizer_path, **(args | kwargs))


def _wave(record):
    return from_int16(record["speech"])


def _segments(batch, b):
    seg = batch["segment_ids"][b]
    return [np.flatnonzero(seg == k) for k in range(1, seg.max() + 1)]


def _check_contract(batch):
    """Shape/dtype contract, segments, positions, targets, and audio <-> placeholder alignment."""
    expect = {"tokens": ((B, L), np.int32), "targets": ((B, L), np.int32),
              "loss_mask": ((B, L), np.float32), "segment_ids": ((B, L), np.int32),
              "positions": ((B, L), np.int32), "audio_features": ((B, A, T, 128), np.float32),
              "audio_mask": ((B, A, T), np.bool_)}
    assert set(batch) == set(expect)
    for key, (shape, dtype) in expect.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    pad = LAYOUT.pad_id
    for b in range(B):
        seg = batch["segment_ids"][b]
        used = int((seg > 0).sum())
        assert (seg[:used] > 0).all() and (seg[used:] == 0).all()  # padding only at the end
        assert (np.diff(seg[:used]) >= 0).all() and (np.diff(seg[:used]) <= 1).all()
        assert (batch["tokens"][b, used:] == pad).all()
        assert (batch["targets"][b, used:] == pad).all()
        assert (batch["loss_mask"][b, used:] == 0).all()
        for idx in _segments(batch, b):
            np.testing.assert_array_equal(batch["positions"][b, idx], np.arange(len(idx)))
            np.testing.assert_array_equal(batch["targets"][b, idx[:-1]],
                                          batch["tokens"][b, idx[1:]])
            assert batch["targets"][b, idx[-1]] == pad
        # k-th <audio> of the row <-> k-th adaptor frame of clips taken in order.
        mask = batch["audio_mask"][b]
        valid = mask.sum(axis=1)
        for a in range(A):
            assert mask[a, : valid[a]].all() and not mask[a, valid[a]:].any()  # a prefix
            if valid[a] == 0:
                assert not batch["audio_features"][b, a].any()
        placeholders = int((batch["tokens"][b] == LAYOUT.audio_placeholder_id).sum())
        assert placeholders == sum(num_audio_placeholders(int(v)) for v in valid)
        used_clips = int((valid > 0).sum())
        assert (valid[:used_clips] > 0).all() and (valid[used_clips:] == 0).all()


def _between(tokens, start_id, end_id):
    i = int(np.flatnonzero(tokens == start_id)[0]) + 1
    j = i + int(np.flatnonzero(tokens[i:] == end_id)[0])
    return tokens[i:j], i, j


def test_asr_batches(records, tokenizer_path, tok):
    by_text = {r["text"]: r for r in records}
    it = _iterator(ASR, records, tokenizer_path)
    seen = 0
    for _ in range(3):
        batch = next(it)
        _check_contract(batch)
        s = LAYOUT.special
        for b in range(B):
            for k, idx in enumerate(_segments(batch, b)):
                tokens = batch["tokens"][b, idx]
                assert tokens[0] == s("<asr>") and tokens[-1] == LAYOUT.eos_id
                text_ids, i, j = _between(tokens, s("<transcript>"), LAYOUT.eos_id)
                record = by_text[tok.decode(text_ids)]
                feats = mel.log_mel(_wave(record))
                n = int(batch["audio_mask"][b, k].sum())
                assert n == len(feats)
                np.testing.assert_allclose(batch["audio_features"][b, k, :n], feats, atol=1e-5)
                assert (tokens[1: i - 1] == LAYOUT.audio_placeholder_id).sum() == (
                    num_audio_placeholders(n)) == i - 2
                mask = batch["loss_mask"][b, idx]
                assert mask[i - 1: j].all() and mask.sum() == j - i + 1  # text + <eos>
                seen += 1
    assert seen >= 3 * B


def test_tts_batches(records, tokenizer_path, tok, codes):
    by_text = {r["tagged_text"]: r for r in records}
    it = _iterator(TTS, records, tokenizer_path, cache=codes)
    s = LAYOUT.special
    for _ in range(2):
        batch = next(it)
        _check_contract(batch)
        assert not batch["audio_mask"].any()  # TTS has no audio input
        for b in range(B):
            for idx in _segments(batch, b):
                tokens = batch["tokens"][b, idx]
                text_ids, _, _ = _between(tokens, s("<text>"), s("<tts_start>"))
                record = by_text[tok.decode(text_ids)]
                instr, _, _ = _between(tokens, s("<instruction>"), s("<speaker>"))
                assert tok.decode(instr) == record["instruction"]
                spk, _, _ = _between(tokens, s("<speaker>"), s("<text>"))
                assert tok.decode(spk) == f"speaker {record['speaker_id']}"
                got, i, j = _between(tokens, s("<tts_start>"), s("<tts_end>"))
                np.testing.assert_array_equal(got, LAYOUT.audio_offset
                                              + codes.get(record["id"])["codes"])
                assert j == len(tokens) - 1
                mask = batch["loss_mask"][b, idx]
                assert mask[i - 1: j].all() and mask.sum() == j - i + 1  # codes + <tts_end>


def test_dialogue_batches(records, tokenizer_path, tok):
    by_answer = {r["answer"]: r for r in records}
    it = _iterator(DIALOGUE, records, tokenizer_path)
    s = LAYOUT.special
    batch = next(it)
    _check_contract(batch)
    for b in range(B):
        for k, idx in enumerate(_segments(batch, b)):
            tokens = batch["tokens"][b, idx]
            answer_ids, i, j = _between(tokens, s("<assistant>"), s("<tts_start>"))
            record = by_answer[tok.decode(answer_ids)]
            card, _, _ = _between(tokens, s("<persona>"), s("<user>"))
            assert tok.decode(card) == record["persona"]
            n = int(batch["audio_mask"][b, k].sum())
            np.testing.assert_allclose(batch["audio_features"][b, k, :n],
                                       mel.log_mel(_wave(record)), atol=1e-5)
            mask = batch["loss_mask"][b, idx]
            assert mask[i - 1: j].all() and mask.sum() == j - i + 1  # answer + <tts_start>


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
    for x, y in zip(batches_a, batches_b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_state_restores_the_exact_next_batch(records, tokenizer_path):
    it = _iterator(ASR, records, tokenizer_path, seed=3)
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # JSON-able
    expected = _take(it, 4)  # crosses an epoch boundary (14 records, ~4 per batch)
    fresh = _iterator(ASR, records, tokenizer_path, seed=3)
    fresh.set_state(state)
    _assert_same(_take(fresh, 4), expected)


def test_shuffle_is_seeded(records, tokenizer_path):
    a = _take(_iterator(ASR, records, tokenizer_path, seed=1), 2)
    b = _take(_iterator(ASR, records, tokenizer_path, seed=1), 2)
    c = _take(_iterator(ASR, records, tokenizer_path, seed=2), 2)
    _assert_same(a, b)
    assert not np.array_equal(a[0]["tokens"], c[0]["tokens"])


def _transcripts(batches, tok):
    out = []
    for batch in batches:
        for b in range(B):
            for idx in _segments(batch, b):
                text_ids, _, _ = _between(batch["tokens"][b, idx],
                                          LAYOUT.special("<transcript>"), LAYOUT.eos_id)
                out.append(tok.decode(text_ids))
    return out


def test_host_sharding_splits_records(records, tokenizer_path, tok):
    seen = []
    for index in range(2):
        it = _iterator(ASR, records, tokenizer_path, shard_index=index, shard_count=2,
                       num_epochs=1)
        seen.append(_transcripts(list(it), tok))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(r["text"] for r in records)
    default = _iterator(ASR, records, tokenizer_path, shard_index=None, shard_count=None,
                        num_epochs=1)  # jax.process_index()/process_count() = 0/1 here
    assert sorted(_transcripts(list(default), tok)) == sorted(r["text"] for r in records)
    with pytest.raises(ValueError, match="shard_index"):
        _iterator(ASR, records, tokenizer_path, shard_index=2, shard_count=2)


def test_multiprocess_workers_give_the_same_batches_and_restore(records, tokenizer_path):
    in_process = _take(_iterator(ASR, records, tokenizer_path, seed=4), 4)
    with _iterator(ASR, records, tokenizer_path, num_workers=2, seed=4) as it:
        first = _take(it, 2)
        for batch in first:
            _check_contract(batch)
        _assert_same(first, in_process[:2])  # packing runs after the worker interleave
        state = json.loads(json.dumps(it.get_state()))
        expected = _take(it, 2)
    _assert_same(expected, in_process[2:])
    with _iterator(ASR, records, tokenizer_path, num_workers=2, seed=4) as fresh:
        fresh.set_state(state)
        _assert_same(_take(fresh, 2), expected)


@pytest.mark.parametrize("regime, prompt_end", [(ASR, "<transcript>"), (TTS, "<tts_start>"),
                                                (DIALOGUE, "<assistant>")])
def test_eval_iterator(regime, prompt_end, records, tokenizer_path, tok, codes):
    it = make_eval_iterator(regime, None, "train", LAYOUT, tokenizer_path, shard_index=0,
                            shard_count=1, max_frames=T, source=records,
                            cache=codes if regime.cached else None)
    examples = list(it)
    assert [e["id"] for e in examples] == [r["id"] for r in records]
    for ex, record in zip(examples, records, strict=True):
        assert ex["prompt_tokens"][-1] == LAYOUT.special(prompt_end)
        assert ex["audio_features"].shape == (1, T, 128) and ex["audio_mask"].shape == (1, T)
        assert ex["transcript"] == record["text"]
        if regime is TTS:
            assert ex["reference_text"] == record["tagged_text"]
            np.testing.assert_array_equal(ex["reference_ids"] - LAYOUT.audio_offset,
                                          codes.get(record["id"])["codes"])
            np.testing.assert_allclose(ex["reference_audio"], _wave(record), atol=1e-6)
            assert ex["instruction"] == record["instruction"]
            assert not ex["audio_mask"].any()
            continue
        n = int(ex["audio_mask"].sum())
        np.testing.assert_allclose(ex["audio_features"][0, :n], mel.log_mel(_wave(record)),
                                   atol=1e-5)
        assert (ex["prompt_tokens"] == LAYOUT.audio_placeholder_id).sum() == (
            num_audio_placeholders(n))
        if regime is ASR:  # the one ASR prompt (also used by transcribe and the RL task)
            np.testing.assert_array_equal(ex["prompt_tokens"], asr_prompt(LAYOUT, n))
        reference = record["text"] if regime is ASR else record["answer"]
        assert ex["reference_text"] == reference
        assert tok.decode(ex["reference_ids"]) == reference
        if regime is DIALOGUE:
            assert ex["persona"] == record["persona"]


def test_asr_normalized_target(records, tokenizer_path, tok):
    from chorus.audio.text import normalize_text

    examples = list(make_eval_iterator(AsrRegime(target="normalized"), None, "train", LAYOUT,
                                       tokenizer_path, shard_index=0, shard_count=1,
                                       max_frames=T, source=records))
    assert [e["reference_text"] for e in examples] == [normalize_text(r["text"])
                                                       for r in records]
    with pytest.raises(ValueError, match="AsrRegime.target: expected 'raw' or 'normalized'"):
        AsrRegime(target="lower")


class SpeakerIdRegime:
    """A regime no data_pipelines module knows: the record's speaker id as a text target after
    a prompt of the first half of its <audio> clip (placeholders for all of it)."""

    name = "speaker_id"
    required_texts = ()
    audio_input = True
    cached = ()

    def stream(self, ex):
        if ex.record.speaker == "0":
            return Skip("empty_text", "speaker 0 has no label in this regime")
        s = ex.layout.special
        return assemble([(ids(s("<chat>")), False),
                         (audio_placeholders(ex.layout, len(ex.features)), False),
                         (ids(s("<speaker>")), False),
                         (ex.encode(ex.record.speaker), True), (ids(ex.layout.eos_id), True)],
                        ex.layout.pad_id)

    def reference(self, ex):
        return {"reference_text": ex.record.speaker,
                "reference_ids": ex.encode(ex.record.speaker)}

    def accepts(self, raw, fields):
        return int(raw[fields.speaker]) % 2 == 0


def test_a_regime_defined_anywhere_drives_the_pipeline(records, tokenizer_path, tok):
    regime = SpeakerIdRegime()
    wanted = [r for r in records if r["speaker_id"] % 2 == 0]
    with _iterator(regime, records, tokenizer_path, num_epochs=1, shuffle=False) as it:
        batches = list(it)
    speakers = []
    for batch in batches:
        _check_contract(batch)
        for b in range(B):
            for idx in _segments(batch, b):
                label, _, _ = _between(batch["tokens"][b, idx], LAYOUT.special("<speaker>"),
                                       LAYOUT.eos_id)
                speakers.append(tok.decode(label))
    expect = [str(r["speaker_id"]) for r in wanted if r["speaker_id"] != 0]
    assert sorted(speakers) == sorted(expect)
    assert it.skipped["empty_text"] == len(wanted) - len(expect)


def test_tts_records_without_codes_are_skipped_and_counted(records, tokenizer_path, tmp_path):
    partial = write_record_cache(str(tmp_path), "test-codec", "train",
                                 [(r["id"], {"codes": np.arange(5, dtype=np.int32)})
                                  for r in records[:10]],
                                 arrays={"codes": ArraySpec("int32")}, progress=False)
    with _iterator(TTS, records, tokenizer_path, cache=partial, num_epochs=1) as it:
        examples = sum(int(b["segment_ids"].max(axis=1).sum()) for b in it)
    assert examples == 10 and it.skipped["missing_cache_entry"] == len(records) - 10


def test_construction_errors_name_the_problem(records, tokenizer_path, codes):
    with pytest.raises(ValueError, match=r"regime 'tts' reads cached arrays \['codes'\]: "
                                         "expected cache="):
        _iterator(TTS, records, tokenizer_path)
    with pytest.raises(ValueError, match="expected the 'test' split's RecordCache, got 'train'"):
        make_eval_iterator(TTS, None, "test", LAYOUT, tokenizer_path, shard_index=0,
                           shard_count=1, source=records, cache=codes)
    with pytest.raises(TypeError, match=r"expected a Regime .*got str 'asr' without \['name'"):
        _iterator("asr", records, tokenizer_path)  # the task strings are gone

    class Unnamed(SpeakerIdRegime):
        name = None

    with pytest.raises(TypeError, match="regime Unnamed.name: expected str, got None"):
        _iterator(Unnamed(), records, tokenizer_path)
    with pytest.raises(ValueError, match=r"needs fields \['persona'\]"):
        _iterator(DIALOGUE, [{k: v for k, v in r.items() if k != "persona"}
                             for r in records], tokenizer_path)
    with pytest.raises(ValueError, match="text_size"):
        make_train_iterator(ASR, None, "train", VocabLayout(100, 8), tokenizer_path,
                            shard_index=0, shard_count=1, source=records)


def test_augmentation_is_seeded_and_only_touches_audio_inputs(records, tokenizer_path, codes):
    from data_pipelines.augment import AugmentConfig

    gain = AugmentConfig(gain_db_range=(-12.0, -3.0), noise_snr_db_range=(20.0, 30.0))
    a = next(_iterator(ASR, records, tokenizer_path, seed=7, augment_config=gain))
    b = next(_iterator(ASR, records, tokenizer_path, seed=7, augment_config=gain))
    clean = next(_iterator(ASR, records, tokenizer_path, seed=7))
    _assert_same([a], [b])
    np.testing.assert_array_equal(a["tokens"], clean["tokens"])  # same examples, same order
    assert not np.allclose(a["audio_features"][a["audio_mask"]],
                           clean["audio_features"][clean["audio_mask"]])
    # No audio input: augmentation has nothing to touch, nor may it draw from the example's
    # generator, whose draws the TTS stream uses (control dropout).
    dropout = TtsRegime(control_dropout=0.5)
    tts = next(_iterator(dropout, records, tokenizer_path, seed=7, augment_config=gain,
                         cache=codes))
    tts_clean = next(_iterator(dropout, records, tokenizer_path, seed=7, cache=codes))
    _assert_same([tts], [tts_clean])


def test_stream_parts_may_carry_a_loss_weight_and_the_loss_is_their_weighted_mean():
    import jax.numpy as jnp

    from chorus.model.losses import cross_entropy
    from data_pipelines.streams import assemble, ids

    stream = assemble([(ids(1, 2), False), (ids(3, 4), True), (ids(5, 6, 7), 0.25)], pad_id=0)
    np.testing.assert_array_equal(stream.loss_mask, [0, 1, 1, 0.25, 0.25, 0.25, 0])
    assert stream.prompt_length == 2
    assert assemble([(ids(1), False), (ids(2), 0.0), (ids(3), 0.5)], 0).prompt_length == 2
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="stream part weight: expected a bool or a number"):
            assemble([(ids(1), False), (ids(2), bad)], 0)
    logits = np.random.default_rng(0).standard_normal((7, 9)).astype(np.float32)
    nll = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[
        np.arange(7), stream.targets]
    loss, count = cross_entropy(jnp.asarray(logits), jnp.asarray(stream.targets),
                                jnp.asarray(stream.loss_mask))
    w = stream.loss_mask
    np.testing.assert_allclose(float(loss), (w * nll).sum() / w.sum(), rtol=1e-6)
    assert float(count) == w.sum()
