"""The TTS RL task (experiments/tts/rl.py) on the tiny trained TTS stack: its prompts are the
SFT regime's, its answers the codec's cached codes, its rollouts sample only audio codes and
<tts_end>; `chorus rl --experiment tts --algo grpo|dpo` end to end (a cheap stand-in reward:
the TTS rewards live in experiments/tts/rewards.py)."""

import json
import os

import jax
import numpy as np
import pytest
from backbones import random_backbone
from tts_runs import TTS_SETS

from chorus.audio.mel import log_mel
from chorus.config import ConfigError, apply_overrides, load_config
from chorus.rl import cli
from chorus.rl.engine import RolloutEngine
from chorus.rl.init_from import inherit_settings
from chorus.rl.rewards import register_reward
from chorus.vocab import VocabLayout
from data_pipelines.records import read_record
from data_pipelines.regime import ExampleInputs
from data_pipelines.sources import DEFAULT_FIELDS, open_source
from experiments import tts
from experiments.tts.experiment import CODES, TtsRegime, open_codes
from experiments.tts.rl import TtsTask, build_rl
from experiments.tts.settings import TtsRLSettings
from experiments.tts.target import SpeechTarget

RL_SETS = ["experiment.eval_splits=[validation]", "experiment.max_new_tokens=12",
           "experiment.rl_train_pool=16", "experiment.rl_eval_pool=8",
           "experiment.eval_prompts=4", "experiment.group_size=4", "train.batch_size=8"]


@register_reward("test_tts_codes", replace=True)
def low_codes(prompts, completions, **_):
    """A cheap stand-in for the TTS rewards: the share of codes in the lower half of the
    codebook (varies between samples, whatever their length)."""
    return np.array([np.mean(c.audio_codes < 500) if c.audio_codes.size else 0.0
                     for c in completions], np.float64)


def _config(stack, *overrides):
    return load_config("cpu-tiny", [*TTS_SETS, *RL_SETS, "experiment.algo=grpo",
                                    f"experiment.data_dir={stack['data_dir']}",
                                    f"experiment.cache_key={stack['cache_key']}", *overrides])


@pytest.fixture(scope="module")
def task(tiny_tts_stack):
    config = _config(tiny_tts_stack)
    from chorus.config import settings_from

    return config, TtsTask(config, settings_from(TtsRLSettings, config.experiment))


def _raw(stack, split, record_id):
    source = open_source("chorus_speech", stack["data_dir"], split)
    return next(source[i] for i in range(len(source))
                if SpeechTarget.from_raw(source[i]).id == record_id)


def test_prompts_are_the_sft_regimes(task, tiny_tts_stack):
    config, task = task
    layout = VocabLayout.from_model_config(config.model)
    prompts = task.prompts("train", np.random.default_rng(0), 4)
    assert prompts.ids.shape[1] % 64 == 0  # bucketed: one compile per bucket, not per batch
    cache = open_codes(tiny_tts_stack["data_dir"], tiny_tts_stack["cache_key"], "train", layout)
    regime = TtsRegime(speaker_clips=task.clips["train"])  # the SFT regime's eval examples
    clipped = 0
    for i, (ids, n, ref) in enumerate(zip(prompts.ids, prompts.lengths, prompts.references,
                                          strict=True)):
        target = SpeechTarget.from_json(ref)
        raw = _raw(tiny_tts_stack, "train", target.id)
        assert target == SpeechTarget.from_raw(raw)
        record = read_record(raw, DEFAULT_FIELDS, _limits())
        wave = regime.input_wave(record, None)
        features = None if wave is None else log_mel(wave)
        stream = regime.stream(ExampleInputs(
            record=record, features=features, cached={CODES: cache.get(target.id)[CODES]},
            encode=task.tokenizer.encode, layout=layout, rng=None))
        np.testing.assert_array_equal(ids[:n], stream.tokens[:stream.prompt_length])
        assert ids[n - 1] == layout.special("<tts_start>") and (ids[n:] == layout.pad_id).all()
        # the speaker clip the prompt's <audio> placeholders stand for
        frames = int(prompts.audio["audio_mask"][i, 0].sum())
        assert frames == (0 if features is None else len(features))
        if frames:
            clipped += 1
            np.testing.assert_array_equal(prompts.audio["audio_features"][i, 0, :frames],
                                          features)
    assert clipped  # the tiny corpus has voices with two train records
    # held-out prompts come from eval_splits[0], none from the train pool
    train_ids = {t.id for t in task.pools["train"]}
    held_out = task.prompts("eval", np.random.default_rng(0), 8).references
    assert not train_ids & {SpeechTarget.from_json(r).id for r in held_out}


def _limits():
    from data_pipelines.records import AudioLimits

    return AudioLimits(max_seconds=None)


def test_answers_are_the_cached_codes_and_corrupt_says_another_text(task, tiny_tts_stack):
    config, task = task
    layout = VocabLayout.from_model_config(config.model)
    end = layout.special("<tts_end>")
    prompts = task.prompts("eval", np.random.default_rng(1), 3)
    ids, lengths = task.answers(prompts.references)
    cache = open_codes(tiny_tts_stack["data_dir"], tiny_tts_stack["cache_key"], "validation",
                       layout)
    assert ids.shape == (3, 12)  # experiment.max_new_tokens: the rollouts' width too
    for row, n, ref in zip(ids, lengths, prompts.references, strict=True):
        codes = cache.get(SpeechTarget.from_json(ref).id)[CODES]
        assert codes.size > 11  # so the cut to the width is exercised
        np.testing.assert_array_equal(row[:n - 1], layout.audio_code_ids(codes)[:11])
        assert row[n - 1] == end and (row[n:] == layout.pad_id).all()
    wrong = task.corrupt(prompts.references, np.random.default_rng(0))
    eval_ids = {t.id for t in task.pools["eval"]}
    for ref, bad in zip(prompts.references, wrong, strict=True):
        good, bad = SpeechTarget.from_json(ref), SpeechTarget.from_json(bad)
        assert bad.text != good.text and bad.id in eval_ids  # from the same (held-out) pool
        if any(t.speaker_id == good.speaker_id and t.text != good.text
               for t in task.pools["eval"]):
            assert bad.speaker_id == good.speaker_id
    with pytest.raises(ConfigError, match="no codes in the code caches"):
        task.answers([SpeechTarget.from_json(prompts.references[0]).__class__(
            **{**json.loads(prompts.references[0]), "id": "nope"}).to_json()])


def test_rollouts_sample_only_audio_codes_and_tts_end(task):
    config, task = task
    layout = VocabLayout.from_model_config(config.model)
    from chorus.config import settings_from

    settings = settings_from(TtsRLSettings, config.experiment)
    engine = RolloutEngine(config, settings, task, 4)
    model, params = random_backbone(config)  # untrained: favours no id range
    prompts = task.prompts("train", np.random.default_rng(0), 2)
    rows = engine.rollout(params, prompts, jax.random.key(0), engine.sampling, 4).rows
    end = layout.special("<tts_end>")
    for targets, mask in zip(rows["targets"], rows["mask"], strict=True):
        ids = targets[mask > 0]
        assert 1 <= ids.size <= 12
        assert (layout.is_audio_code(ids[:-1])).all(), ids
        assert layout.is_audio_code(ids[-1]) or ids[-1] == end
        assert end not in ids[:-1]


def _rl(stack, workdir, algo, *overrides):
    sets = [a for o in (*TTS_SETS, *RL_SETS, "train.steps=2", "train.log_every=1",
                        "train.checkpoint_every=1000", "optim.warmup_steps=1",
                        "experiment.rewards={test_tts_codes: 1.0}", *overrides)
            for a in ("--set", o)]
    assert cli.main(["--experiment", "tts", "--algo", algo, "--workdir", str(workdir),
                     "--quiet", "--init-from", stack["tts"], *sets]) == 0
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        metrics = json.load(f)
    return metrics  # (no data_dir / cache_key given: inherited from the --init-from run)


@pytest.mark.slow
def test_chorus_rl_tts_grpo_end_to_end(tiny_tts_stack, tmp_path):
    metrics = _rl(tiny_tts_stack, tmp_path / "grpo", "grpo")
    for key in ("reward/test_tts_codes", "kl", "initial/heldout/sampled/reward/total",
                "final/heldout/greedy/reward/test_tts_codes"):
        assert np.isfinite(metrics[key]), key


@pytest.mark.slow
def test_chorus_rl_tts_dpo_on_sampled_pairs_end_to_end(tiny_tts_stack, tmp_path):
    metrics = _rl(tiny_tts_stack, tmp_path / "dpo", "dpo", "experiment.dpo.pairs=sampled",
                  "experiment.dpo.samples=4", "experiment.dpo.margin=0.1")
    assert 0 < metrics["pairs/kept"] <= 1 and metrics["pairs/gap"] >= 0.1
    assert np.isfinite(metrics["final/heldout/pairs/rewards/accuracy"])


def test_data_dir_cache_key_and_codec_run_default_to_the_init_runs(tiny_tts_stack, tmp_path):
    config = load_config("cpu-tiny", [*TTS_SETS, "experiment.algo=grpo",
                                      f"experiment.init_from={tiny_tts_stack['tts']}"])
    experiment = inherit_settings(config, tiny_tts_stack["tts"], tts.RL_INHERITED).experiment
    assert experiment["data_dir"] == tiny_tts_stack["data_dir"]
    assert experiment["cache_key"] == tiny_tts_stack["cache_key"]
    assert experiment["codec_run"] == tiny_tts_stack["codec"]
    mine = inherit_settings(apply_overrides(config, ["experiment.cache_key=other"]),
                            tiny_tts_stack["tts"], tts.RL_INHERITED)
    assert mine.experiment["cache_key"] == "other"  # a key the RL run sets is kept


def test_build_rl_names_a_missing_corpus(tmp_path):
    config = load_config("cpu-tiny", [*TTS_SETS, "experiment.algo=grpo",
                                      f"experiment.init_from={tmp_path / 'gone'}"])
    with pytest.raises(ConfigError, match="experiment.data_dir"):
        build_rl(config)


def test_the_ablation_sweep_is_one_command_of_valid_runs(tmp_path, capsys):
    from chorus.config import settings_from
    from chorus.rl import ablate

    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "tts", "ablation.yaml")
    sweep = ablate.with_overrides(ablate.load_sweep(path), ["experiment.init_from=runs/tts"])
    runs = ablate.expand(sweep, tmp_path)
    assert len(runs) == 18 and len({r.setting for r in runs}) == 6
    assert {r.algo for r in runs} == {"dpo", "grpo"} and {r.seed for r in runs} == {0, 1, 2}
    mixes = {json.dumps(r.overrides["experiment.rewards"], sort_keys=True) for r in runs}
    assert [sorted(json.loads(m)) for m in sorted(mixes, key=len)] == [
        ["tts_cer"], ["tts_cer", "tts_speaker_sim"], ["tts_cer", "tts_control", "tts_speaker_sim"]]
    for run in runs:
        # every run's --set parses into the TTS RL settings (the reward names are the TTS
        # rewards', registered by experiments/tts/rewards.py: checked by name above)
        sets = [ablate.override_arg(k, v) for k, v in run.overrides.items()
                if k != "experiment.rewards"]
        config = load_config("cpu-tiny", [*sets, f"experiment.algo={run.algo}",
                                          "experiment.data_dir=d", "experiment.cache_key=k"])
        settings = settings_from(TtsRLSettings, config.experiment)
        assert settings.init_from == "runs/tts" and settings.dpo.pairs == "sampled"
        assert config.train.seed == run.seed
    argv = ["--experiment", "tts", "--sweep", path, "--workdir", str(tmp_path), "--dry-run",
            "--set", "experiment.init_from=runs/tts"]
    assert ablate.main(argv) == 0
    assert capsys.readouterr().out.count("--set experiment.init_from=runs/tts") == 18
