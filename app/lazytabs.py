"""Tabs whose views are built the first time they are shown, not when the session starts.

A served session used to build every tab's view at once (the experiment form alone is a few
hundred widgets generated from the configuration); five people opening the dashboard together
then waited for all of it before their first click was answered. :class:`LazyTabs` holds a
factory per tab and an empty column in its place; the open tab's view is built at once, any
other when the user first opens it (Panel's ``Tabs(dynamic=True)`` then renders only the open
tab, so a built but hidden view costs nothing in the browser either).

A built view *replaces* its placeholder in the tabs; it is never put inside it. A view nested
in an extra column broke BokehJS's layout of the maps below it when a link opened the page on
that tab: the map figures were sized 0 x 0 in the browser (blank maps, no hover tooltip),
while the same view as the tab's own child lays out as before lazy tabs.

Example
-------
>>> import panel as pn
>>> tabs = LazyTabs({"A": lambda: pn.pane.Markdown("a"), "B": lambda: pn.pane.Markdown("b")})
>>> tabs.built()
['A']
>>> tabs.tabs.active = 1
>>> tabs.built()
['A', 'B']
>>> tabs.tabs.objects[1].object   # the view itself is the tab's child
'b'
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import panel as pn

log = logging.getLogger(__name__)


class LazyTabs:
    """``pn.Tabs`` whose tab contents are made by factories when first shown.

    Parameters
    ----------
    factories : dict of str to callable
        Tab name -> a function of no arguments returning the tab's view (any Panel object).
    active : int
        The tab open at first (its view is built here).
    on_build : callable, optional
        Called as ``on_build(name, view)`` after a view is built (e.g. to bind it to the URL).
    **params
        Further parameters of :class:`panel.Tabs`.
    """

    def __init__(self, factories: dict[str, Callable[[], Any]], active: int = 0,
                 on_build: Callable[[str, Any], None] | None = None, **params: Any):
        if not factories:
            raise ValueError("LazyTabs needs at least one tab factory; got none")
        names = list(factories)
        if not 0 <= active < len(names):
            raise ValueError(f"active={active} is not a tab index; accepted 0 to {len(names) - 1}")
        self.names = names
        self._factories = dict(factories)
        self._views: dict[str, Any] = {}
        self._lock = threading.RLock()  # tab changes and the session's onload run in threads
        self.on_build = on_build
        params.setdefault("sizing_mode", "stretch_width")
        # The open tab's view goes in at once (never wrapped: see the module's docstring); the
        # others hold an empty placeholder until first opened.
        first = self._build(names[active])
        tabs = [(name, first if i == active else pn.Column(sizing_mode="stretch_width", name=name))
                for i, name in enumerate(names)]
        # dynamic: only the open tab is rendered and sent to the browser.
        self.tabs = pn.Tabs(*tabs, dynamic=True, active=active, **params)
        self._bind(names[active], first)
        self.tabs.param.watch(self._on_active, "active")

    def built(self) -> list[str]:
        """Names of the tabs whose view exists, in tab order."""
        return [n for n in self.names if n in self._views]

    def view(self, name: str):
        """The view of tab ``name``, built now if it was not yet."""
        if name not in self._factories:
            raise KeyError(f"no tab {name!r}; the tabs are {self.names}")
        with self._lock:
            if name in self._views:
                return self._views[name]
            view = self._build(name)
            # The view takes the placeholder's place (same tab title), not a place inside it.
            self.tabs[self.names.index(name)] = (name, view)
        self._bind(name, view)
        return view

    def _build(self, name: str):
        view = self._factories[name]()
        self._views[name] = view
        return view

    def _bind(self, name: str, view) -> None:
        if self.on_build is not None:
            try:
                self.on_build(name, view)
            except Exception:  # a failed binding must not leave the tab empty
                log.exception("binding the %s view failed", name)

    def _on_active(self, event) -> None:
        if 0 <= event.new < len(self.names):
            self.view(self.names[event.new])
