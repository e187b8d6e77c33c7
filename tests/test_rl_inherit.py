"""`chorus rl --init-from RUN` takes the settings its experiment declares (RL_INHERITED) from
RUN's config when it leaves them unset; an ASR RL run refuses a CTC frame rate its init run's
CTC head was not trained on."""

import json

import pytest

from chorus.config import ConfigError, load_config
from chorus.rl import cli as rl_cli
from chorus.rl.init_from import inherit_settings
from chorus.training.run_config import write_run_config
from experiments import asr


def _init_run(tmp_path, **experiment):
    """A run directory holding only a config.json (all inherit_settings reads)."""
    run = tmp_path / "init"
    run.mkdir()
    write_run_config(str(run), load_config("cpu-tiny", [
        f"experiment.{k}={json.dumps(v)}" for k, v in experiment.items()]))
    return str(run)


def test_unset_keys_come_from_the_init_run_and_set_ones_stay(tmp_path):
    init = _init_run(tmp_path, module="asr", data_dir="/corpus", ctc_frames="encoder",
                     asr_target="normalized", mtp={"num_heads": 2, "design": "sequential"})
    config = load_config("cpu-tiny", ["experiment.module=asr", "experiment.algo=grpo",
                                      "experiment.asr_target=raw",
                                      "experiment.mtp.loss_weight=0.5"])
    got = inherit_settings(config, init, ("data_dir", "ctc_frames", "asr_target", "mtp"))
    assert got.experiment["data_dir"] == "/corpus"
    assert got.experiment["ctc_frames"] == "encoder"
    assert got.experiment["asr_target"] == "raw"  # set here: kept
    # a sub-config: the init run's, updated with this run's fields
    assert got.experiment["mtp"] == {"num_heads": 2, "design": "sequential",
                                     "loss_weight": 0.5}
    # only the declared keys travel
    assert "ctc_frames" not in inherit_settings(config, init, ("data_dir",)).experiment
    # a run without a config (gone, or not written yet): unchanged
    assert inherit_settings(config, str(tmp_path / "nowhere"), ("data_dir",)) == config


def test_asr_declares_the_settings_that_shape_its_heads():
    assert {"data_dir", "mtp", "ctc_weight", "ctc_frames"} <= set(asr.RL_INHERITED)


def test_a_ctc_frame_rate_unlike_the_init_runs_is_refused(tmp_path, capsys):
    init = _init_run(tmp_path, module="asr", data_dir=str(tmp_path), ctc_frames="encoder")
    config = load_config("cpu-tiny", ["experiment.module=asr", "experiment.algo=grpo",
                                      f"experiment.init_from={init}",
                                      "experiment.ctc_frames=adaptor"])
    with pytest.raises(ConfigError, match=r"experiment.ctc_frames: expected the init run's "
                                          r"'encoder' .* got 'adaptor'"):
        asr.build(config)
    # through the CLI: exit code 2 and the same message; left unset, it is inherited and
    # passes that check (then stops at the init run's missing checkpoint)
    argv = ["--experiment", "asr", "--algo", "grpo", "--workdir", str(tmp_path / "rl"),
            "--quiet", "--init-from", init]
    assert rl_cli.main([*argv, "--set", "experiment.ctc_frames=adaptor"]) == 2
    assert "experiment.ctc_frames: expected the init run's 'encoder'" in capsys.readouterr().err
    assert rl_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "ctc_frames" not in err and "expected a run directory with a checkpoint" in err
