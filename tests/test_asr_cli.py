"""The ASR mode through the `chorus` CLI on a tiny synthesized corpus: a short `chorus train
--experiment asr` run, `chorus rl --experiment asr --algo grpo` initialized from it (audio
prompts, WER rewards) and `chorus transcribe` on the RL run alone (the command itself:
tests/test_asr_transcribe_cli.py)."""

import json
import os

import numpy as np
import pytest
import soundfile
from asr_runs import RUN, sets

from chorus.config import load_config
from chorus.rl import cli as rl_cli
from chorus.training.cli import train_main
from experiments import asr
from experiments.asr import cli as asr_cli


@pytest.fixture(scope="module")
def corpus(tiny_asr_corpus):
    return tiny_asr_corpus


@pytest.fixture(scope="module")
def trained(tiny_asr_run):
    return tiny_asr_run


def test_rl_batches_carry_each_prompts_audio(corpus):
    import jax

    from chorus import sharding
    from chorus.training.experiment import merge_params
    from chorus.training.trainer import init_state, make_state_spec

    config = load_config("cpu-tiny", [*RUN, f"experiment.data_dir={corpus}",
                                      "experiment.module=asr", "experiment.algo=grpo",
                                      "experiment.group_size=2", "train.batch_size=4",
                                      "experiment.rl_train_pool=6", "experiment.rl_eval_pool=2",
                                      "experiment.eval_prompts=2",
                                      "experiment.rewards={neg_wer: 1.0}"])
    experiment = asr.build(config)

    mesh = sharding.make_mesh(config.mesh)
    state = init_state(make_state_spec(config, experiment, mesh), experiment, mesh)
    params = merge_params(state.params, state.frozen)
    experiment.policy_sink(params)
    batch = next(experiment.train_iterator(0, 1, 0))
    feats, mask = batch["audio_features"], batch["audio_mask"]
    assert feats.shape[:2] == (4, 1) and mask.any(axis=(1, 2)).all()
    # rows 2i, 2i+1 are two samples of prompt i: same clip; the two prompts differ
    np.testing.assert_array_equal(feats[0], feats[1])
    assert not np.array_equal(feats[0], feats[2])
    assert batch["mask"].sum() > 0 and np.isfinite(batch["reward/neg_wer"]).all()
    loss, metrics = jax.jit(experiment.loss_fn)(params, batch, jax.random.key(0))
    assert np.isfinite(float(loss))


@pytest.fixture(scope="module")
def grpo_run(trained, tmp_path_factory):
    """`chorus rl --experiment asr --algo grpo` initialized from the ASR run."""
    workdir = tmp_path_factory.mktemp("rl") / "grpo"
    argv = ["--experiment", "asr", "--algo", "grpo", "--workdir", str(workdir), "--quiet",
            "--init-from", str(trained),
            *sets(*RUN, "train.steps=2", "experiment.group_size=4",
                   "experiment.rl_train_pool=6", "experiment.rl_eval_pool=2",
                   "experiment.eval_prompts=2", "experiment.rewards={neg_wer: 1.0}")]
    assert rl_cli.main(argv) == 0  # data_dir comes from the --init-from run
    return workdir


def test_rl_grpo_from_the_asr_checkpoint(grpo_run, trained):
    with open(grpo_run / "final_metrics.json") as f:
        final = json.load(f)
    for when in ("initial", "final"):
        assert -10 < final[f"{when}/heldout/greedy/reward/neg_wer"] <= 0
    assert os.path.exists(grpo_run / "DONE")
    # its config.json records what it took from the init run (experiments.asr.RL_INHERITED)
    with open(grpo_run / "config.json") as f, open(trained / "config.json") as g:
        mine, init = json.load(f)["experiment"], json.load(g)["experiment"]
    assert mine["data_dir"] == init["data_dir"] and mine["mtp"] == init["mtp"]


def test_transcribe_runs_on_the_rl_run_dir_alone(grpo_run, corpus, tmp_path, capsys):
    """The RL run exports its policy as the backbone plus the init run's heads, and keeps the
    tokenizer: `chorus transcribe` needs nothing else (the corpus is moved away first)."""
    from data_pipelines.synthesis import synthesize

    wave, _ = synthesize("how many apples", voice="en-us+f3", rate=160)
    path = tmp_path / "q.wav"
    soundfile.write(path, wave, 16_000)
    hidden = corpus + ".hidden"
    os.rename(corpus, hidden)
    try:
        capsys.readouterr()
        assert asr_cli.main(["--workdir", str(grpo_run), "--mode", "verified",
                             "--set", "decode.max_new_tokens=6", str(path)]) == 0
        verified = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        # the default decoder, joint CTC/attention, reads the CTC head the run carries
        assert asr_cli.main(["--workdir", str(grpo_run), "--set", "decode.max_new_tokens=6",
                             str(path)]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mode"] == "joint"
        assert asr_cli.main(["--workdir", str(grpo_run), "--greedy",
                             "--set", "decode.max_new_tokens=6", str(path)]) == 0
        greedy = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    finally:
        os.rename(hidden, corpus)
    assert verified["step"] == 2 and verified["text"] == greedy["text"]


def test_heads_stage_trains_sequential_heads_on_the_frozen_backbone_and_ctc(trained, corpus,
                                                                          tmp_path):
    from chorus.training.restore import load_run

    workdir = tmp_path / "heads"
    assert train_main(["--experiment", "asr", "--workdir", str(workdir), "--data", corpus,
                       "--quiet", *sets(*RUN, "train.steps=2", "experiment.mtp_stage=heads",
                                         "experiment.mtp.design=sequential",
                                         f"experiment.backbone_from={trained}")]) == 0
    params = {}
    for name, run in (("base", trained), ("heads", workdir)):
        params[name] = load_run(str(run)).params
    same = jax_tree_equal(params["base"]["backbone"], params["heads"]["backbone"])
    assert same, "the heads stage changed the backbone"
    # the CTC head (frozen here; `--mode ctc`, rescoring and word times read it) is the base
    # run's, not a fresh random one
    assert jax_tree_equal(params["base"]["ctc"], params["heads"]["ctc"])
    import jax

    # the sequential modules (a transformer block per depth), not the base run's parallel heads
    assert (jax.tree.structure(params["heads"]["mtp"])
            != jax.tree.structure(params["base"]["mtp"]))


def jax_tree_equal(a, b) -> bool:
    import jax

    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                     strict=True))


def test_heads_stage_needs_a_backbone(corpus):
    from chorus.config import ConfigError

    with pytest.raises(ConfigError, match="experiment.backbone_from: expected the run dir"):
        asr.build(load_config("cpu-tiny", [*RUN, f"experiment.data_dir={corpus}",
                                           "experiment.mtp_stage=heads"]))
