"""`chorus info` and `chorus compile` (AOT for a real TPU topology through libtpu)."""

import json

import pytest

from chorus.cli import main
from chorus.commands.compile import compile_for_topology
from chorus.commands.info import info
from chorus.config import load_config


def test_info_counts_add_up_and_shard_per_device():
    cfg = load_config("cpu-tiny")
    one = info(cfg, num_devices=1)
    p = one["parameters"]
    assert p["total"] == p["embeddings"] + p["output_head"] + p["audio_encoder"] + p["decoder"]
    assert one["flops_per_token"]["train"] == pytest.approx(3 * one["flops_per_token"]["forward"])
    sharded = info(load_config("cpu-tiny", ["mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"]),
                   num_devices=8)
    # Sharding over 8 devices cuts per-device bytes, though norms etc. stay replicated.
    ratio = (one["bytes_per_device"]["params"] / sharded["bytes_per_device"]["params"])
    assert 4 < ratio <= 8


def test_info_reports_the_platform_and_devices_jax_sees():
    runtime = info(load_config("cpu-tiny"))["runtime"]
    # tests/conftest.py gives this process 8 CPU devices; nothing in chorus chose them.
    assert runtime["platform"] == "cpu" and runtime["device_count"] == 8
    assert runtime["device_kinds"] == {"cpu": 8} and len(runtime["devices"]) == 8


def test_info_seven_b_is_seven_b_class():
    out = info(load_config("tpu-v5p-64-7b"))
    assert 7.0e9 < out["parameters"]["decoder"] + out["parameters"]["embeddings"] < 8.0e9
    assert out["mesh"] == {"data": 1, "fsdp": 16, "tensor": 4}


def test_info_cli_prints_json(capsys):
    assert main(["info", "--preset", "cpu-tiny", "--set", "model.num_layers=2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "cpu-tiny" and out["parameters"]["total"] > 0


def test_compile_cpu_tiny_for_v5e_topology():
    result = compile_for_topology(load_config("cpu-tiny", ["model.num_layers=2"]), "v5e:2x2")
    assert result["chips"] == 4 and result["fits"]
    assert result["per_chip"]["argument_bytes"] > 0
    assert result["xla_flops_per_chip_per_step"] > 0


def test_compile_reports_biggest_buffers_when_it_does_not_fit():
    cfg = load_config("cpu-tiny", ["model.num_layers=1", "model.d_model=4096",
                                   "model.mlp_dim=65536", "train.batch_size=64",
                                   "train.seq_len=2048"])
    result = compile_for_topology(cfg, "v5e:2x2")
    assert not result["fits"]
    assert "does not fit" in result["message"]
    assert result["largest_buffers"] and result["largest_buffers"][0]["gib"] > 0.5


def test_compile_rejects_bad_topology():
    with pytest.raises(ValueError, match="--topology: expected GEN"):
        compile_for_topology(load_config("cpu-tiny"), "v9:2x2")
