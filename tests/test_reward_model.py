"""The Bradley-Terry reward model: its pair rows (exact resume, held-out splits), the loss and
its gradient against references, the scorer against an unbatched forward, and a tiny `chorus
train --experiment reward_model` end to end as an RL reward component."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from asr_runs import sets
from jax.test_util import check_grads
from test_judge import SIZES

from chorus.config import ConfigError, load_config
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.task import Completion
from chorus.vocab import VocabLayout
from data_pipelines.personas import answer, split_lexicon
from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer
from experiments.judge.labels import PERTURBATIONS, consistent_and_perturbed, make_pair
from experiments.judge.prompt import judge_prompt
from experiments.reward_model.experiment import (
    CENTER_WEIGHT,
    EVAL,
    TRAIN,
    PairBatches,
    bradley_terry_loss,
    build,
    reward_model_loss,
)
from experiments.reward_model.scoring import RewardModelScorer
from experiments.reward_model.settings import RewardModelSettings


@pytest.fixture(scope="module")
def tiny(judge_data):
    """(config, model, params {"backbone", "reward_head"} with a random head, tokenizer)."""
    config = load_config("cpu-tiny", SIZES + [f"experiment.data_dir={judge_data}"])
    model = UnifiedAudioLM(config)
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                          jax.jit(build(config).init_fn)(jax.random.key(1)),
                          is_leaf=lambda x: hasattr(x, "value"))
    # The head starts at zero (every score 0); a random one makes the references informative.
    kernel = params["reward_head"]["Dense_0"]["kernel"]
    params["reward_head"]["Dense_0"]["kernel"] = jax.random.normal(jax.random.key(2),
                                                                   kernel.shape)
    params["reward_head"]["Dense_0"]["bias"] = jnp.asarray([0.3])
    return config, model, params, TextTokenizer.from_file(f"{judge_data}/{TOKENIZER_FILENAME}")


def reference_score(model, params, ids) -> float:
    """The head, in numpy, on the hidden state at the last token of one unpadded sequence."""
    n = len(ids)
    out = model.apply({"params": params["backbone"]}, jnp.asarray(ids)[None],
                      jnp.arange(n)[None], jnp.ones((1, n), jnp.int32))
    head = params["reward_head"]["Dense_0"]
    hidden = np.asarray(out["hidden"][0, -1], np.float64)
    return float(hidden @ np.asarray(head["kernel"], np.float64)[:, 0] + float(head["bias"][0]))


def test_a_row_is_the_consistent_then_the_perturbed_exchange_and_resumes_exactly(tiny):
    config, _, _, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    settings = RewardModelSettings()
    it = PairBatches(config, settings, tok, TRAIN, seed=3)
    batch = next(it)
    b = config.train.batch_size
    assert batch["tokens"].shape == (b, 2, config.train.seq_len)
    pair = it.pair(0, 1)
    good, bad = consistent_and_perturbed(pair)
    assert good == answer(pair.persona, pair.kind) != bad  # the card's own answer comes first
    for side, reply in enumerate((good, bad)):
        want = judge_prompt(lay, tok.encode, pair.persona.card(), pair.question, reply)
        last = batch["last"][1, side]
        assert last == len(want) - 1 and batch["tokens"][1, side, last] == lay.special(
            "<rationale>")
        np.testing.assert_array_equal(batch["tokens"][1, side, :len(want)], want)
        assert batch["segment_ids"][1, side].sum() == len(want)
    state = json.loads(json.dumps(it.get_state()))
    second = next(it)
    resumed = PairBatches(config, settings, tok, TRAIN, seed=3)
    resumed.set_state(state)
    again = next(resumed)
    assert all(np.array_equal(second[k], again[k]) for k in second)
    halves = [PairBatches(config, settings, tok, TRAIN, i, 2, seed=3) for i in range(2)]
    joined = [next(h) for h in halves]
    for k in batch:
        assert np.array_equal(np.concatenate([j[k] for j in joined]), batch[k])
    # training pairs: training names and places, never the held-out type; eval: the others
    train_lex, held_lex = split_lexicon(every=settings.held_out_every)
    pairs = [it.pair(s, r) for s in range(30) for r in range(b)]
    assert {p.perturbation for p in pairs} == set(settings.trained_perturbations)
    assert all(p.persona.name in train_lex.names for p in pairs)
    evals = PairBatches(config, settings, tok, EVAL, seed=3)
    pairs = [evals.pair(s, r) for s in range(30) for r in range(b)]
    assert {p.perturbation for p in pairs} == set(PERTURBATIONS)
    assert all(p.persona.name in held_lex.names for p in pairs)


def test_an_exchange_longer_than_seq_len_names_the_setting(tiny):
    _, _, _, tok = tiny
    short = load_config("cpu-tiny", SIZES[:-1] + ["train.seq_len=40"])
    with pytest.raises(ConfigError, match=r"train.seq_len: expected exchanges of <= 40"):
        next(PairBatches(short, RewardModelSettings(), tok, TRAIN))


def test_the_loss_is_bradley_terry_on_the_reference_scores(tiny):
    config, model, params, tok = tiny
    it = PairBatches(config, RewardModelSettings(), tok, TRAIN, seed=1)
    batch = next(it)
    loss, metrics = reward_model_loss(model)(params, batch, jax.random.key(0))
    r = np.array([[reference_score(model, params, batch["tokens"][i, s, :batch["last"][i, s] + 1])
                   for s in range(2)] for i in range(len(batch["tokens"]))])
    margin = r[:, 0] - r[:, 1]
    want = np.mean(np.log1p(np.exp(-margin))) + CENTER_WEIGHT * r.mean() ** 2
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["accuracy"]), np.mean(margin > 0))
    np.testing.assert_allclose(float(metrics["margin"]), margin.mean(), rtol=1e-5, atol=1e-6)


def test_the_bradley_terry_gradient(tiny):
    rewards = jnp.asarray([[0.5, -1.0], [2.0, 2.5], [-0.3, 0.1]], jnp.float32)
    check_grads(bradley_terry_loss, (rewards,), order=2, modes=("rev",), atol=1e-3, rtol=1e-3)
    grad = np.asarray(jax.grad(bradley_terry_loss)(rewards))
    r = np.asarray(rewards, np.float64)
    margin = r[:, 0] - r[:, 1]
    push = -1.0 / (1.0 + np.exp(margin)) / len(r)  # d/dmargin of mean -log sigmoid(margin)
    center = 2 * CENTER_WEIGHT * r.mean() / r.size
    np.testing.assert_allclose(grad, np.stack([push + center, -push + center], 1), rtol=1e-5,
                               atol=1e-7)
    # the trainer's gradient reaches the head and the backbone
    config, model, params, tok = tiny
    batch = next(PairBatches(config, RewardModelSettings(), tok, TRAIN))
    grads = jax.grad(lambda p: reward_model_loss(model)(p, batch, None)[0])(params)
    assert float(jnp.abs(grads["reward_head"]["Dense_0"]["kernel"]).sum()) > 0
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["backbone"])) > 0


def test_the_scorer_pads_and_batches_without_changing_a_score(tiny):
    config, model, params, tok = tiny
    lay = VocabLayout.from_model_config(config.model)
    scorer = RewardModelScorer(model, params, tok, RewardModelSettings(eval_batch=2))
    rng = np.random.default_rng(4)
    pairs = [make_pair(rng, kind) for kind in PERTURBATIONS[:3]]  # 3 rows: a padded chunk
    cards, questions = [p.persona.card() for p in pairs], [p.question for p in pairs]
    answers = [p.answer_a for p in pairs]
    got = scorer.rewards(cards, questions, answers)
    want = [reference_score(model, params, judge_prompt(lay, tok.encode, c, q, a))
            for c, q, a in zip(cards, questions, answers, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scorer.reward(cards, questions, answers),
                               1 / (1 + np.exp(-np.asarray(want))), rtol=1e-4)
    with pytest.raises(ValueError, match="one entry per exchange"):
        scorer.rewards(cards, questions[:2], answers)


def test_tiny_reward_model_trains_evaluates_and_serves_as_an_rl_reward(judge_data, tmp_path):
    from chorus.rl.rewards import RewardMix, RewardMixConfig
    from chorus.training.cli import eval_main, train_main

    workdir = tmp_path / "rm"
    run = [*SIZES, "train.log_every=1", "train.checkpoint_every=1000", "train.eval_every=3",
           "train.eval_steps=1", "experiment.eval_examples=2", "experiment.eval_batch=4"]
    assert train_main(["--experiment", "reward_model", "--workdir", str(workdir), "--data",
                       judge_data, "--quiet", *sets(*run, "train.steps=3")]) == 0
    with open(workdir / "metrics.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event"' not in line]
    train = [r for r in steps if "margin" in r and "step" in r]
    assert len(train) >= 3 and all(np.isfinite(r["loss"]) for r in train)
    assert eval_main(["--workdir", str(workdir)]) == 0
    report = json.loads((workdir / "eval" / "reward_model_eval.json").read_text())
    assert set(report["held_out_personas"]) == set(PERTURBATIONS)
    assert report["held_out_personas"]["refusal"]["held_out_type"]
    assert {"pairwise_accuracy", "held_out_types_accuracy"} <= set(report["summary"])
    assert (workdir / "eval" / "reward_model_eval.md").read_text().startswith("Bradley-Terry")

    import experiments.judge.rewards  # noqa: F401  (registers "judge")
    import experiments.reward_model.rewards  # noqa: F401  (registers "reward_model")

    config = load_config("cpu-tiny", SIZES)
    mix = RewardMix(RewardMixConfig.from_mapping({"reward_model": {"weight": 1,
                                                                   "run": str(workdir)}}), config)
    rng = np.random.default_rng(5)
    pairs = [make_pair(rng, "wrong_fact") for _ in range(2)]
    cards, questions = [p.persona.card() for p in pairs], [p.question for p in pairs]
    answers = [p.answer_a for p in pairs]
    refs = [json.dumps({"persona": c, "question": q})
            for c, q in zip(cards, questions, strict=True)]
    completions = [Completion(np.zeros(1, np.int32), a, np.zeros(0, np.int32)) for a in answers]
    got = mix(refs, completions, references=refs).components["reward_model"]
    assert got.shape == (2,) and np.all((got > 0) & (got < 1))
    scorer = mix._calls["reward_model"][0].scorer
    np.testing.assert_allclose(got, scorer.reward(cards, questions, answers))
    with pytest.raises(ValueError, match=r"reward 'reward_model': expected references\[0\]"):
        mix(refs, completions, references=["not json", "x"])
    with pytest.raises(ConfigError, match="rewards.judge.run: expected a judge run, got a "
                                          "'reward_model' run"):
        RewardMix(RewardMixConfig.from_mapping({"judge": {"weight": 1, "run": str(workdir)}}),
                  config)
