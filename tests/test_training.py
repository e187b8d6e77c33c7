"""Trainer building blocks: event files, logs, config checks, optimizer, step, data plumbing."""

import io
import json
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboard_events import read_values
from train_toy import TINY

from chorus.config import ConfigError, OptimizerConfig, load_config
from chorus.progress import ENV_EVERY, format_duration, line_interval, progress
from chorus.training import distributed
from chorus.training.experiment import (
    Experiment,
    ExperimentError,
    load_experiment,
    split_params,
)
from chorus.training.hardware import mfu, peak_flops_per_device
from chorus.training.interrupts import StopRequests
from chorus.training.metrics import JsonlLog, MetricsLogger, read_jsonl
from chorus.training.optimizer import decay_mask, learning_rate_schedule, make_optimizer
from chorus.training.prefetch import Prefetcher, batch_fingerprint
from chorus.training.run_config import (
    IncompatibleConfigError,
    check_resumable,
    config_mismatches,
)
from chorus.training.state import TrainState
from chorus.training.step import make_train_step
from experiments.benchmarks.synthetic import SyntheticBatches

# ----------------------------------------------------------------------------- TensorBoard


def test_metrics_logger_writes_scalars_audio_images_and_histograms(tmp_path):
    logger = MetricsLogger(str(tmp_path))
    logger.scalars(3, {"train/loss": 2.5, "train/lr": 1e-3, "train/mfu": None})
    logger.scalars(300, {"eval/loss": 1.25})
    wave = 0.5 * np.sin(np.arange(1600, dtype=np.float32) / 10)
    logger.audio("tts/sample", wave, 300, sample_rate=16_000)
    logger.image("tts/mel", np.linspace(0, 1, 8 * 10).reshape(8, 10), 300)
    logger.histogram("params/embed", np.arange(100.0), 300)
    logger.close()
    values = read_values(str(tmp_path / "tensorboard"))
    assert values["train/loss"] == [(3, 2.5)] and values["eval/loss"] == [(300, 1.25)]
    assert values["train/lr"] == [(3, pytest.approx(1e-3))] and "train/mfu" not in values
    (step, audio), = values["tts/sample"]
    assert (step, audio.sample_rate, audio.length_frames) == (300, 16_000, 1600)
    assert audio.content_type == "audio/wav"
    (_, image), = values["tts/mel"]
    assert (image.height, image.width) == (8, 10)
    (_, histogram), = values["params/embed"]
    assert (histogram.num, histogram.min, histogram.max, histogram.sum) == (100, 0, 99, 4950)


def test_metrics_logger_rejects_malformed_media(tmp_path):
    logger = MetricsLogger(str(tmp_path))
    with pytest.raises(ValueError, match="audio 'a': expected a non-empty 1-D waveform, got "
                                         r"shape \(2, 3\)"):
        logger.audio("a", np.zeros((2, 3)), 1, 16_000)
    with pytest.raises(ValueError, match=r"image 'i': expected \[H, W\] or \[H, W, 1\|3\|4\]"):
        logger.image("i", np.zeros((4, 4, 2)), 1)
    with pytest.raises(ValueError, match="histogram 'h': expected finite values, got 2 values "
                                         "with 1 non-finite"):
        logger.histogram("h", [1.0, np.nan], 1)
    logger.close()


# ----------------------------------------------------------------------------- logs


def test_jsonl_log_cuts_a_torn_last_line_and_keeps_nan_parseable(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    log = JsonlLog(path)
    log.write({"step": 1, "loss": 1.0})
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    log = JsonlLog(path)
    log.write({"step": 2, "loss": float("nan")})
    log.close()
    assert read_jsonl(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": "nan"}]


def test_progress_prints_plain_periodic_lines_off_a_terminal(monkeypatch):
    err, out = io.StringIO(), io.StringIO()
    clock = iter([0.0, 10.0, 10.0, 40.0, 40.0, 40.0, 45.0, 100.0, 100.0])
    monkeypatch.setattr("chorus.progress.time.monotonic", lambda: next(clock))
    with progress(800, "train", unit="step", initial=100, stream=err, message_stream=out,
                  every=30) as bar:
        assert bar.mode == "lines"
        bar.update(10, loss=2.31234)  # t=10: not yet due
        bar.update(10, loss=2.2)  # t=40: due (30 s since the start)
        bar.write("eval step 120: loss 3.1")
        bar.update(20)  # t=45: not due again yet
    lines = err.getvalue().splitlines()
    # the rate counts from the first update (t=10: a compiling first step is not the pace):
    # 10 steps in 30 s; 680 left -> 2040 s
    assert lines[0] == "train: 120/800 (15%) loss 2.2 | 0.333 step/s | ETA 34m"
    # the closing line: 30 steps in 90 s since the first update, 100 s in all
    assert lines[1] == "train: 140/800 (18%) loss 2.2 | 0.333 step/s | took 2m"
    assert out.getvalue() == "eval step 120: loss 3.1\n"


def test_progress_interval_from_the_environment_and_quiet_prints_nothing(monkeypatch):
    monkeypatch.setenv(ENV_EVERY, "0")
    assert line_interval() == 0.0
    err = io.StringIO()
    with progress(None, "eval", unit="batch", stream=err) as bar:
        bar.update(1, loss=1.5)
        bar.update(1, loss=1.25)
    assert err.getvalue().splitlines()[0].startswith("eval: 1 loss 1.5 | ")
    assert err.getvalue().splitlines()[1].startswith("eval: 2 loss 1.25 | ")
    quiet, messages = io.StringIO(), io.StringIO()
    with progress(5, "train", stream=quiet, message_stream=messages, enabled=False) as bar:
        bar.update(5, loss=1.0)
        bar.write("resumed")
    assert quiet.getvalue() == messages.getvalue() == "" and bar.mode == "off"
    monkeypatch.setenv(ENV_EVERY, "soon")
    with pytest.raises(ValueError, match="CHORUS_PROGRESS_EVERY: expected seconds >= 0, got "
                                         "'soon'"):
        line_interval()
    assert [format_duration(s) for s in (42, 660, 3900)] == ["42s", "11m", "1h05m"]


def test_progress_draws_a_tqdm_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    with progress(4, "train", unit="step", stream=err, message_stream=io.StringIO()) as bar:
        assert bar.mode == "bar"
        bar.update(2, loss=1.5)
    assert "train:  50%" in err.getvalue() and "2/4" in err.getvalue()
    assert "loss=1.5" in err.getvalue()


def test_peak_flops_by_device_kind_and_mfu():
    assert peak_flops_per_device("TPU v5p") == 459e12
    assert peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_per_device("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_per_device("cpu") is None
    assert peak_flops_per_device("cpu", override=2e9) == 2e9
    assert mfu(1e12, 0.5, 4, 1e12) == pytest.approx(0.5)
    assert mfu(None, 0.5, 4, 1e12) is None and mfu(1e12, 0.5, 4, None) is None


# ----------------------------------------------------------------------------- configs


def test_config_mismatches_name_fields_and_ignore_runtime_settings():
    saved = load_config("cpu-tiny").to_dict()
    same_math = load_config("cpu-tiny", ["train.steps=999", "mesh.data=2", "mesh.fsdp=-1",
                                         "train.log_every=1", "train.process_id=0",
                                         "train.num_processes=1"])
    assert config_mismatches(saved, same_math.to_dict()) == []
    changed = load_config("cpu-tiny", ["model.d_model=64", "optim.learning_rate=0.1",
                                       "experiment.data_dir=/x"])
    lines = config_mismatches(saved, changed.to_dict())
    assert lines == ["experiment.data_dir: saved '<absent>', now '/x'",
                     "model.d_model: saved 128, now 64",
                     "optim.learning_rate: saved 0.003, now 0.1"]
    with pytest.raises(IncompatibleConfigError, match=r"(?s)ckpt/5.*model\.d_model"):
        check_resumable(saved, changed, "ckpt/5")


@pytest.mark.parametrize("override, field", [
    ("train.prefetch_batches=-1", "train.prefetch_batches"),
    ("train.process_id=-2", "train.process_id"),
    ("train.coordinator_address=nohostport", "train.coordinator_address"),
    ("train.peak_flops_per_device=-1", "train.peak_flops_per_device"),
])
def test_trainer_config_fields_are_validated(override, field):
    with pytest.raises(ConfigError, match=field):
        load_config("cpu-tiny", [override])
    with pytest.raises(ConfigError, match="train.process_id: expected a number < "):
        load_config("cpu-tiny", ["train.num_processes=2", "train.process_id=2"])


def test_distributed_settings_come_from_config_then_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    cfg = load_config("cpu-tiny").train
    assert distributed.distributed_settings(cfg) is None
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed.distributed_settings(cfg) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    cfg = load_config("cpu-tiny", ["train.coordinator_address=h:9", "train.num_processes=2",
                                   "train.process_id=1"]).train
    assert distributed.distributed_settings(cfg) == {
        "coordinator_address": "h:9", "num_processes": 2, "process_id": 1}
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID: expected an integer"):
        distributed.distributed_settings(load_config("cpu-tiny").train)


# ----------------------------------------------------------------------------- experiments


def test_experiment_loading_errors_are_clear():
    cfg = load_config("cpu-tiny")
    with pytest.raises(ExperimentError, match="no module 'experiments.no_such_mode"):
        load_experiment("no_such_mode", cfg)
    with pytest.raises(ExperimentError, match="has no build"):
        load_experiment("json", cfg)  # importable, but not an experiment
    with pytest.raises(ExperimentError, match="loss_fn: expected a callable"):
        Experiment(name="x", init_fn=lambda r: {}, loss_fn=None, train_iterator=lambda *a: 0)
    with pytest.raises(ExperimentError, match=r"keys \['ref'\] are not in the params"):
        split_params({"policy": 1}, ("ref",))
    assert split_params({"policy": 1, "ref": 2}, ("ref",)) == ({"policy": 1}, {"ref": 2})


def test_train_command_reports_bad_experiments_and_configs(tmp_path, capsys):
    from chorus.training.cli import train_main

    assert train_main(["--experiment", "no_such_mode", "--workdir", str(tmp_path)]) == 2
    assert "no module 'experiments.no_such_mode'" in capsys.readouterr().err
    assert train_main(["--experiment", "asr", "--workdir", str(tmp_path), "--set",
                       "train.prefetch_batches=-3"]) == 2
    assert "train.prefetch_batches: expected a number >= 0" in capsys.readouterr().err
    assert train_main(["--experiment", "asr", "--workdir", str(tmp_path)]) == 2
    assert "experiment.data_dir: expected the dataset directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- optimizer, step


def test_decay_mask_skips_norms_and_biases():
    params = {"dense": {"kernel": 1, "bias": 2}, "norm": {"scale": 3}}
    assert decay_mask(params) == {"dense": {"kernel": True, "bias": False},
                                  "norm": {"scale": False}}


def test_schedule_warms_up_then_decays_per_optimizer_update():
    cfg = OptimizerConfig(learning_rate=1.0, warmup_steps=2, end_lr_ratio=0.1)
    lr = learning_rate_schedule(cfg, total_steps=10)
    assert [float(lr(s)) for s in (0, 1, 2)] == pytest.approx([0.0, 0.5, 1.0])
    assert float(lr(10)) == pytest.approx(0.1)
    # with 2-step accumulation, 10 train steps are 5 updates: the decay ends at update 5
    acc = learning_rate_schedule(OptimizerConfig(learning_rate=1.0, warmup_steps=2,
                                                 end_lr_ratio=0.1, grad_accum_steps=2), 10)
    assert float(acc(5)) == pytest.approx(0.1)


def _quadratic_loss(params, batch, rng):
    del rng
    pred = batch["x"] @ params["w"]
    loss = jnp.mean((pred - batch["y"]) ** 2) * batch["scale"][0]
    return loss, {"pred_mean": pred.mean()}


def _quadratic_batch(scale=1.0):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(4, 3)).astype(np.float32),
            "y": rng.normal(size=(4, 2)).astype(np.float32),
            "scale": np.full((4,), scale, np.float32)}


def test_guard_skips_and_counts_nonfinite_updates():
    tx = make_optimizer(OptimizerConfig(learning_rate=0.1, warmup_steps=0), 10)
    step = jax.jit(make_train_step(_quadratic_loss, tx))
    state = TrainState.create({"w": jnp.ones((3, 2))}, tx)
    rng = jax.random.key_data(jax.random.key(0))
    state, m = step(state, _quadratic_batch(), rng)
    assert float(m["skipped"]) == 0 and int(state.nonfinite_total) == 0
    before = jax.tree.map(np.asarray, state)
    for i in range(2):
        state, m = step(state, _quadratic_batch(np.inf), rng)
        assert float(m["skipped"]) == 1 and int(m["nonfinite_in_a_row"]) == i + 1
    np.testing.assert_array_equal(state.params["w"], before.params["w"])
    for a, b in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(before.opt_state),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    state, m = step(state, _quadratic_batch(), rng)
    assert int(state.nonfinite_in_a_row) == 0 and int(state.nonfinite_total) == 2
    assert int(state.step) == 4
    assert not np.array_equal(state.params["w"], before.params["w"])


def test_frozen_params_get_no_gradients_or_optimizer_state():
    def loss(params, batch, rng):
        base, _ = _quadratic_loss({"w": params["policy"]}, batch, rng)
        return base + jnp.sum((params["policy"] - params["reference"]) ** 2), {}

    tx = make_optimizer(OptimizerConfig(learning_rate=0.1, warmup_steps=0), 10)
    ref = jnp.full((3, 2), 0.5)
    state = TrainState.create({"policy": jnp.ones((3, 2))}, tx, {"reference": ref})
    assert all("reference" not in jax.tree_util.keystr(p)
               for p, _ in jax.tree_util.tree_leaves_with_path(state.opt_state))
    step = jax.jit(make_train_step(loss, tx))
    for _ in range(3):
        state, _ = step(state, _quadratic_batch(), jax.random.key_data(jax.random.key(0)))
    np.testing.assert_array_equal(state.frozen["reference"], ref)
    assert not np.array_equal(state.params["policy"], jnp.ones((3, 2)))


def test_precision_policy_bf16_compute_keeps_fp32_master_weights():
    dense = nn.Dense(2, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    params = dense.init(jax.random.key(0), jnp.ones((1, 3)))["params"]

    def loss(p, batch, rng):
        out = dense.apply({"params": p}, batch["x"])
        assert out.dtype == jnp.bfloat16  # the compute really is bf16
        return jnp.mean((out.astype(jnp.float32) - batch["y"]) ** 2), {}

    tx = make_optimizer(OptimizerConfig(learning_rate=1e-3, warmup_steps=0), 10)
    state = TrainState.create(params, tx)
    state, m = jax.jit(make_train_step(loss, tx))(state, _quadratic_batch(),
                                                   jax.random.key_data(jax.random.key(0)))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state[1][0].mu)} == {
        jnp.dtype(jnp.float32)}
    # an update of 1e-3 survives in fp32 master weights (it would round away in bf16)
    delta = np.abs(np.asarray(state.params["kernel"]) - np.asarray(params["kernel"]))
    assert 0 < delta.max() < 2e-3
    assert np.isfinite(float(m["loss"]))


def test_accumulation_averages_k_batches_into_one_update():
    cfg = OptimizerConfig(learning_rate=0.1, warmup_steps=0, grad_accum_steps=2, clip_norm=0,
                          weight_decay=0.0)
    tx = make_optimizer(cfg, 10)
    step = jax.jit(make_train_step(_quadratic_loss, tx))
    w0 = {"w": jnp.ones((3, 2))}
    state = TrainState.create(w0, tx)
    rng = jax.random.key_data(jax.random.key(0))
    state, _ = step(state, _quadratic_batch(), rng)
    np.testing.assert_array_equal(state.params["w"], w0["w"])  # first micro-step: no update
    state, _ = step(state, _quadratic_batch(2.0), rng)
    # one Adam update from the mean gradient (grad of scale 1 and scale 2 losses)
    ref_tx = optax.adamw(learning_rate_schedule(cfg, 10), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                         weight_decay=0.0, mask=decay_mask)
    g1 = jax.grad(lambda p: _quadratic_loss(p, _quadratic_batch(), None)[0])(w0)
    g2 = jax.grad(lambda p: _quadratic_loss(p, _quadratic_batch(2.0), None)[0])(w0)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    updates, _ = ref_tx.update(mean, ref_tx.init(w0), w0)
    np.testing.assert_allclose(state.params["w"], optax.apply_updates(w0, updates)["w"],
                               rtol=1e-6)


# ----------------------------------------------------------------------------- data plumbing


def test_synthetic_shards_compose_the_global_batch():
    cfg = load_config("cpu-tiny", TINY)
    whole = SyntheticBatches(cfg, 0, 1, seed=3)
    halves = [SyntheticBatches(cfg, i, 2, seed=3) for i in range(2)]
    for _ in range(2):
        full = next(whole)
        parts = [next(h) for h in halves]
        for key in full:
            np.testing.assert_array_equal(full[key], np.concatenate([p[key] for p in parts]))
    b = full
    assert b["audio_features"].shape == (8, 1, 32, 16)
    # each row: its placeholders match its valid frames (the model's splice contract)
    lay_audio = (b["tokens"] == b["tokens"][0, 1]).sum(1)
    assert np.array_equal(lay_audio, b["audio_mask"].sum((1, 2)) // 8)
    assert np.all(b["loss_mask"].sum(1) >= 3)


def test_prefetcher_attaches_resume_points_and_fingerprints():
    cfg = load_config("cpu-tiny", TINY)
    reference = SyntheticBatches(cfg, seed=1)
    expected = [batch_fingerprint(next(reference)) for _ in range(5)]
    prefetcher = Prefetcher(SyntheticBatches(cfg, seed=1), place=lambda b: b, depth=2)
    got = [prefetcher.next()[0] for _ in range(3)]
    prefetcher.close()
    assert [g.fingerprint for g in got] == expected[:3]
    assert [g.data_state for g in got] == [{"step": 1}, {"step": 2}, {"step": 3}]
    # resuming from the state attached to batch 2 yields batch 3, though more were prefetched
    resumed = SyntheticBatches(cfg, seed=1)
    resumed.set_state(got[1].data_state)
    assert batch_fingerprint(next(resumed)) == expected[2]


def test_prefetcher_surfaces_iterator_errors_and_end_of_data():
    class Broken:
        def __init__(self):
            self.n = 0

        def __next__(self):
            self.n += 1
            if self.n == 2:
                raise OSError("disk gone")
            if self.n == 4:
                raise StopIteration
            return {"x": np.zeros((2, 1))}

        def get_state(self):
            return self.n

        def set_state(self, s):
            self.n = s

    for depth in (0, 2):
        p = Prefetcher(Broken(), place=lambda b: b, depth=depth)
        p.next()
        with pytest.raises(OSError, match="disk gone"):
            p.next()
        p.close()
    p = Prefetcher(Broken(), place=lambda b: b, depth=0)
    with pytest.raises(TypeError, match=r"expected a non-empty dict"):
        Prefetcher(iter([[1, 2]]), place=lambda b: b, depth=0).next()
    p.close()


def test_stop_requests_turn_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequests() as stops:
        assert not stops.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested and stops.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before


def test_gather_json_single_process_is_identity():
    assert distributed.gather_json({"a": [1, 2]}) == [{"a": [1, 2]}]
    assert json.dumps(distributed.gather_json(None)) == "[null]"
