"""Train / validation / test splits by date ranges.

A period is an inclusive ``(start, end)`` pair of ISO dates *in the data's calendar* (``"2001-02-30"``
is a date of a 360_day calendar); a date without a time of day covers the whole day
(``("2003-07-01", "2003-12-31")`` includes 2003-12-31 23:00). Calendars are handled by
:mod:`engine.data.timeaxis`, so cftime times (noleap, 360_day, ...) work like datetime64 ones.

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
from engine.data.timeaxis import period_mask as _period_mask
from engine.data.timeaxis import time_index

PERIODS = ("train", "val", "test")


def period_mask(times, period: Sequence[str], name: str = "period") -> np.ndarray:
    """Boolean (T,) mask of ``times`` inside ``period``; raises :class:`DataError` if none is."""
    return _period_mask(times, period, name)


def period_times(times, period: Sequence[str], name: str = "period") -> pd.Index:
    """The time steps of ``times`` inside ``period`` (a DatetimeIndex, or a CFTimeIndex for cftime times)."""
    return time_index(times)[period_mask(times, period, name)]


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
