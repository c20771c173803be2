"""``training.seeds: N``: one run trains N members (seeds ``seed``, ``seed + 1``, ...) and predicts
them as a deep ensemble (``member`` dimension), scored as an ensemble (CRPS, spread-skill, the
ensemble mean's RMSE).

Each member is a complete run folder under ``<run>/members/seed<k>/`` (its own configuration with
``seeds: 1``, checkpoints, normalisation and events), so everything that reads one run reads a
member, and a killed run resumes at the member and epoch it reached: finished members are kept.
The members' events and progress are mirrored into the parent run with a ``member`` field, so the
dashboard and ``python -m engine train`` follow the whole ensemble in one place.

Example
-------
>>> cfg = ExperimentConfig().replace(training={"seeds": 3})      # doctest: +SKIP
>>> summary = train(RunStore().create(cfg))                       # doctest: +SKIP
>>> predict_run(run).model.dims                                   # doctest: +SKIP
('member', 'time', 'lat', 'lon')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.runs import Run, RunStore, now_iso

MEMBERS_DIR = "members"


class MemberRun(Run):
    """One member's run folder that also reports to its parent run (events with ``member``,
    progress scaled to the whole ensemble)."""

    def __init__(self, path, parent: Run, index: int, count: int):
        super().__init__(path)
        self.parent, self.index, self.count = parent, index, count

    def log_event(self, kind: str, **values: Any) -> None:
        super().log_event(kind, **values)
        self.parent.log_event(kind, **values, member=self.index, members=self.count)

    def update_status(self, **changes: Any) -> dict[str, Any]:
        out = super().update_status(**changes)
        if "progress" in changes:
            # the epoch counters too, so that listings show where the ensemble is
            shared = {k: changes[k] for k in ("epoch", "best_epoch", "best_val_loss", "epochs") if k in changes}
            self.parent.update_status(progress=(self.index + float(changes["progress"] or 0.0)) / self.count,
                                      member=self.index, **shared)
        return out


def member_seed(run: Run, index: int) -> int:
    return int(run.config.training.seed) + index


def member_runs(run: Run, reporting: bool = False) -> list[Run]:
    """The member runs of a ``training.seeds`` > 1 run (created on first call), in seed order."""
    cfg = run.config
    count = int(cfg.training.seeds)
    store = RunStore(run.path / MEMBERS_DIR)
    out = []
    for k in range(count):
        seed = member_seed(run, k)
        path = store.root / f"seed{seed}"
        if not (path / "config.yaml").exists():
            member_cfg = cfg.replace(name=f"{cfg.name}-seed{seed}", training={"seeds": 1, "seed": seed},
                                     launch={"launcher": "inline"})
            store.create(member_cfg, run_id=f"seed{seed}")
        out.append(MemberRun(path, run, k, count) if reporting else Run(path))
    return out


def train_seeds(run: Run, resume: bool = True) -> dict[str, Any]:
    """Train every member of the run in turn (skipping finished ones); return the ensemble's
    summary: the members' summaries and the mean / spread of their best validation RMSE."""
    from engine.training.trainer import train

    summaries = []
    for member in member_runs(run, reporting=True):
        status = member.status()
        if resume and status.get("state") == "completed" and status.get("summary"):
            summaries.append(status["summary"])
            continue
        member.update_status(state="running", started=status.get("started") or now_iso())
        summary = train(member, resume=resume)
        member.update_status(state="completed", progress=1.0, ended=now_iso(), summary=_jsonable(summary))
        run.log_event("member", member=member.index, members=member.count, seed=member_seed(run, member.index),
                      **{k: v for k, v in _jsonable(summary).items() if isinstance(v, (int, float, bool))})
        summaries.append(_jsonable(summary))
    rmse = np.array([s.get("val_rmse", np.nan) for s in summaries], dtype=float)
    out = {"members": len(summaries), "member_summaries": summaries,
           "val_rmse": float(np.nanmean(rmse)) if np.isfinite(rmse).any() else None,
           "val_rmse_spread": float(np.nanmax(rmse) - np.nanmin(rmse)) if np.isfinite(rmse).any() else None,
           "epoch": max(int(s.get("epoch", -1)) for s in summaries) if summaries else -1,
           "stopped_early": any(s.get("stopped_early") for s in summaries)}
    run.update_status(progress=1.0, members=len(summaries), member_val_rmse=[_f(v) for v in rmse])
    return out


def predict_members(run: Run, period="test", **kwargs):
    """The deep-ensemble predictions of a ``training.seeds`` > 1 run (``member`` dimension)."""
    from engine.inference.ensembles import predict_deep_ensemble

    ds = predict_deep_ensemble(member_runs(run), period, **kwargs)
    ds.attrs.update(finescale_run=run.run_id, history=f"{now_iso()}: predicted by finescale run {run.run_id} "
                    f"(deep ensemble of its {ds.sizes['member']} seeds)")
    return ds


def write_members(run: Run, path, period="test", **kwargs):
    """Predict the members (:func:`predict_members`) and write them as NetCDF atomically, in the
    chunks the block-wise writer uses (one time step, every member), so lazy evaluation reads the
    ``member`` dimension whole; returns the predictions opened lazily."""
    import xarray as xr

    from engine.files import atomic_path
    from engine.inference.output import _encoding

    ds = predict_members(run, period, **kwargs)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=_encoding(ds, "netcdf"))
    from engine.data.catalog import OPEN_LOCK  # HDF5 is not thread-safe while opening

    with OPEN_LOCK:
        return xr.open_dataset(path, engine="netcdf4", chunks={}, cache=False)


def _f(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in summary.items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[key] = value
    return out
