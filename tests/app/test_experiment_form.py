"""The data and experiment forms: choices from the engine, validation shown inline (no browser)."""

from __future__ import annotations

import datetime as dt

import pytest

from app.state import DEMO_TRAINING, AppState
from app.views import DataView, ExperimentView


@pytest.fixture
def state(run_root):
    s = AppState()
    s.load_choices()
    s.check_now()  # the data checks (they open the dataset) done before the test
    return s


def test_choices_come_from_the_registries_and_the_catalogue(state):
    from engine import registry
    from engine.data import catalog

    assert state.param.backbone.objects == registry.BACKBONES.names()
    assert state.param.loss.objects == registry.LOSSES.names()
    # Only process-based launchers: training never runs inside the web server.
    assert state.param.launcher.objects == [n for n in registry.LAUNCHERS.names() if n != "inline"]
    assert "local" in state.param.launcher.objects
    assert set(state.param.upsampling.objects) <= set(registry.UPSAMPLERS.names())
    assert set(state.param.dataset.objects) <= set(catalog.list_entries())
    assert "demo_alps" in state.param.dataset.objects
    assert state.dataset == "demo_alps" and state.variable == "t2m"
    assert state.launcher == "local"
    assert state.choices_loaded and state.config_error == ""


def test_upsampling_choices_follow_the_backbone(state):
    from engine import registry

    for backbone in registry.BACKBONES.names():
        state.backbone = backbone
        allowed = registry.BACKBONES.info(backbone).get("upsampling") or registry.UPSAMPLERS.names()
        assert state.param.upsampling.objects == [u for u in registry.UPSAMPLERS.names() if u in allowed]
        assert state.upsampling in allowed


def test_dataset_variables_and_periods(state):
    from engine.data import catalog

    for name in state.param.dataset.objects:
        state.dataset = name
        meta = catalog.entry_metadata(name)
        assert state.dataset_info == dict(meta)
        if state.time_range is not None:
            lo, hi = state.time_range
            for period in (state.train_period, state.val_period, state.test_period):
                assert lo <= period[0] <= period[1] <= hi
    state.dataset = "demo_alps"
    assert state.variable in state.param.variable.objects


def test_form_defaults_are_small_and_become_the_configuration(state):
    cfg = state.build_config()
    assert cfg.training.epochs == DEMO_TRAINING["epochs"] == 3
    assert cfg.training.samples_per_epoch == DEMO_TRAINING["samples_per_epoch"] == 256
    assert (cfg.data.highres, cfg.data.variable) == ("demo_alps", "t2m")
    assert (cfg.model.backbone, cfg.model.upsampling, cfg.training.loss) == (state.backbone, state.upsampling, state.loss)
    assert cfg.launch.launcher == "local"
    state.epochs, state.lr, state.run_name = 7, 5e-4, "mine"
    cfg = state.build_config().validate()
    assert (cfg.training.epochs, cfg.training.lr, cfg.name) == (7, 5e-4, "mine")
    assert cfg.data.train_period == tuple(d.isoformat() for d in state.train_period)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"launcher": "slurm", "slurm_time": "soon"}, ["launch.time", "soon"]),
        ({"nodes": 2}, ["launch.nodes=2", "slurm"]),
        ({"patch_size": 30}, ["patch_size=30", "scale=4"]),
        ({"run_name": "../../etc"}, ["name=", "letters"]),
        ({"upsampling": "spc", "scale": 16, "patch_size": 32}, ["scale=16", "accepted scales"]),
        ({"test_period": (dt.date(1990, 1, 1), dt.date(1990, 2, 1))}, ["test_period", "1990-01-01", "covers"]),
    ],
)
def test_invalid_form_shows_the_engines_message_and_disables_train(state, changes, words):
    if changes.get("launcher") == "slurm" and "slurm" not in state.param.launcher.objects:
        pytest.skip("no slurm launcher registered")
    view = ExperimentView(state=state)
    assert not view._train.disabled
    for key, value in changes.items():
        setattr(state, key, value)
    for word in words:
        assert word in state.config_error
    assert view._error.visible and view._error.object == state.config_error
    assert view._train.disabled
    assert state.train() is None  # nothing is submitted
    assert state.store.list() == []


def test_slurm_fields_only_for_the_slurm_launcher(state):
    if "slurm" not in state.param.launcher.objects:
        pytest.skip("no slurm launcher registered")
    view = ExperimentView(state=state)
    assert not view._slurm.visible
    state.launcher = "slurm"
    assert view._slurm.visible
    state.partition, state.slurm_time, state.gpus_per_node, state.cpus_per_task, state.mem_gb = "gpu", "00:30:00", 1, 8, 16
    cfg = state.build_config()
    assert (cfg.launch.partition, cfg.launch.time, cfg.launch.gpus_per_node, cfg.launch.cpus_per_task,
            cfg.launch.mem_gb) == ("gpu", "00:30:00", 1, 8, 16.0)
    state.launcher = "local"
    assert not view._slurm.visible


def test_views_render_without_a_browser(state):
    for view in (DataView(state=state), ExperimentView(state=state)):
        assert view.__panel__().get_root() is not None
    text = DataView(state=state)._description().object
    assert "2001" in text or "→" in text


def test_state_holds_no_widgets():
    import panel as pn

    for name in AppState.param:
        value = getattr(AppState(run_root="/tmp/finescale-unused"), name)
        assert not isinstance(value, pn.viewable.Viewable), name


@pytest.mark.slow
def test_train_with_the_local_launcher_end_to_end(state):
    """Train from the form in a separate process, follow it by polling, then see results."""
    import time

    state.epochs, state.samples_per_epoch, state.batch_size = 1, 32, 8
    run_id = state.train()
    assert run_id, state.message or state.config_error
    assert state.selected_run == run_id
    assert state.runs[0]["launcher"] == "local" and state.runs[0]["job_id"]
    deadline = time.monotonic() + 600
    while state.run_status.get("state") not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, state.log_tail
        time.sleep(1)
        state.poll()
    assert state.run_status["state"] == "completed", state.run_status.get("error")
    state.poll()
    assert len(state.epochs_log) == 1 and not state.loss_history.empty
    assert state.predictions is not None and state.times
    assert state.scores is not None and "bicubic" in set(state.scores["model"])
