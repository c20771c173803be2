"""Watchers that copy the session state into widgets run one at a time (app.serial): Panel runs
callbacks in a thread pool, and an older read of the state written last left the runs table at
"running" after the run completed (a fresh-clone CI run, session 10).

The interleavings are forced with events: the first call is held inside, between reading the
state and writing the widget, while the second is started. A join with a short timeout only
checks that the second call is still held back; it cannot fail on a slow machine, only pass
late on a broken lock."""

from __future__ import annotations

import threading

from app.serial import one_at_a_time
from app.state import AppState
from app.views import RunsView

from .conftest import make_run


class _Recorder:
    def __init__(self):
        self.order: list[str] = []
        self.inside, self.go = threading.Event(), threading.Event()

    @one_at_a_time
    def work(self, name: str, hold: bool = False) -> None:
        self.order.append(f"{name} in")
        if hold:
            self.inside.set()
            assert self.go.wait(60), "the test never let the first call go on"
        self.order.append(f"{name} out")

    @one_at_a_time
    def again(self, depth: int) -> int:
        return depth if depth == 0 else self.again(depth - 1) + 1


def test_calls_on_one_object_run_one_after_another():
    rec = _Recorder()
    first = threading.Thread(target=rec.work, args=("first", True))
    first.start()
    assert rec.inside.wait(60)
    second = threading.Thread(target=rec.work, args=("second",))
    second.start()
    second.join(0.3)
    assert second.is_alive(), "the second call ran while the first was still inside"
    assert rec.order == ["first in"]
    rec.go.set()
    first.join(60), second.join(60)
    assert rec.order == ["first in", "first out", "second in", "second out"]


def test_other_objects_and_the_same_thread_are_not_held_back():
    held, other = _Recorder(), _Recorder()
    first = threading.Thread(target=held.work, args=("held", True))
    first.start()
    assert held.inside.wait(60)
    other.work("other")  # another object's lock: goes on at once (would hang here otherwise)
    assert other.order == ["other in", "other out"]
    held.go.set()
    first.join(60)
    assert held.again(3) == 3  # re-entrant within one thread


def test_an_older_read_of_the_store_never_overwrites_a_newer_one(run_root, live_job):
    run = make_run(run_root, state="running", results=False, **live_job)
    state = AppState()
    state.poll()
    view = RunsView(state=state)
    assert list(view._table.value["state"]) == ["running"]

    # The first sync reads the store ("running") and is held before writing its table.
    read, go = threading.Event(), threading.Event()
    frame_of = RunsView._frame

    def slow_frame(self):
        frame = frame_of(self)
        if threading.current_thread().name == "older":
            read.set()
            assert go.wait(60)
        return frame

    view._frame = slow_frame.__get__(view)
    older = threading.Thread(target=view._on_runs, name="older")
    older.start()
    assert read.wait(60)
    # Meanwhile the run completes and the next poll syncs the table (it waits for the older one).
    run.update_status(state="completed")
    newer = threading.Thread(target=state.poll, name="newer")
    newer.start()
    newer.join(0.3)
    go.set()
    older.join(60), newer.join(60)
    assert [r["state"] for r in state.runs] == ["completed"]
    assert list(view._table.value["state"]) == ["completed"], "the older read was written last"
