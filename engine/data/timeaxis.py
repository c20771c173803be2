"""Time axes in any CF calendar: standard, proleptic_gregorian, noleap/365_day, all_leap/366_day,
360_day (and julian).

xarray decodes a non-standard calendar into cftime objects (a ``CFTimeIndex``) and a standard one
into ``datetime64`` (a ``pandas.DatetimeIndex``). Everything in finescale that looks at times goes
through this module, so both kinds work the same way and nobody calls ``pd.DatetimeIndex(...)`` on
raw times (which refuses cftime objects).

What it provides:

- :func:`time_index` — the right pandas index for any times; :func:`calendar_of` its CF calendar.
- :func:`check_times` — duplicated or unsorted stamps refused, naming the first offending ones.
- :func:`match_times` — the common steps of two datasets, matched by calendar date at the data's
  frequency (daily data stamped 00:00 and 12:00 pair by day); an empty overlap names both ranges.
- :func:`period_mask` — an inclusive ``(start, end)`` period of dates *in the data's calendar*
  (``"2001-02-30"`` is a valid date of a 360_day calendar); a date without a time of day covers
  the whole day.

Comparisons use integer keys ``YYYYMMDDhhmmss`` built from the calendar fields (year, month, day,
...), which need no conversion between calendars and are exact to the second.

Example
-------
>>> t = xr.date_range("2001-01-01", periods=360, freq="D", calendar="360_day", use_cftime=True)
>>> calendar_of(t), int(period_mask(t, ("2001-02-30", "2001-03-01")).sum())
('360_day', 2)
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from engine.data.errors import DataError

#: Calendars that describe the same days (CF aliases and calendars equal after 1582).
CALENDAR_FAMILIES = {
    "standard": "gregorian",
    "gregorian": "gregorian",
    "proleptic_gregorian": "gregorian",
    "noleap": "noleap",
    "365_day": "noleap",
    "all_leap": "all_leap",
    "366_day": "all_leap",
    "360_day": "360_day",
    "julian": "julian",
}
CALENDARS = tuple(CALENDAR_FAMILIES)

_DAY = 86400.0
_DAYS = {
    "360_day": "days 1-30 in every month",
    "noleap": "the usual days of each month, never February 29",
    "all_leap": "the usual days of each month, February 29 in every year",
    "gregorian": "the days of each month (February 29 in leap years only)",
}
_DATE = re.compile(r"^\s*(\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*$")


def time_index(times) -> pd.Index:
    """The times as a ``pandas.DatetimeIndex`` (datetime64) or an ``xarray.CFTimeIndex`` (cftime).

    Parameters
    ----------
    times : DataArray, Index, sequence of datetime64 / datetime / cftime objects or ISO strings
    """
    if isinstance(times, xr.DataArray):
        times = times.values
    if isinstance(times, (pd.DatetimeIndex, xr.CFTimeIndex)):
        return times
    values = np.atleast_1d(np.asarray(times))
    if values.dtype.kind == "M":
        return pd.DatetimeIndex(values)
    if values.dtype.kind == "O" and values.size and hasattr(values.flat[0], "calendar"):
        return xr.CFTimeIndex(values)
    if values.size == 0:
        return pd.DatetimeIndex([])
    try:
        return pd.DatetimeIndex(values)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read times {values[:3].tolist()}...: {exc}") from None


def calendar_of(times) -> str:
    """The CF calendar of ``times``: the cftime calendar, or ``"proleptic_gregorian"`` for datetime64
    (what xarray reports for numpy times)."""
    index = time_index(times)
    if isinstance(index, xr.CFTimeIndex):
        return str(index.calendar)
    return "proleptic_gregorian"


def calendar_family(calendar: str) -> str:
    """The family of a CF calendar name (``"365_day"`` -> ``"noleap"``); unknown names raise."""
    name = str(calendar).lower()
    if name not in CALENDAR_FAMILIES:
        raise DataError(f"calendar {calendar!r} is not supported; accepted: {', '.join(CALENDARS)}")
    return CALENDAR_FAMILIES[name]


def check_calendars(a, b, name_a: str, name_b: str) -> None:
    """Refuse two time axes whose calendars count different days (e.g. 360_day vs standard)."""
    ca, cb = calendar_of(a), calendar_of(b)
    if calendar_family(ca) != calendar_family(cb):
        raise DataError(
            f"{name_a} uses the {ca!r} calendar and {name_b} the {cb!r} calendar; their days cannot be "
            f"paired one to one. Accepted: the same calendar on both sides (or standard, gregorian and "
            f"proleptic_gregorian together; noleap and 365_day; all_leap and 366_day)"
        )


def keys(times) -> np.ndarray:
    """Integer keys ``YYYYMMDDhhmmss`` (int64) of ``times``, comparable across calendars."""
    index = time_index(times)
    if len(index) == 0:
        return np.zeros(0, dtype=np.int64)
    f = [np.asarray(getattr(index, a), dtype=np.int64) for a in ("year", "month", "day", "hour", "minute", "second")]
    return ((((f[0] * 100 + f[1]) * 100 + f[2]) * 100 + f[3]) * 100 + f[4]) * 100 + f[5]


def stamp(t) -> str:
    """``t`` as ``YYYY-MM-DD hh:mm:ss`` whatever its type."""
    if isinstance(t, np.datetime64):
        t = pd.Timestamp(t)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def fmt_times(times) -> str:
    """``first .. last (N steps, calendar)`` for messages."""
    index = time_index(times)
    if len(index) == 0:
        return "no time steps"
    return f"{stamp(index[0])} .. {stamp(index[-1])} ({len(index)} steps, {calendar_of(index)} calendar)"


def step_seconds(times) -> float:
    """The typical step (median difference) of ``times`` in seconds; NaN for fewer than 2 steps."""
    index = time_index(times)
    if len(index) < 2:
        return float("nan")
    if isinstance(index, xr.CFTimeIndex):
        diffs = np.array([d.total_seconds() for d in np.diff(index.values)])
    else:
        diffs = np.diff(index.values).astype("timedelta64[s]").astype(np.float64)
    return float(np.median(diffs))


def check_times(times, name: str) -> None:
    """Refuse duplicated or unsorted time stamps, naming the first offending ones.

    Raises
    ------
    DataError
    """
    index = time_index(times)
    if len(index) < 2:
        return
    k = keys(index)
    d = np.diff(k)
    dup = np.flatnonzero(d == 0)
    back = np.flatnonzero(d < 0)
    problems = []
    if dup.size:
        i = int(dup[0])
        problems.append(f"{int((d == 0).sum())} duplicated time stamp(s), the first {stamp(index[i])} at positions "
                        f"{i} and {i + 1}")
    if back.size:
        i = int(back[0])
        problems.append(f"times not in increasing order: {stamp(index[i])} (position {i}) is followed by "
                        f"{stamp(index[i + 1])}")
    if problems:
        raise DataError(f"{name} has {'; and '.join(problems)}. Accepted: strictly increasing times "
                        "(drop the duplicates, e.g. ds.drop_duplicates('time'), and sort with ds.sortby('time'))")


def resolution(times) -> str:
    """The calendar resolution pairing uses for ``times``: ``"month"`` (steps of 28 days or more: monthly
    means stamped on the 1st, 15th or 16th), ``"day"`` (about a day or more), else ``"stamp"``."""
    step = step_seconds(times)
    if not np.isfinite(step):  # a single step: by day
        return "day"
    if step >= 27.5 * _DAY:
        return "month"
    return "day" if step >= 0.99 * _DAY else "stamp"


def match_keys(times, level: str) -> np.ndarray:
    """The keys :func:`match_times` compares at ``level`` (``"month"``, ``"day"`` or ``"stamp"``)."""
    k = keys(times)
    return {"month": k // 100_000_000, "day": k // 1_000_000, "stamp": k}[level]


def match_times(target_times, input_times, target_name: str, input_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the common steps of two time axes, in the target's order.

    Steps are matched by calendar date at the data's frequency (the finer of the two): daily data by
    day (00:00 and 12:00 stamps of the same day pair), monthly data by month (stamps on the 1st and
    the 16th pair); sub-daily data need equal stamps (to the second). Calendars must be of one family.

    Returns
    -------
    (target_positions, input_positions) : int arrays of equal length

    Raises
    ------
    DataError
        different calendars, or no common step (the message names both ranges).
    """
    check_calendars(target_times, input_times, target_name, input_name)
    order = ("stamp", "day", "month")
    levels = (resolution(target_times), resolution(input_times))
    level = min(levels, key=order.index)  # both must be at least this coarse
    kt, ki = match_keys(target_times, level), match_keys(input_times, level)
    common, it, ii = np.intersect1d(kt, ki, assume_unique=False, return_indices=True)
    if common.size == 0:
        how = {"month": "calendar month", "day": "calendar date", "stamp": "time stamp"}[level]
        raise DataError(
            f"{target_name} and {input_name} have no common time steps: {target_name} has {fmt_times(target_times)}, "
            f"{input_name} has {fmt_times(input_times)} (matched by {how}). Accepted: periods that overlap"
        )
    order_t = np.argsort(it)
    return it[order_t], ii[order_t]


def _date_key(text: str, calendar: str, end: bool, what: str) -> int:
    match = _DATE.match(str(text))
    if not match:
        raise DataError(f"{what}: {text!r} is not a date; expected ISO dates like '2001-01-31' or '2001-01-31T06:00'")
    y, mo, d = (int(match.group(i)) for i in (1, 2, 3))
    has_time = match.group(4) is not None
    h, mi, s = (int(match.group(i) or 0) for i in (4, 5, 6))
    import cftime

    try:
        cftime.datetime(y, mo, d, h, mi, s, calendar=calendar)
    except ValueError:
        days = _DAYS.get(calendar_family(calendar), "the days of each month")
        raise DataError(f"{what}: {text!r} is not a date of the data's {calendar!r} calendar; accepted: {days}") from None
    if end and not has_time:
        h, mi, s = 23, 59, 59  # a date covers its whole day
    return ((((y * 100 + mo) * 100 + d) * 100 + h) * 100 + mi) * 100 + s


def period_keys(period: Sequence[str], calendar: str = "standard", name: str = "period") -> tuple[int, int]:
    """Inclusive ``(start, end)`` keys of a period of ISO dates in ``calendar``; checks the dates."""
    if isinstance(period, str) or len(period) != 2:
        raise DataError(f"{name} must be (start, end) as ISO dates, got {period!r}")
    start = _date_key(period[0], calendar, False, f"{name} start")
    end = _date_key(period[1], calendar, True, f"{name} end")
    if end < start:
        raise DataError(f"{name} {tuple(period)!r} ends before it starts")
    return start, end


def period_mask(times, period: Sequence[str], name: str = "period", allow_empty: bool = False) -> np.ndarray:
    """Boolean (T,) mask of ``times`` inside the inclusive ``period`` (dates in the data's calendar).

    Raises
    ------
    DataError
        a date that does not exist in the calendar, or (unless ``allow_empty``) no step in the period.
    """
    index = time_index(times)
    start, end = period_keys(period, calendar_of(index), name)
    k = keys(index)
    sel = (k >= start) & (k <= end)
    if not sel.any() and not allow_empty:
        raise DataError(f"{name} {tuple(period)!r} contains no time step of the data, which cover {fmt_times(index)}")
    return sel


def months(times) -> np.ndarray:
    """Calendar month (1..12) of each time step."""
    return np.asarray(time_index(times).month, dtype=np.int64)
