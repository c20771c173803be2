"""One at a time: for a view's watcher that copies the session state into its widgets.

Panel runs callbacks in a thread pool (``pn.config.nthreads``, :mod:`app.main`), so two changes of
the state can run such a watcher in two threads at once. Unserialised, the older one can read the
state, be overtaken, and write last: a runs table left at "running" after the run completed, a
Train button enabled beside an error. :func:`one_at_a_time` runs the watcher under a lock of its
own object, and the watcher reads the state inside it, so the last write is always made from the
newest state.
"""

from __future__ import annotations

import functools
import threading

_GUARD = threading.Lock()


def one_at_a_time(method):
    """Decorate a method so that calls on one object run one after another (re-entrant: a write
    that calls the method again in the same thread goes on)."""
    name = f"_one_at_a_time_{method.__name__}"

    @functools.wraps(method)
    def serialised(self, *args, **kwargs):
        lock = self.__dict__.get(name)
        if lock is None:
            with _GUARD:
                lock = self.__dict__.setdefault(name, threading.RLock())
        with lock:
            return method(self, *args, **kwargs)

    return serialised
