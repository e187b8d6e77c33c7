"""experiments/asr on a real (tiny) synthesized corpus: settings, data shards, the loss and
`evaluate` on initialized params (training itself is covered by test_training_runs)."""

import jax
import numpy as np
import pytest
from asr_runs import ASR

from chorus import sharding
from chorus.config import ConfigError, load_config
from chorus.training.state import init_state, make_state_spec
from experiments.asr import build


@pytest.fixture(scope="module")
def corpus(tiny_asr_corpus):
    return tiny_asr_corpus


def test_asr_settings_are_validated_and_the_data_dir_where_data_opens(tmp_path):
    with pytest.raises(ConfigError, match=r"experiment: unknown field\(s\) \['data_workerz'\]"):
        build(load_config("cpu-tiny", ASR + ["experiment.data_workerz=2"]))
    with pytest.raises(ConfigError, match=r"experiment.mtp.num_heads: expected an int"):
        build(load_config("cpu-tiny", ASR + ["experiment.mtp.num_heads=two"]))
    # Building opens no data (inference restores need no corpus); the iterators do.
    experiment = build(load_config("cpu-tiny", ASR))
    with pytest.raises(ConfigError, match=r"experiment.data_dir: expected the dataset dir"):
        experiment.train_iterator(0, 1, 0)
    missing = build(load_config("cpu-tiny", ASR + [f"experiment.data_dir={tmp_path}/nope"]))
    with pytest.raises(ConfigError, match="experiment.data_dir: expected an existing dir"):
        missing.eval_iterator(0, 1, 0)


def test_asr_batches_shard_over_hosts_and_evaluate_runs(corpus, tmp_path):
    config = load_config("cpu-tiny", ASR + [f"experiment.data_dir={corpus}",
                                            "experiment.module=asr",
                                            "experiment.eval_examples=3",
                                            "experiment.speed_examples=0",
                                            "experiment.mtp.num_heads=2",
                                            "decode.max_new_tokens=8"])
    experiment = build(config)
    # host 1 of 2 gets half the rows of the global batch, in the batch contract
    batch = next(experiment.train_iterator(1, 2, 0))
    assert sorted(batch) == ["audio_features", "audio_mask", "loss_mask", "positions",
                             "segment_ids", "targets", "tokens"]
    assert batch["tokens"].shape == (4, 160)
    assert batch["audio_features"].shape == (4, 2, 640, 128)
    assert batch["loss_mask"].sum() > 0
    mesh = sharding.make_mesh(config.mesh)
    spec = make_state_spec(config, experiment, mesh)
    state = init_state(spec, experiment, mesh)
    # SpecAugment is in the training loss only: it depends on the step rng, eval does not
    full = next(experiment.train_iterator(0, 1, 0))
    train_loss = jax.jit(lambda key: experiment.loss_fn(state.params, full, key)[0])
    eval_loss = jax.jit(lambda key: experiment.eval_loss_fn(state.params, full, key)[0])
    keys = jax.random.key(1), jax.random.key(2)
    assert float(train_loss(keys[0])) != float(train_loss(keys[1]))
    assert float(eval_loss(keys[0])) == float(eval_loss(keys[1]))
    with sharding.activate(mesh):
        result = experiment.evaluate(state.params, str(tmp_path))
    assert result["batches"] >= 1
    assert np.isfinite(result["loss"]) and 0 <= result["accuracy"] <= 1
    # every <audio> placeholder got exactly one adaptor frame from the real clips
    assert result["audio_placeholder_excess"] == 0
    assert experiment.flops_per_batch > 0 and experiment.tokens_per_batch == 8 * 160
    assert jax.tree.leaves(state.params)[0].dtype == np.float32
    # decoding eval: per split WER/CER, verified decoding identical to greedy, files written
    for split in ("test", "test_compositional"):
        assert 0 <= result[split]["cer"] and result[split]["identical_to_greedy"] == 1.0
        assert result[split]["tokens_per_step"] >= 1.0
        assert result[split]["ctc_wer"] >= 0  # the CTC head decodes the same clips
        # joint CTC/attention decoding, verified with the heads, = its one-token-per-step loop
        assert result[split]["joint_identical_to_joint_greedy"] == 1.0
        assert 0 <= result[split]["joint_wer"] and result[split]["joint_tokens_per_step"] >= 1
        assert 0 <= result[split]["joint_beam_wer"] and result[split]["joint_beam_width"] == 4
        assert result[split]["gate_rejected"] == 0  # every eval clip is speech
    assert (tmp_path / "eval" / "asr_eval.md").read_text().startswith("| split | WER")


@pytest.mark.slow
def test_two_identical_runs_give_bitwise_identical_params(corpus, tmp_path):
    """Same seed, same numbers (docs/training.md, "Same seed, same numbers"): two `chorus
    train` processes of the ASR experiment on the real grain pipeline, with periodic eval,
    async checkpoints and the prefetch thread on, different Python hash seeds and one with a
    grain worker process, train on the same batches to the same losses and bit-identical
    params. (They share a compilation cache to keep the suite fast: that the compiler gives
    the same program twice was measured without one, see the doc.)"""
    import json
    import os
    import subprocess
    import sys

    from chorus.training.metrics import read_jsonl
    from chorus.training.restore import load_run

    tests = os.path.dirname(os.path.abspath(__file__))
    sets = [a for o in ASR + ["experiment.mtp.num_heads=2", "train.steps=3",
                              "train.checkpoint_every=1", "train.eval_every=2",
                              "train.eval_steps=1", "train.log_every=1"]
            for a in ("--set", o)]
    runs = []
    for hash_seed, workers in (("1", 0), ("2", 1)):
        workdir = str(tmp_path / f"run{hash_seed}")
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=os.pathsep.join(
            [tests, os.path.dirname(tests), os.path.join(os.path.dirname(tests), "src")]),
            JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        proc = subprocess.run(
            [sys.executable, "-m", "chorus.cli", "train", "--experiment", "asr", "--workdir",
             workdir, "--data", corpus, "--quiet", *sets, "--set",
             f"experiment.data_workers={workers}"],
            env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
        runs.append(([(r["step"], r["loss"], r["grad_norm"], r["fingerprint"])
                      for r in records if "event" not in r],
                     [json.dumps({k: v for k, v in r.items() if k not in ("time",)})
                      for r in records if r.get("event") == "eval"],
                     load_run(workdir)))
    (steps_a, evals_a, run_a), (steps_b, evals_b, run_b) = runs
    assert [s for s, *_ in steps_a] == [1, 2, 3] and steps_a == steps_b
    assert len(evals_a) == 1 and evals_a == evals_b
    leaves_a, leaves_b = jax.tree.leaves(run_a.params), jax.tree.leaves(run_b.params)
    assert len(leaves_a) == len(leaves_b) > 10
    for a, b in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
