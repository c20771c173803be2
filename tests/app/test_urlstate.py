"""The view in the URL (no browser; tests/app/test_browser_work.py round-trips it in Chromium),
and the finish/failure hook the served app turns into notifications."""

from __future__ import annotations

import panel as pn

from app.analysis import CompareState
from app.state import AppState
from app.urlstate import UrlState

from .conftest import make_run


def test_url_values_reach_the_state_and_back(run_root):
    a, b = make_run(run_root, name="a"), make_run(run_root, name="b")
    state = AppState()
    state.load_choices()
    state.poll()
    tabs = pn.Tabs(("Data", "d"), ("Runs", "r"), ("Compare", "c"))
    url = UrlState(tabs=["Data", "Runs", "Compare"], tab="Runs", run=a.run_id, time="2003-07-03",
                   region="44,46,8,10", runs=f"{a.run_id},{b.run_id}")
    url.bind(state, tabs)
    assert tabs.active == 1 and state.selected_run == a.run_id
    assert state.selected_time == "2003-07-03 00:00" and state.region == (44.0, 46.0, 8.0, 10.0)
    cmp = CompareState(app=state)
    url.bind_compare(cmp)
    assert cmp.runs == [a.run_id, b.run_id]
    # And back: the state's changes land in the URL's values.
    state.selected_run = b.run_id
    state.selected_time = "2003-07-02 00:00"
    tabs.active = 2
    cmp.runs = [b.run_id]
    assert (url.run, url.time, url.tab, url.runs) == (b.run_id, "2003-07-02", "Compare", b.run_id)
    state.region = None
    assert url.region == ""


def test_unknown_values_in_a_link_are_ignored_and_said(run_root):
    state = AppState()
    state.load_choices()
    state.poll()
    url = UrlState(tabs=["Data"], tab="Nope", dataset="../etc/passwd", run="20990101-nope", region="1,2,3")
    url.bind(state, pn.Tabs(("Data", "d")))
    assert state.dataset == "demo_alps" and state.selected_run is None and state.region is None
    for word in ("tab='Nope'", "dataset='../etc/passwd'", "run='20990101-nope'", "region='1,2,3'"):
        assert word in state.message


def test_a_run_that_finishes_or_fails_calls_the_hook_once(run_root, live_job):
    run = make_run(run_root, name="soon-done", state="running", results=False, **live_job)
    other = make_run(run_root, name="soon-failed", state="running", results=False, **live_job)
    state = AppState()
    heard = []
    state.on_run_state = lambda run_id, new: heard.append((run_id, new))
    state.poll()
    assert heard == []
    run.update_status(state="completed", progress=1.0)
    other.update_status(state="failed", error="out of memory")
    state.poll()
    state.poll()
    assert sorted(heard) == sorted([(run.run_id, "completed"), (other.run_id, "failed")])


def test_a_time_moved_while_a_link_is_applied_reaches_the_url(run_root):
    """Panel runs callbacks in a thread pool: the browser's URL (back button: another run) is being
    copied into the state when the user moves the time slider. The move must reach the URL and stay
    in the maps (a CI run saw the URL keep the old time). The copy from the URL is held, by an event,
    inside its write of the run, while the slider's change starts in a second thread."""
    import threading

    a, b = make_run(run_root, name="a"), make_run(run_root, name="b")
    state = AppState()
    state.load_choices()
    state.poll()
    url = UrlState(tabs=["Data", "Runs"], tab="Runs")
    url.bind(state, pn.Tabs(("Data", "d"), ("Runs", "r")))
    state.selected_run = a.run_id  # picked in the runs table
    assert url.time == "2003-07-01" and state.selected_time == "2003-07-01 00:00"

    inside, go = threading.Event(), threading.Event()

    def hold(event):
        if threading.current_thread().name == "from-url":
            inside.set()
            assert go.wait(60), "the test never let the copy from the URL go on"

    state.param.watch(hold, "selected_run")
    older = threading.Thread(target=lambda: setattr(url, "run", b.run_id), name="from-url")
    older.start()
    assert inside.wait(60)
    newer = threading.Thread(target=lambda: setattr(state, "selected_time", "2003-07-02 00:00"), name="slider")
    newer.start()
    newer.join(0.3)  # let it reach the URL's copy while the copy from the URL is held
    go.set()
    older.join(60), newer.join(60)
    assert state.selected_run == b.run_id and url.run == b.run_id
    assert state.selected_time == "2003-07-02 00:00" and url.time == "2003-07-02"


def test_a_time_changed_in_the_link_moves_the_maps_and_keeps_the_run(run_root):
    make_run(run_root, name="a")
    state = AppState()
    state.load_choices()
    state.poll()
    run = state.runs[0]["run_id"]
    url = UrlState(tabs=["Runs"], run=run, time="2003-07-02")
    url.bind(state)
    assert state.selected_time == "2003-07-02 00:00"
    url.time = "2003-07-01"
    assert state.selected_time == "2003-07-01 00:00" and url.run == run
