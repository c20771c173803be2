"""The experiment configuration: YAML round trip and validation with clear errors."""

import pytest

from engine.config import ConfigError, ExperimentConfig, ModelConfig


def test_default_config_is_valid_and_round_trips(tmp_path):
    cfg = ExperimentConfig().validate()
    assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg
    path = tmp_path / "exp.yaml"
    cfg.to_yaml(path)
    assert ExperimentConfig.from_yaml(path) == cfg
    assert ExperimentConfig.from_yaml(str(path)) == cfg


def test_replace_sections_and_tuples():
    cfg = ExperimentConfig().replace(training={"epochs": 3}, data={"static": ["elevation"]}, name="x1")
    assert cfg.training.epochs == 3 and cfg.data.static == ("elevation",) and cfg.name == "x1"
    assert cfg.training.batch_size == ExperimentConfig().training.batch_size  # others untouched


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"model": {"backbone": "resnett"}}, ["model.backbone='resnett'", "resnet"]),
        ({"model": {"upsampling": "magic"}}, ["model.upsampling='magic'", "spc", "pin"]),
        ({"training": {"loss": "l3"}}, ["training.loss='l3'", "mae"]),
        ({"training": {"precision": "fp8"}}, ["training.precision='fp8'", "bf16-mixed"]),
        ({"data": {"normalisation": "zscore"}}, ["data.normalisation='zscore'", "global"]),
        ({"launch": {"launcher": "kubernetes"}}, ["launch.launcher='kubernetes'", "local", "slurm"]),
        ({"launch": {"time": "1 hour"}}, ["launch.time='1 hour'", "HH:MM:SS"]),
        ({"data": {"patch_size": 30}}, ["patch_size=30", "divisible by data.scale=4"]),
        ({"data": {"downscaling": "mos"}}, ["data.lowres is required"]),
        ({"data": {"static": ["urban"]}}, ["data.static='urban'", "elevation", "land_mask"]),
        ({"data": {"train_period": ["2001-13", "2002"]}}, ["train_period", "ISO dates"]),
        ({"data": {"val_period": ["2003-06-30", "2003-01-01"]}}, ["ends before it starts"]),
        ({"model": {"dropout": 1.5}}, ["model.dropout=1.5", "0 <= dropout < 1"]),
        ({"model": {"mc_dropout": True, "dropout": 0.0}}, ["mc_dropout", "dropout > 0"]),
        ({"training": {"epochs": 0}}, ["training.epochs=0", ">= 1"]),
        ({"data": {"scale": 6, "patch_size": 48}}, ["does not support data.scale=6", "pin"]),
        ({"data": {"bbox": [50, 40, 0, 1]}}, ["data.bbox", "min < max"]),
    ],
)
def test_invalid_values_name_the_value_and_the_accepted_ones(changes, words):
    cfg = ExperimentConfig().replace(**changes)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    for word in words:
        assert word in str(info.value)


def test_pin_accepts_any_integer_scale():
    ExperimentConfig(model=ModelConfig(upsampling="pin")).replace(data={"scale": 6, "patch_size": 60}).validate()


def test_unknown_fields_and_sections_are_refused():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['epoch'\] in section 'training'"):
        ExperimentConfig.from_dict({"training": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown configuration section"):
        ExperimentConfig.from_dict({"optimiser": {}})
    with pytest.raises(ConfigError, match="not valid YAML"):
        ExperimentConfig.from_yaml("training: [1,\n")
    with pytest.raises(ConfigError, match="does not exist"):
        ExperimentConfig.from_yaml("missing.yaml")
