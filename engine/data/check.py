"""Check a configuration against its data before anything runs: every problem at once.

:func:`check_config` opens the entries a configuration names (lazily: only coordinates, attributes
and, for the all-NaN test, the target's first chunk with a value are read) and returns one message
per problem, each naming the bad value and what would be accepted:

- unknown catalogue entries, variables and levels; entries that cannot be opened (truncated files,
  no network);
- units that are missing or cannot be converted, calendars that cannot be paired;
- duplicated or unsorted times, no common time steps, split periods with no step of the paired data
  (or dates that do not exist in the data's calendar);
- grids that do not overlap (the target's true footprint inside the input's and each predictor's);
- a patch larger than the domain, a target that is all NaN.

It is what ``python -m engine check CONFIG.yaml`` prints, what :func:`engine.launch.submit` runs
before a run folder is created (:func:`require_valid`), and what the dashboard shows beside fields.

Example
-------
>>> from engine.config import ExperimentConfig
>>> check_config(ExperimentConfig().replace(data={"variable": "tas"}))        # doctest: +SKIP
["target variable 'tas' is not in entry 'demo_alps'; its variables: pr, t2m"]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xarray as xr

from engine.data.errors import DataError


class DataCheckError(DataError):
    """Raised by :func:`require_valid`; ``problems`` holds every message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the data of this configuration have {len(self.problems)} problem(s):\n{lines}")


class _Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def run(self, fn, *args, **kwargs):
        """``fn(*args)``; a DataError becomes a message (None returned)."""
        try:
            return fn(*args, **kwargs)
        except DataError as exc:
            self.add(str(exc))
        return None

    def add(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)


def _data_cfg(cfg):
    return cfg.data if hasattr(cfg, "data") else cfg


def check_config(cfg) -> list[str]:
    """Every data problem of ``cfg`` (an ExperimentConfig or a DataConfig); [] when none.

    Fast: entries are opened lazily and only metadata and coordinates are read, except for the
    all-NaN test, which reads the target chunk by chunk up to the first valid value.
    """
    from engine.data.catalog import list_entries, open_dataset

    d = _data_cfg(cfg)
    report = _Report()
    known = report.run(list_entries, d.catalog)
    if known is None:
        return report.problems
    accepted = ", ".join(known)

    def entry(field_name: str, name) -> xr.Dataset | None:
        if name not in known:
            report.add(f"data.{field_name}={name!r} is not a catalogue entry; accepted: {accepted}")
            return None
        return report.run(open_dataset, name, d.catalog)

    hr_ds = entry("highres", d.highres)
    lr_ds = None
    if d.downscaling == "mos":
        if not d.lowres:
            report.add("data.downscaling='mos' needs data.lowres, the low-resolution catalogue entry; accepted: "
                       + accepted)
        else:
            lr_ds = entry("lowres", d.lowres)
    sources = {}
    for name in d.predictor_entries:
        ds = entry("predictor_entries", name)
        if ds is not None:
            from engine.data.catalog import entry_metadata

            role = entry_metadata(name, d.catalog).get("role")
            if role not in ("predictor", "lowres"):
                report.add(f"data.predictor_entries names {name!r}, whose role is {role!r}; accepted: entries of "
                           "role 'predictor' (or 'lowres')")
            sources[name] = ds

    target = _check_target(report, d, hr_ds)
    times = None
    if target is not None:
        times = target.time
        if d.downscaling == "mos" and lr_ds is not None:
            times = _check_input(report, d, target, lr_ds, sources)
        elif d.downscaling == "perfectprog":
            _check_channels(report, d, hr_ds, d.highres, sources, target, is_target_entry=True)
    elif lr_ds is not None:
        report.run(_time_ok, lr_ds, d.lowres)
    if target is not None:
        if times is not None:
            for name in d.predictor_entries:
                if name in sources:
                    _check_predictor_entry(report, d, name, sources[name], target, times)
        _check_periods(report, d, times, target.time)
        _check_domain(report, d, target)
        report.run(_check_not_all_nan, target, d.highres)
    return report.problems


def require_valid(cfg) -> None:
    """Raise :class:`DataCheckError` listing every problem :func:`check_config` finds."""
    problems = check_config(cfg)
    if problems:
        raise DataCheckError(problems)


# -- the parts --------------------------------------------------------------------------------------
def _time_ok(ds, name) -> bool:
    from engine.data.timeaxis import check_times

    if "time" not in ds.dims:
        raise DataError(f"entry {name!r} has no time dimension (dims {tuple(ds.dims)}); accepted: data with a "
                        "time axis")
    check_times(ds.time, f"entry {name!r}")
    return True


def _check_target(report: _Report, d, hr_ds) -> xr.DataArray | None:
    """The target variable (bbox cut, units checked), or None after reporting why not."""
    if hr_ds is None:
        return None
    if d.variable not in hr_ds.data_vars:
        report.add(f"target variable {d.variable!r} is not in entry {d.highres!r}; its variables: "
                   f"{', '.join(map(str, hr_ds.data_vars))}")
        return None
    if not report.run(_time_ok, hr_ds, d.highres) and "time" not in hr_ds.dims:
        return None
    if d.bbox is not None:
        from engine.data.pairing import _cut_bbox

        cut = report.run(_cut_bbox, hr_ds, d.bbox, d.highres)
        if cut is None:
            return None
        hr_ds = cut
    from engine.data.predictors import target_view

    view = report.run(target_view, d, hr_ds, d.highres, True)
    return None if view is None else view[d.variable]


def _check_channels(report, d, ds, entry, sources, target, is_target_entry) -> None:
    """Predictors, levels, the name map and units of the input, one predictor at a time so that
    each unknown name is its own message."""
    from engine.data.predictors import input_view, resolve

    order = [entry, *[e for e in d.predictor_entries if e != entry and e in sources]]
    all_sources = {entry: ds, **sources}
    channels = []
    for var in d.levels:
        if var not in d.predictors and not any(str(p).startswith(var) for p in d.predictors):
            report.add(f"data.levels names {var!r}, which is not a predictor; accepted: names in data.predictors "
                       f"({', '.join(d.predictors) or 'none'})")
    for name in d.predictors:
        one = dataclasses.replace(d, predictors=(name,), levels={k: v for k, v in d.levels.items() if k == name})
        found = report.run(resolve, one, all_sources, order)
        channels.extend(found or [])
    report.run(input_view, d, ds, entry, channels, target.attrs.get("units"), True, not is_target_entry)
    if not d.target_as_input and not d.predictors:
        report.add("data.target_as_input=False needs data.predictors (the input would be empty)")


def _check_input(report, d, target, lr_ds, sources):
    """MOS: calendars, common times, footprint, the input's channels. Returns the paired times."""
    from engine.data import grid
    from engine.data.timeaxis import match_times, time_index

    _check_channels(report, d, lr_ds, d.lowres, sources, target, is_target_entry=False)
    if not report.run(_time_ok, lr_ds, d.lowres) and "time" not in lr_ds.dims:
        return None
    pos = report.run(match_times, target.time, lr_ds.time, f"entry {d.highres!r}", f"entry {d.lowres!r}")
    report.run(lambda: grid.check_inside(grid.describe(target), grid.describe(lr_ds),
                                         f"high-resolution box of {d.highres!r}", f"low-resolution box of {d.lowres!r}"))
    if pos is None:
        return None
    return time_index(target.time)[pos[0]]


def _check_predictor_entry(report, d, name, ds, target, times) -> None:
    from engine.data import grid
    from engine.data.timeaxis import fmt_times, match_times

    if not report.run(_time_ok, ds, name) and "time" not in ds.dims:
        return
    pos = report.run(match_times, times, ds.time, "the paired data", f"entry {name!r}")
    if pos is not None and pos[0].size != len(times):
        report.add(f"predictor entry {name!r} covers {fmt_times(ds.time)}; {len(times) - pos[0].size} of the "
                   f"paired step(s) are missing. Accepted: a predictor entry covering {fmt_times(times)}")
    report.run(lambda: grid.check_inside(grid.describe(target), grid.describe(ds), f"target {d.variable!r}",
                                         f"predictor entry {name!r}"))


def _check_periods(report, d, times, target_times) -> None:
    """Dates valid in the data's calendar; a step of the paired ``times`` in each period (when
    there are paired times: no common step at all is reported on its own)."""
    from engine.data.timeaxis import calendar_of, fmt_times, period_keys, period_mask

    for which in ("train", "val", "test"):
        period = tuple(getattr(d, f"{which}_period"))
        try:
            if times is None:
                period_keys(period, calendar_of(target_times), f"data.{which}_period")
            elif not period_mask(times, period, f"data.{which}_period", allow_empty=True).any():
                report.add(f"data.{which}_period={list(period)!r} contains no time step of the paired data, which "
                           f"cover {fmt_times(times)}; accepted: dates inside that range")
        except DataError as exc:
            report.add(str(exc))


def _check_domain(report, d, target) -> None:
    from engine.data import grid

    try:
        dims = grid.spatial_dims(target)
    except DataError as exc:
        report.add(str(exc))
        return
    H, W = (target.sizes[x] for x in dims)
    s = int(d.scale)
    if min(H, W) < s:
        report.add(f"the target grid of {d.highres!r} ({H} x {W}) is smaller than data.scale={s}; accepted: a "
                   f"scale up to {min(H, W)}")
        return
    Hp, Wp = (math.ceil(n / s) * s for n in (H, W))  # pairing pads to multiples of the scale
    # The default patch adapts to a smaller domain (engine.training.loop.fit_patch_size); a patch
    # the user chose that does not fit is refused.
    from engine.config import DataConfig

    if d.patch_size is not None and d.patch_size != DataConfig.patch_size and d.patch_size > min(Hp, Wp):
        top = min(Hp, Wp) - min(Hp, Wp) % s
        report.add(f"data.patch_size={d.patch_size} is larger than the target domain {H} x {W} of "
                   f"{d.highres!r}{' (after data.bbox)' if d.bbox is not None else ''}; accepted: multiples of "
                   f"data.scale={s} up to {top}, or null for the whole domain")


def _check_not_all_nan(target: xr.DataArray, entry: str) -> None:
    """Reads block by block and stops at the first valid value: real data cost one block."""
    from engine.data.timeaxis import fmt_times

    n = target.sizes["time"]
    cells = max(1, int(np.prod([target.sizes[x] for x in target.dims if x != "time"])))
    step = max(1, (16 * 2**20) // (4 * cells))  # ~16 MiB per read
    if target.chunks is not None:
        step = max(step, int(target.chunks[target.get_axis_num("time")][0]))
    for start in range(0, n, step):
        if bool(target.isel(time=slice(start, start + step)).notnull().any().compute()):
            return
    raise DataError(f"target {target.name!r} of entry {entry!r} is all NaN over {fmt_times(target.time)}; "
                    "accepted: a target with values (check data.bbox, the variable and the file)")
