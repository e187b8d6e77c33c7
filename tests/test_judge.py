"""The judge: its token layout, batches (exact resume), the reward against a direct reference
forward, the pairwise symmetry, and a tiny `chorus train --experiment judge` end to end."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from asr_runs import sets
from train_toy import TINY

from chorus.config import ConfigError, load_config
from chorus.model.factory import backbone_init
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.task import Completion
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer
from experiments.judge.experiment import EVAL, TRAIN, JudgeBatches, judge_loss
from experiments.judge.labels import KINDS, PERTURBATIONS, make_example, make_pair
from experiments.judge.prompt import example_stream, judge_prompt
from experiments.judge.scoring import JudgeScorer
from experiments.judge.settings import JudgeSettings

SIZES = [o for o in TINY if not o.startswith(("model.text_vocab_size", "train.seq_len"))]
SIZES += ["model.text_vocab_size=256", "model.num_audio_codes=0", "train.seq_len=224"]


@pytest.fixture(scope="module")
def tiny(judge_data):
    """(config, model, backbone params, tokenizer) of a random tiny fp32 backbone."""
    config = load_config("cpu-tiny", SIZES + [f"experiment.data_dir={judge_data}"])
    model = UnifiedAudioLM(config)
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                          jax.jit(backbone_init(model, config))(jax.random.key(1)),
                          is_leaf=lambda x: hasattr(x, "value"))
    return config, model, params, TextTokenizer.from_file(f"{judge_data}/{TOKENIZER_FILENAME}")


def exchanges(n, seed=0):
    rng = np.random.default_rng(seed)
    exs = [make_example(rng, KINDS[i % len(KINDS)]) for i in range(n)]
    return ([e.persona.card() for e in exs], [e.question for e in exs],
            [e.answer for e in exs])


# ----------------------------------------------------------------------------- layout, data


def test_stream_supervises_exactly_the_rationale_and_the_verdict(tiny):
    config, _, _, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    ex = make_example(np.random.default_rng(0), "wrong_fact")
    for rationale in (True, False):
        st = example_stream(lay, tok.encode, ex, rationale)
        prompt = judge_prompt(lay, tok.encode, ex.persona.card(), ex.question, ex.answer)
        assert np.array_equal(st.tokens[:len(prompt)], prompt)
        assert prompt[-1] == lay.special("<rationale>")
        supervised = st.targets[st.loss_mask > 0]
        body = tok.encode(ex.rationale) if rationale else np.zeros(0, np.int32)
        expected = np.concatenate([body, [lay.special("<verdict>"), lay.special("<no>"),
                                          lay.eos_id]])
        assert np.array_equal(supervised, expected)
        assert st.loss_mask[:len(prompt) - 1].sum() == 0


def test_batches_resume_exactly_and_split_over_hosts_like_the_global_batch(tiny):
    config, _, _, tok = tiny
    settings = JudgeSettings(data_dir="unused")
    it = JudgeBatches(config, settings, tok, TRAIN, seed=3)
    first = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(it.get_state()))
    fourth = next(it)
    resumed = JudgeBatches(config, settings, tok, TRAIN, seed=3)
    resumed.set_state(state)
    again = next(resumed)
    assert all(np.array_equal(fourth[k], again[k]) for k in fourth)
    assert not np.array_equal(first[2]["tokens"], fourth["tokens"])
    halves = [JudgeBatches(config, settings, tok, TRAIN, i, 2, seed=3) for i in range(2)]
    joined = [next(h) for h in halves]
    for k in first[0]:
        assert np.array_equal(np.concatenate([j[k] for j in joined]), first[0][k])
    assert set(first[0]) >= {"tokens", "targets", "loss_mask", "verdict_mask", "positions",
                             "segment_ids"}
    assert (first[0]["verdict_mask"].sum(1) == 1).all()
    other_seed = next(JudgeBatches(config, settings, tok, EVAL, seed=3))
    assert not np.array_equal(other_seed["tokens"], first[0]["tokens"])


def test_a_stream_longer_than_seq_len_names_the_setting(tiny):
    config, _, _, tok = tiny
    short = load_config("cpu-tiny", SIZES[:-1] + ["train.seq_len=40"])
    with pytest.raises(ConfigError, match=r"train.seq_len: expected >= \d+"):
        next(JudgeBatches(short, JudgeSettings(), tok, TRAIN))


def test_loss_is_the_masked_cross_entropy(tiny):
    config, model, params, tok = tiny
    batch = next(JudgeBatches(config, JudgeSettings(), tok, TRAIN))
    loss, metrics = judge_loss(model)({"backbone": params}, batch, jax.random.key(0))
    logits = model.apply({"params": params}, batch["tokens"], batch["positions"],
                         batch["segment_ids"])["logits"]
    logp = jax.nn.log_softmax(logits, -1)
    nll = -np.take_along_axis(np.asarray(logp), batch["targets"][..., None], -1)[..., 0]
    m = batch["loss_mask"]
    np.testing.assert_allclose(float(loss), (nll * m).sum() / m.sum(), rtol=1e-5)
    v = batch["verdict_mask"]
    np.testing.assert_allclose(float(metrics["verdict_ce"]), (nll * v).sum() / v.sum(),
                               rtol=1e-5)


# ----------------------------------------------------------------------------- the reward


REFERENCE_WIDTH = 256  # one compiled width: causal attention never sees the padding after


@functools.partial(jax.jit, static_argnums=0)
def _reference_logits(model, params, tokens, n):
    valid = jnp.arange(REFERENCE_WIDTH) < n
    out = model.apply({"params": params}, tokens[None], jnp.arange(REFERENCE_WIDTH)[None],
                      valid.astype(jnp.int32)[None])
    return jax.nn.log_softmax(out["logits"][0, n - 1].astype(jnp.float32))


def reference_forward(model, params, ids):
    """Full-vocabulary log-softmax at the last token of one sequence: the training forward
    (`UnifiedAudioLM.__call__`, no KV cache), unbatched."""
    assert len(ids) <= REFERENCE_WIDTH
    tokens = np.zeros(REFERENCE_WIDTH, np.int32)
    tokens[:len(ids)] = ids
    return np.asarray(_reference_logits(model, params, jnp.asarray(tokens), len(ids)))


def reference_ratio(model, params, ids, lay, first="<yes>", second="<no>"):
    logp = reference_forward(model, params, ids)
    p1, p2 = np.exp(logp[lay.special(first)]), np.exp(logp[lay.special(second)])
    return p1 / (p1 + p2)


def test_reward_equals_p_yes_over_p_yes_plus_no_after_the_greedy_rationale(tiny):
    config, model, params, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    budget = 5
    scorer = JudgeScorer(model, params, tok, JudgeSettings(max_rationale_tokens=budget,
                                                           eval_batch=4))
    cards, questions, answers = exchanges(3)
    judged = scorer.pointwise(cards, questions, answers)
    verdict = lay.special("<verdict>")
    for i in range(3):
        # the greedy rationale, one uncached forward per token
        seq = list(judge_prompt(lay, tok.encode, cards[i], questions[i], answers[i]))
        written = []
        while len(written) < budget and (not written or written[-1] != verdict):
            written.append(int(np.argmax(reference_forward(model, params, seq + written))))
        if written[-1] != verdict:
            written.append(verdict)
        assert judged.rationale_ids[i][0].tolist() == written
        expected = reference_ratio(model, params, seq + written, lay)
        np.testing.assert_allclose(judged.reward[i], expected, rtol=1e-5, atol=1e-6)
    assert judged.reward.shape == (3,) and judged.samples.shape == (3, 1)


@pytest.mark.slow
def test_sampled_rationales_are_averaged_and_each_matches_its_forward(tiny):
    config, model, params, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    scorer = JudgeScorer(model, params, tok, JudgeSettings(max_rationale_tokens=4, eval_batch=2,
                                                           sample_temperature=1.5))
    cards, questions, answers = exchanges(3, seed=1)
    judged = scorer.pointwise(cards, questions, answers, samples=3, rng=jax.random.key(7))
    assert judged.samples.shape == (3, 3)
    np.testing.assert_allclose(judged.reward, judged.samples.mean(-1), rtol=1e-12)
    distinct = 0
    for i in range(3):
        prompt = list(judge_prompt(lay, tok.encode, cards[i], questions[i], answers[i]))
        rationales = judged.rationale_ids[i]
        distinct += len({tuple(r.tolist()) for r in rationales}) > 1
        for k, r in enumerate(rationales):
            assert r[-1] == lay.special("<verdict>") and len(r) <= 5
            np.testing.assert_allclose(judged.samples[i, k],
                                       reference_ratio(model, params, prompt + r.tolist(), lay),
                                       rtol=1e-5, atol=1e-6)
    assert distinct > 0  # sampling at temperature 1.5 over a random model varies


def test_no_rationale_judge_reads_the_verdict_right_after_the_prompt(tiny):
    config, model, params, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    scorer = JudgeScorer(model, params, tok, JudgeSettings(rationale=False, eval_batch=4))
    cards, questions, answers = exchanges(2, seed=2)
    judged = scorer.pointwise(cards, questions, answers, samples=0)
    for i in range(2):
        prompt = list(judge_prompt(lay, tok.encode, cards[i], questions[i], answers[i]))
        expected = reference_ratio(model, params, prompt + [lay.special("<verdict>")], lay)
        np.testing.assert_allclose(judged.reward[i], expected, rtol=1e-5, atol=1e-6)
        assert judged.rationales[i] == ("",)


def test_pairwise_reward_is_symmetric_under_swapping(tiny):
    config, model, params, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    scorer = JudgeScorer(model, params, tok, JudgeSettings(rationale=False, eval_batch=4))
    rng = np.random.default_rng(4)
    pairs = [make_pair(rng, PERTURBATIONS[i % 4]) for i in range(3)]
    cards, qs = [p.persona.card() for p in pairs], [p.question for p in pairs]
    a, b = [p.answer_a for p in pairs], [p.answer_b for p in pairs]
    ab, ba = scorer.pairwise(cards, qs, a, b), scorer.pairwise(cards, qs, b, a)
    np.testing.assert_allclose(ab["reward"] + ba["reward"], 1.0, atol=1e-9)
    np.testing.assert_allclose(ab["a_first"], ba["b_first"], atol=1e-6)
    assert not np.allclose(ab["a_first"], 1.0 - ab["b_first"], atol=1e-4)  # a position bias
    from experiments.judge.prompt import pair_prompt

    prompt = list(pair_prompt(lay, tok.encode, cards[0], qs[0], a[0], b[0]))
    q_ab = reference_ratio(model, params, prompt + [lay.special("<verdict>")], lay,
                           "<choice_a>", "<choice_b>")
    np.testing.assert_allclose(ab["a_first"][0], q_ab, rtol=1e-5, atol=1e-6)


def test_scorer_rejects_ragged_columns(tiny):
    config, model, params, tok = tiny
    scorer = JudgeScorer(model, params, tok, JudgeSettings())
    with pytest.raises(ValueError, match="one entry per exchange"):
        scorer.pointwise(["card"], ["q", "q2"], ["a"])


def test_judge_game_scores_the_verdict_log_odds_after_its_own_rationale(tiny):
    """experiments.interactions.games.judge_game: the answer's words are the players and
    f(S) = log p(<yes>) - log p(<no>) after the judge's rationale for the whole answer, checked
    against an uncached reference forward with the absent words' tokens set to <pad>."""
    from experiments.interactions.games import judge_game

    config, model, params, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    scorer = JudgeScorer(model, params, tok, JudgeSettings(max_rationale_tokens=4,
                                                           eval_batch=2))
    cards, questions, answers = exchanges(6, seed=3)
    k = next(i for i, a in enumerate(answers) if len(a.split()) >= 3)  # a terse one has 1 word
    tg = judge_game(scorer, cards[k], questions[k], answers[k], batch=4)
    assert tg.words == tuple(answers[k].split()) and tg.output[-1] == lay.special("<verdict>")
    keep = np.array([[True] * len(tg.words), [i % 2 == 0 for i in range(len(tg.words))]])
    got = tg.game.values(keep)
    for row, value in zip(keep, got, strict=True):
        ids = np.concatenate([tg.prompt, tg.output]).copy()
        for kept, (a, b) in zip(row, tg.players.spans, strict=True):
            if not kept:
                ids[a:b] = lay.pad_id
        r = reference_ratio(model, params, list(ids), lay)
        np.testing.assert_allclose(value, np.log(r / (1 - r)), rtol=1e-4, atol=1e-4)  # fp32


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_judge_trains_evaluates_and_serves_as_an_rl_reward(judge_data, tmp_path):
    from chorus.rl.rewards import RewardMix, RewardMixConfig
    from chorus.training.cli import eval_main, train_main

    workdir = tmp_path / "judge"
    run = [*SIZES, "train.log_every=1", "train.checkpoint_every=1000", "train.eval_every=3",
           "train.eval_steps=1", "experiment.eval_examples=2", "experiment.eval_batch=4",
           "experiment.max_rationale_tokens=4"]
    assert train_main(["--experiment", "judge", "--workdir", str(workdir), "--data",
                       judge_data, "--quiet", *sets(*run, "train.steps=3")]) == 0
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line]
    train = [r for r in steps if "verdict_accuracy" in r and "step" in r]
    assert len(train) >= 3 and all(np.isfinite(r["loss"]) for r in train)
    assert (workdir / "assets" / TOKENIZER_FILENAME).is_file()
    assert eval_main(["--workdir", str(workdir)]) == 0
    report = json.loads((workdir / "eval" / "judge_eval.json").read_text())
    assert set(report["held_out_personas"]) == set(KINDS)
    assert report["held_out_personas"]["refusal"]["held_out_type"]
    assert set(report["pairwise"]) == set(PERTURBATIONS)
    assert "held_out_types_accuracy" in report["summary"]

    import experiments.judge.rewards  # noqa: F401  (registers "judge")

    config = load_config("cpu-tiny", SIZES)
    mix = RewardMix(RewardMixConfig.from_mapping({"judge": {"weight": 1,
                                                            "run": str(workdir)}}), config)
    cards, questions, answers = exchanges(2, seed=5)
    refs = [json.dumps({"persona": c, "question": q})
            for c, q in zip(cards, questions, strict=True)]
    completions = [Completion(np.zeros(1, np.int32), a, np.zeros(0, np.int32)) for a in answers]
    got = mix(refs, completions, references=refs).components["judge"]
    assert got.shape == (2,) and np.all((got > 0) & (got < 1))
    scorer = mix._calls["judge"][0].scorer
    np.testing.assert_allclose(got, scorer.pointwise(cards, questions, answers).reward)
    with pytest.raises(ValueError, match=r"references\[0\] to be a JSON object"):
        mix(refs, completions, references=["not json", "x"])

    # the judge run through `chorus analyze interactions` (the answer's words as players)
    from chorus.cli import main as chorus

    out = tmp_path / "analyze"
    assert chorus(["analyze", "interactions", "--workdir", str(workdir), "--text",
                   "I reside in Riga now.", "--card", cards[0], "--question", questions[0],
                   "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "interactions.json").read_text())
    assert report["players"] == ["I", "reside", "in", "Riga", "now."]
    assert report["game"]["value"].startswith("log p(<yes>) - log p(<no>)")
    assert abs(report["shapley"]["efficiency_gap"]) < 1e-8 and report["tree"] is not None
    assert chorus(["analyze", "interactions", "--workdir", str(workdir), "--text",
                   "I reside in Riga.", "--out", str(out), "--quiet"]) == 2  # no card
