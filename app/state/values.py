"""Plain values the dashboard's state works with: catalogue metadata turned into choices and
dates, selector choices kept valid, launcher choices, run-table labels and run files' tables.

No parameters and no widgets here: :mod:`app.state` and the analysis states use these.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import param

from ..validation import IN_PROCESS_LAUNCHERS


def _as_list(variables: Any) -> list[str]:
    """Variable names from catalogue metadata, which may hold a list or a {name: units} map."""
    if variables is None:
        return []
    if isinstance(variables, str):
        return [variables]
    if isinstance(variables, dict):
        return [str(v) for v in variables]
    return [str(v) if not isinstance(v, dict) else str(v.get("name")) for v in variables]


def _to_date(value: Any) -> _dt.date:
    """A ``datetime.date`` from an ISO string, numpy datetime64, pandas Timestamp or date."""
    import pandas as pd

    return pd.Timestamp(value).date()


def _period_from_metadata(period: Any) -> tuple | None:
    """``(first, last)`` dates from catalogue metadata ``period: [start, end]`` (end None: ongoing)."""
    if not period or len(period) != 2 or not period[0]:
        return None
    try:
        start = _to_date(period[0])
        end = _to_date(period[1]) if period[1] else _dt.date.today()
    except (ValueError, TypeError):
        return None
    return (start, end) if start <= end else None


def set_choices(obj: param.Parameterized, name: str, objects, preferred: Any = None) -> None:
    """Give the selector ``obj.<name>`` new choices, keeping its value when still valid (else
    ``preferred`` when offered, else the first choice, else None)."""
    objects = list(objects)
    current = getattr(obj, name)
    value = current if current in objects else (preferred if preferred in objects else (objects[0] if objects else None))
    obj.param[name].objects = objects
    # Set the value after the choices, and even if it looks unchanged: a widget shown for
    # this parameter may have picked its first new option and written it back here.
    if getattr(obj, name) != value:
        setattr(obj, name, value)



def _units_of(entry: str, variable: str, catalog: str | None) -> str:
    """Units of a catalogue entry's variable from its metadata ('' when not said)."""
    from engine.data import catalog as cat

    try:
        variables = (cat.entry_metadata(entry, catalog) or {}).get("variables")
    except Exception:  # an entry no longer in the catalogue
        return ""
    info = variables.get(variable) if isinstance(variables, dict) else None
    return str(info.get("units", "")) if isinstance(info, dict) else ""


def launcher_choices() -> list[str]:
    """The registered launchers that run training in a separate process (local, SLURM, ...):
    the engine's registry minus :data:`app.validation.IN_PROCESS_LAUNCHERS`, and minus any
    whose registry entry says ``in_process``."""
    from engine import registry

    return [n for n in registry.LAUNCHERS.names()
            if n not in IN_PROCESS_LAUNCHERS and not (registry.LAUNCHERS.info(n) or {}).get("in_process")]


def _epoch_label(status: dict) -> str:
    """'2/3' for a run that finished its second of three epochs (status ``epoch`` is 0-based)."""
    epoch, total = status.get("epoch"), status.get("epochs")
    if epoch is None:
        return f"0/{total}" if total else ""
    return f"{int(epoch) + 1}/{total}" if total else str(int(epoch) + 1)


def _valid_mask(ds):
    if "mask" not in ds:
        return None
    return ds["mask"].astype(bool)


def _handle_run_id(handle) -> str:
    """The run id of a launcher handle (``handle.run`` is an :class:`engine.runs.Run`)."""
    run = getattr(handle, "run", None)
    if run is not None:
        return getattr(run, "run_id", None) or Path(run).name
    run_id = getattr(handle, "run_id", None)
    if run_id:
        return str(run_id)
    return str(handle.status()["run_id"])
