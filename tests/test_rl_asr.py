"""RL on the ASR task keeps the init run's heads: the ASR run's "mtp" and "ctc" ride along
frozen, the RL run exports {"backbone", "mtp", "ctc"} like an ASR run and holds its tokenizer
asset, so its directory alone is an ASR model (what `chorus transcribe` restores). Its
rollouts' teacher-forced scores are the sampler's own log-probs, audio included."""

import os

import jax
import numpy as np
import pytest
from test_training_asr import ASR

from chorus.config import load_config, settings_from
from chorus.rl import rollout
from chorus.rl.algorithms import get_algorithm
from chorus.rl.engine import TRAIN_ROLLOUTS, RolloutEngine
from chorus.rl.init_from import inherit_settings
from chorus.training.cli import train_main
from chorus.training.restore import asset_path, load_run
from chorus.training.trainer import Trainer
from experiments import asr
from experiments.asr.rl import AsrTask
from experiments.asr.settings import AsrRLSettings

pytestmark = pytest.mark.slow  # trains ASR runs

RUN = [*ASR, "experiment.mtp.num_heads=2", "experiment.speed_examples=0",
       "experiment.eval_examples=2", "decode.max_new_tokens=8", "train.checkpoint_every=1000"]


def test_grpo_run_exports_the_init_runs_heads_and_tokenizer(tiny_asr_corpus, tmp_path):
    init = tmp_path / "asr"
    sets = [a for o in (*RUN, "train.steps=1") for a in ("--set", o)]
    assert train_main(["--experiment", "asr", "--workdir", str(init), "--data",
                       tiny_asr_corpus, "--quiet", *sets]) == 0
    config = load_config("cpu-tiny", [
        *RUN, "train.steps=1", "experiment.module=asr", "experiment.algo=grpo",
        f"experiment.init_from={init}", "experiment.group_size=2", "train.batch_size=8",
        "experiment.rl_train_pool=4", "experiment.rl_eval_pool=2",
        "experiment.rewards={neg_wer: 1.0}"])
    config = inherit_settings(config, str(init), asr.RL_INHERITED)  # as `chorus rl` does
    assert config.experiment["data_dir"] == tiny_asr_corpus  # the init run's
    experiment = asr.build(config)
    assert sorted(experiment.frozen) == ["ctc", "mtp", "reference"]
    workdir = tmp_path / "grpo"
    assert Trainer(config, experiment, str(workdir), console=False).run().step == 1

    base, rl = load_run(str(init)), load_run(str(workdir))
    assert sorted(rl.params) == sorted(base.params) == ["backbone", "ctc", "mtp"]
    for head in ("mtp", "ctc"):
        for a, b in zip(jax.tree.leaves(rl.params[head]), jax.tree.leaves(base.params[head]),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with open(asset_path(str(workdir), "tokenizer.model"), "rb") as f, open(
            os.path.join(tiny_asr_corpus, "tokenizer.model"), "rb") as g:
        assert f.read() == g.read()


def test_asr_rollout_scores_are_the_samplers_own_and_hear_the_audio(tiny_asr_corpus,
                                                                     tiny_asr_run):
    """GRPO's batch of audio-prompt rollouts: its teacher-forced old-policy logps equal the
    sampler's own (temperature-1) log-probs; with the prompts' audio zeroed they do not (the
    README's 3.8e-6 / 9.4 on the reproduce checkpoint)."""
    config = load_config("cpu-tiny", [
        *RUN, "experiment.module=asr", "experiment.algo=grpo", "experiment.group_size=2",
        f"experiment.init_from={tiny_asr_run}", f"experiment.data_dir={tiny_asr_corpus}",
        "train.batch_size=8", "experiment.rl_train_pool=4", "experiment.rl_eval_pool=2",
        "experiment.rewards={neg_wer: 1.0}"])
    settings = settings_from(AsrRLSettings, config.experiment)
    task = AsrTask(config, settings)
    algorithm = get_algorithm("grpo")(settings)
    engine = RolloutEngine(config, settings, task, algorithm.group_size)
    policy = load_run(str(tiny_asr_run)).params["backbone"]
    params = {"policy": policy, "reference": policy}
    batch = algorithm.batch(engine, params, 0)  # rollout 0 of a run from tiny_asr_run
    # the sampler's own log-probs of that rollout (same prompts, same key)
    prompts = task.prompts("train", engine.rng(TRAIN_ROLLOUTS, 0), engine.num_prompts)
    own = rollout.sample(engine.model, policy, prompts.ids, prompts.lengths, engine.key(0, 0),
                         engine.sampling, algorithm.group_size, stop_tokens=task.stop_tokens,
                         audio=prompts.audio)
    laid = rollout.rollout_rows(own, prompts.ids, prompts.lengths, batch["tokens"].shape[1],
                                engine.layout.pad_id)
    np.testing.assert_array_equal(batch["tokens"], laid["tokens"])
    assert batch["audio_features"].shape[0] == 8 and np.abs(batch["audio_features"]).max() > 0
    sampler = laid["policy_logps"]
    assert (batch["mask"].sum(-1) >= 1).all() and batch["mask"].sum() >= 16
    # fp32: the KV-cache decode and one teacher-forced forward agree to ~1e-6 per token
    # (3.8e-6 per row measured)
    np.testing.assert_allclose(batch["old_logps"], sampler, atol=1e-5)
    np.testing.assert_allclose(batch["old_logps"].sum(-1), sampler.sum(-1), atol=1e-4)
    zeroed = {**batch, "audio_features": np.zeros_like(batch["audio_features"])}
    gap = np.abs(algorithm.score(engine, params, zeroed)["old_logps"].sum(-1)
                 - sampler.sum(-1))
    # 3 steps of training barely listen (mean 0.12 nats per row measured, 9.4 on the
    # reproduce checkpoint): still 1000x the tolerance above
    assert gap.mean() > 0.05, gap
