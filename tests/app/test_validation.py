"""Every field of the experiment form is checked as it is typed, with the engine's checks, and
the message stands beside the field (no browser; tests/app/test_browser_forms.py does it in
Chromium). No value is silently restored; training never runs in the server."""

from __future__ import annotations

import pytest

from app import datachecks, validation
from app.state import AppState
from app.views import ExperimentView


@pytest.fixture
def state(run_root):
    s = AppState()
    s.load_choices()
    s.check_now()
    return s


@pytest.mark.parametrize("name, value, field, words", [
    ("epochs", 0, "training.epochs", ["training.epochs=0", ">= 1"]),
    ("epochs", -5, "training.epochs", ["training.epochs=-5"]),
    ("epochs", 1_000_000, "training.epochs", ["training.epochs=1000000", "1 .. 10000"]),
    ("lr", 0.0, "training.lr", ["training.lr=0.0", "0 < lr"]),
    ("lr", 5.0, "training.lr", ["training.lr=5.0", "1e-07 .. 1"]),
    ("batch_size", None, "training.batch_size", ["training.batch_size=None"]),
    ("scale", 40, "data.scale", ["data.scale=40"]),
])
def test_a_bad_number_is_kept_and_refused_beside_its_field(state, name, value, field, words):
    view = ExperimentView(state=state)
    assert not view._train.disabled and view.field_error(field) == ""
    setattr(state, name, value)
    assert getattr(state, name) == value  # the typed value stands: nothing restored in silence
    assert field in state.field_errors
    for word in words:
        assert word in view.field_error(field), view.field_error(field)
    assert view._train.disabled
    assert state.train() is None and state.store.list() == []
    setattr(state, name, AppState.param[name].default)  # fixed: the error goes, Train comes back
    state.check_now()
    assert view.field_error(field) == "" and not view._train.disabled


def test_every_bad_field_is_shown_at_once(state):
    view = ExperimentView(state=state)
    state.epochs, state.lr, state.options.model_filters = 0, 0.0, 0
    assert {"training.epochs", "training.lr", "model.filters"} <= set(state.field_errors)
    assert "model.filters=0" in view.field_error("model.filters")
    assert all(m in state.config_error for m in state.field_errors.values())


def test_a_patch_larger_than_the_domain_is_refused_before_any_job(state):
    """demo_alps is 64 x 128 cells: a 5000-cell patch is named beside the patch field (the data
    check runs in a thread; check_now waits for it)."""
    view = ExperimentView(state=state)
    state.patch_size = 5000
    state.check_now()
    message = view.field_error("data.patch_size")
    assert "data.patch_size=5000" in message and ("64" in message or "domain" in message), message
    assert view._train.disabled and state.train() is None and state.store.list() == []
    state.patch_size = 64  # fits the 64-row domain (and is a multiple of the scale)
    state.check_now()
    assert view.field_error("data.patch_size") == "" and not view._train.disabled


def test_data_checks_run_off_the_event_loop_and_are_shared(state):
    """A new data section is checked in the pool; the form says it is checking, keeps Train
    disabled meanwhile, and takes the result when it comes (another session reuses it)."""
    view = ExperimentView(state=state)
    state.patch_size = 48
    key = datachecks.key_of(state.build_config())
    datachecks.wait_idle()
    assert datachecks.cached(key) is not None
    other = AppState()
    other.load_choices()
    other.patch_size = 48
    assert not other.checking_data  # answered from the shared result, no second check
    assert view is not None


def test_the_inline_launcher_is_never_offered_and_a_file_naming_it_is_switched(state):
    assert "inline" not in state.param.launcher.objects
    assert state.load_yaml(b"name: x\nlaunch: {launcher: inline}\n")
    assert state.launcher == "local"
    assert "inline" in state.message and "switched to 'local'" in state.message
    # Set in code anyway (a notebook): refused beside the launcher field, nothing submitted.
    state.param.launcher.objects = [*state.param.launcher.objects, "inline"]
    state.launcher = "inline"
    assert "not offered here" in state.field_errors["launch.launcher"]
    assert state.train() is None and state.store.list() == []


def test_field_of_reads_the_engines_messages():
    assert validation.field_of("launch.time='soon' is not valid") == "launch.time"
    assert validation.field_of("name='../x' is not valid; use letters") == "name"
    assert validation.field_of("something else") == ""
