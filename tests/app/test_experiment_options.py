"""Every configuration field in the form (generated from engine.config), inline validation of
the new fields, YAML save and load."""

from __future__ import annotations

import dataclasses

import pytest

from app.schema import OWN_FIELDS, ExperimentOptions, option_fields
from app.state import MAX_CONFIG_BYTES, AppState
from app.views import ExperimentView


@pytest.fixture
def state(run_root):
    s = AppState()
    s.load_choices()
    s.check_now()  # the data checks (they open the dataset) done before the test
    return s


def test_every_configuration_field_is_in_the_form():
    from engine import config

    fields = {(section, f.name) for section, cls in config.SECTIONS.items() for f in dataclasses.fields(cls)}
    generated = {(section, f.name) for section, f in option_fields()}
    assert generated | OWN_FIELDS == fields
    assert not generated & OWN_FIELDS
    options = ExperimentOptions()
    for section, f in option_fields():
        assert f"{section}_{f.name}" in options.param


def test_choices_come_from_the_engine(state):
    from engine import config, registry
    from engine.data.static import STATIC_FIELDS

    o = state.options
    assert o.param.training_learning.objects == list(config.LEARNING)
    assert o.param.training_precision.objects == list(config.PRECISIONS)
    assert o.param.data_downscaling.objects == list(config.DOWNSCALING)
    assert o.param.data_static.objects == list(STATIC_FIELDS)
    assert o.param.data_normalisation.objects == registry.NORMALISATIONS.names()
    assert "demo_alps_gcm" in o.param.data_lowres.objects
    assert o.param.data_predictors.objects == ["pr"]  # the dataset's other variable
    o.data_downscaling, o.data_lowres = "mos", "demo_alps_gcm"
    assert {"uas", "vas"} <= set(o.param.data_predictors.objects)


def test_defaults_equal_the_engines(state):
    from engine.config import ExperimentConfig

    cfg, default = state.build_config(), ExperimentConfig()
    assert cfg.model.filters == default.model.filters and cfg.training.precision == default.training.precision
    assert cfg.data.static == default.data.static and cfg.inference == default.inference


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"model_filters": 0}, ["model.filters=0"]),
        ({"model_dropout": 1.5}, ["model.dropout=1.5"]),
        ({"model_mc_dropout": True, "model_dropout": 0.0}, ["mc_dropout", "dropout > 0"]),
        ({"data_downscaling": "mos"}, ["data.lowres is required"]),
        ({"data_time_window": 3}, ["data.time_window=3", "spatiotemporal"]),
        ({"model_sampling_steps": 2000}, ["sampling_steps=2000"]),
        ({"inference_members": 0}, ["inference.members=0"]),
        ({"inference_tile": 30}, ["inference.tile=30"]),
    ],
)
def test_bad_options_show_the_engines_message(state, changes, words):
    view = ExperimentView(state=state)
    for key, value in changes.items():
        setattr(state.options, key, value)
    for word in words:
        assert word in state.config_error, state.config_error
    assert view._error.visible and view._train.disabled
    assert state.train() is None and state.store.list() == []


def test_yaml_round_trip(state):
    o = state.options
    state.run_name, state.epochs, state.launcher = "saved", 9, "local"
    o.model_filters, o.training_learning, o.data_static, o.inference_members = 16, "gan", ["elevation"], 1
    state.region, state.use_region = (44.0, 46.0, 8.0, 10.0), True
    text = state.config_yaml()
    other = AppState()
    other.load_choices()
    assert other.load_yaml(text.encode())
    assert "Loaded" in other.message
    assert other.build_config() == state.build_config()
    assert other.options.model_filters == 16 and other.region == (44.0, 46.0, 8.0, 10.0) and other.use_region


def test_a_loaded_file_with_bad_values_is_shown_and_refused_at_train(state):
    assert state.load_yaml(b"name: x\nmodel: {backbone: nope}\n")
    assert "model.backbone='nope'" in state.config_error and "accepted" in state.config_error
    assert state.train() is None


@pytest.mark.parametrize("data, words", [
    (b"!!python/object/apply:os.system ['touch /tmp/pwned']\n", "not valid YAML"),
    (b"model: {nope: 1}\n", "unknown field"),
    (b"- a list\n", "must be a mapping"),
    (b"\xff\xfe binary", "not UTF-8"),
    (b"a" * (MAX_CONFIG_BYTES + 1), "at most"),
])
def test_bad_files_are_refused_and_leave_the_form(state, data, words, tmp_path):
    before = state.build_config()
    assert not state.load_yaml(data)
    assert words in state.message
    assert state.build_config() == before


def test_view_has_a_card_per_section_and_save_load_widgets(state):
    view = ExperimentView(state=state)
    assert set(view._sections) == {"data", "model", "training", "inference", "launch"}
    assert view.__panel__().get_root() is not None
    assert view._yaml_file().read() == state.config_yaml()
    view._upload.value = b"name: uploaded\ntraining: {epochs: 2}\n"
    assert state.run_name == "uploaded" and state.epochs == 2
