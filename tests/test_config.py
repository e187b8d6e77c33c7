import dataclasses
import json
import typing

import pytest

from chorus.config import (
    PRESETS,
    Config,
    ConfigError,
    MeshConfig,
    ModelConfig,
    apply_overrides,
    get_preset,
    load_config,
    settings_from,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_json(name):
    config = get_preset(name)
    again = Config.from_json(config.to_json())
    assert again == config


def test_override_changes_field_and_revalidates():
    config = load_config("cpu-tiny", ["model.num_layers=2", "optim.learning_rate=1e-4",
                                      "model.sliding_window=64", "experiment.mtp_weight=0.3"])
    assert config.model.num_layers == 2
    assert config.optim.learning_rate == pytest.approx(1e-4)
    assert config.model.sliding_window == 64
    assert config.experiment["mtp_weight"] == 0.3


@pytest.mark.parametrize("override, message", [
    ("model.num_heads=3", "model.num_heads: expected a multiple of model.num_kv_heads=2, got 3"),
    ("model.num_layers=0", "model.num_layers: expected a positive number, got 0"),
    ("model.dtype=float64", "model.dtype: expected one of"),
    ("model.num_layers=two", "model.num_layers: expected an int, got 'two'"),
    ("model.nope=1", "unknown field 'nope'"),
    ("modle.num_layers=1", "no config section 'modle'"),
    ("train.max_mel_frames=100", "train.max_mel_frames: expected a positive multiple of 8"),
    ("optim.b2=1.5", "optim.b2: expected a value in [0, 1)"),
    ("model.num_layers", "expected KEY=VALUE"),
])
def test_bad_values_name_field_expected_and_got(override, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config("cpu-tiny", [override])
    assert message in str(err.value)


def test_mesh_resolution():
    assert MeshConfig(data=-1, fsdp=2, tensor=2).resolve(8) == (2, 2, 2)
    with pytest.raises(ConfigError, match="mesh"):
        MeshConfig(data=3, fsdp=1, tensor=1).resolve(8)
    with pytest.raises(ConfigError, match="at most one axis"):
        MeshConfig(data=-1, fsdp=-1)


def test_configs_are_frozen():
    config = get_preset("cpu-tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.num_layers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.experiment["x"] = 1  # type: ignore[index]


def test_seven_b_preset_shape():
    m = get_preset("tpu-v5p-64-7b").model
    assert (m.d_model, m.num_layers, m.num_heads, m.num_kv_heads) == (3584, 28, 28, 4)
    assert m.text_vocab_size > 150_000 and m.num_audio_codes == 6561


def test_apply_overrides_from_mapping():
    config = apply_overrides(get_preset("cpu-tiny"), {"train.steps": 7})
    assert config.train.steps == 7
    assert json.loads(config.to_json())["train"]["steps"] == 7


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="model.head_dim: expected an even number"):
        ModelConfig(head_dim=31)


@dataclasses.dataclass(frozen=True)
class _Inner:
    design: typing.Literal["parallel", "sequential"] = "sequential"
    num_heads: int = 2


@dataclasses.dataclass(frozen=True)
class _Settings:
    data_dir: str = ""
    weight: float = 1.0
    inner: _Inner | None = _Inner(design="parallel", num_heads=4)
    splits: tuple[str, ...] = ("test",)


def test_settings_from_coerces_merges_over_field_defaults_and_names_bad_keys():
    s = settings_from(_Settings, {"module": "asr", "weight": 2, "inner": {"num_heads": 3},
                                  "splits": ["a", "b"]})
    assert s == _Settings(weight=2.0, inner=_Inner("parallel", 3), splits=("a", "b"))
    assert isinstance(s.weight, float)
    assert settings_from(_Settings, {"inner": None}).inner is None
    with pytest.raises(ConfigError, match=r"experiment: unknown field\(s\) \['wieght'\]"):
        settings_from(_Settings, {"wieght": 1})
    with pytest.raises(ConfigError, match=r"experiment.inner.design: expected one of "
                                          r"\['parallel', 'sequential'\], got 'medusa'"):
        settings_from(_Settings, {"inner": {"design": "medusa"}})
    with pytest.raises(ConfigError, match=r"experiment.weight: expected a number, got 'x'"):
        settings_from(_Settings, {"weight": "x"})


def test_overrides_of_nested_experiment_settings_merge_over_defaults():
    config = apply_overrides(get_preset("cpu-tiny"), ["experiment.inner.num_heads=5"])
    assert settings_from(_Settings, config.experiment).inner == _Inner("parallel", 5)
