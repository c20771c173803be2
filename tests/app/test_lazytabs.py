"""app.lazytabs: a tab's view is built when the tab is first shown, once, and bound once."""

from __future__ import annotations

import panel as pn
import pytest

from app.lazytabs import LazyTabs


def _factories(calls):
    def make(name):
        def build():
            calls.append(name)
            return pn.pane.Markdown(f"view {name}")
        return build
    return {name: make(name) for name in ("Data", "Runs", "Explain")}


def test_only_the_open_tab_is_built_then_each_once_when_opened():
    calls, bound = [], []
    lazy = LazyTabs(_factories(calls), on_build=lambda name, view: bound.append(name))
    assert calls == ["Data"] and lazy.built() == ["Data"]
    assert [holder.objects for holder in lazy.tabs.objects[1:]] == [[], []]  # placeholders, nothing built
    lazy.tabs.active = 2
    assert calls == ["Data", "Explain"]
    # The view itself replaces the placeholder (never nested in it: a nested view's maps were laid
    # out 0 x 0 by BokehJS when a link opened on its tab), under the same tab title.
    assert lazy.tabs.objects[2].object == "view Explain"
    assert lazy.tabs._names == ["Data", "Runs", "Explain"]
    lazy.tabs.active = 0
    lazy.tabs.active = 2
    assert calls == ["Data", "Explain"]  # built once
    assert bound == ["Data", "Explain"]
    assert lazy.view("Runs").object == "view Runs" and lazy.built() == ["Data", "Runs", "Explain"]


def test_a_link_to_another_tab_builds_that_tab_only():
    calls = []
    lazy = LazyTabs(_factories(calls), active=1)
    assert calls == ["Runs"] and lazy.tabs.active == 1
    assert isinstance(lazy.tabs.objects[1], pn.pane.Markdown)  # the view is the open tab's own child


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="active=3 is not a tab index; accepted 0 to 2"):
        LazyTabs(_factories([]), active=3)
    with pytest.raises(ValueError, match="at least one"):
        LazyTabs({})
    with pytest.raises(KeyError, match="no tab 'Nope'"):
        LazyTabs(_factories([])).view("Nope")


def test_a_failing_binding_still_shows_the_view():
    lazy = LazyTabs(_factories([]), on_build=lambda name, view: 1 / 0)
    lazy.tabs.active = 1
    assert lazy.tabs.objects[1].object == "view Runs"
