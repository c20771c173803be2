"""Train / validation / test splits by date ranges.

A period is an inclusive ``(start, end)`` pair of ISO dates; a date without a time of day covers the
whole day (``("2003-07-01", "2003-12-31")`` includes 2003-12-31 23:00).

Example
-------
>>> import pandas as pd
>>> period_times(pd.date_range("2001-01-01", periods=10), ("2001-01-03", "2001-01-04")).size
2
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from engine.data.errors import DataError

PERIODS = ("train", "val", "test")


def _bounds(period: Sequence[str]) -> tuple[pd.Timestamp, pd.Timestamp]:
    if isinstance(period, str) or len(period) != 2:
        raise DataError(f"a period must be (start, end) as ISO dates, got {period!r}")
    start, end = (pd.Timestamp(p) for p in period)
    if len(str(period[1]).strip()) <= 10:  # a date: include the whole day
        end = end + pd.Timedelta(days=1) - pd.Timedelta(nanoseconds=1)
    if end < start:
        raise DataError(f"period {tuple(period)!r} ends before it starts")
    return start, end


def period_mask(times, period: Sequence[str], name: str = "period") -> np.ndarray:
    """Boolean (T,) mask of ``times`` inside ``period``; raises :class:`DataError` if none is."""
    t = pd.DatetimeIndex(times)
    start, end = _bounds(period)
    sel = np.asarray((t >= start) & (t <= end))
    if not sel.any():
        span = f"{t[0]} .. {t[-1]}" if t.size else "no time steps at all"
        raise DataError(f"{name} {tuple(period)!r} contains no time step of the data, which cover {span}")
    return sel


def period_times(times, period: Sequence[str], name: str = "period") -> pd.DatetimeIndex:
    """The time steps of ``times`` inside ``period``."""
    return pd.DatetimeIndex(times)[period_mask(times, period, name)]


def config_period(data_cfg, which: str) -> tuple[str, str]:
    """``data_cfg.<which>_period`` for ``which`` in ``train``, ``val``, ``test``; a tuple passes through."""
    if not isinstance(which, str):
        return tuple(which)
    if which not in PERIODS:
        raise DataError(f"period {which!r} is not valid; accepted: {', '.join(PERIODS)} or a (start, end) pair")
    return tuple(getattr(data_cfg, f"{which}_period"))


def select_period(obj, period: Sequence[str], name: str = "period"):
    """``obj`` (xarray object with a ``time`` dim) restricted to ``period``."""
    return obj.isel(time=period_mask(obj.time.values, period, name))
