"""RL on the ASR task keeps the init run's heads: the ASR run's "mtp" and "ctc" ride along
frozen, the RL run exports {"backbone", "mtp", "ctc"} like an ASR run and holds its tokenizer
asset, so its directory alone is an ASR model (what `chorus transcribe` restores)."""

import os

import jax
import numpy as np
from test_training_asr import ASR

from chorus.config import load_config
from chorus.training.cli import train_main
from chorus.training.restore import asset_path, load_run
from chorus.training.trainer import Trainer
from experiments import asr

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
    experiment = asr.build(config)  # data_dir: the init run's
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
