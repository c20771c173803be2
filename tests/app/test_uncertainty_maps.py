"""Uncertainty maps that do not mislead: the error of the mean on its own symmetric scale, the
member map keeping its coastline when the member changes, a spread-skill plot fitted to its
bins, and the documented ``EnsembleState(app=..., run=...)``."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest

from app.analysis import EnsembleState
from app.state import AppState
from app.views import UncertaintyView

from .conftest import make_ensemble_run


@pytest.fixture
def ens_run(run_root):
    return make_ensemble_run(run_root, members=5)


def _style(element):
    """Plot and style options of an element (clim is a plot option, cmap a style one)."""
    return {**hv.Store.lookup_options("bokeh", element, "plot").kwargs,
            **hv.Store.lookup_options("bokeh", element, "style").kwargs}


def test_documented_constructor_selects_the_run(run_root, ens_run):
    app = AppState()
    app.poll()
    ens = EnsembleState(app=app, run=ens_run.run_id)
    assert ens.run == ens_run.run_id and ens.members == 5 and ens.time is not None
    with pytest.raises(ValueError, match="no ensemble predictions"):
        EnsembleState(app=app, run="20990101-nope")


def test_error_of_the_mean_has_its_own_symmetric_range(run_root, ens_run):
    app = AppState()
    app.poll()
    view = UncertaintyView(state=app, ens=EnsembleState(app=app, run=ens_run.run_id))
    layout = view.maps()
    error_map = layout[4][()].get(0)
    spread_map = layout[3][()].get(0)
    lo, hi = _style(error_map)["clim"]
    assert lo == -hi and hi > 0
    # The fixture's errors are about 0.5 K (model noise) and the spread about 0.5 K too; the
    # range follows the errors' own percentiles, not a multiple of the spread.
    errors = np.abs(error_map.dimension_values(2))
    errors = errors[np.isfinite(errors)]
    assert 0.5 * np.percentile(errors, 99) <= hi <= 2 * np.percentile(errors, 99)
    slo, shi = _style(spread_map)["clim"]
    assert slo == 0.0 and shi > 0
    # Diverging map for the error, centred white-ish; sequential for the spread.
    assert _style(error_map)["cmap"] != _style(spread_map)["cmap"]


def test_member_map_keeps_its_coastline_when_the_member_changes(run_root, ens_run):
    app = AppState()
    app.poll()
    ens = EnsembleState(app=app, run=ens_run.run_id)
    layout = UncertaintyView(state=app, ens=ens).maps()
    member = layout[1]
    first = member[()]
    assert isinstance(first.get(1), hv.Contours)
    ens.member = 3
    after = member[()]
    # Same group (a stable overlay), the new member in the title, the coastline still there.
    assert after.get(0).group == first.get(0).group
    assert "Member 3" in hv.Store.lookup_options("bokeh", after.get(0), "plot").kwargs["title"]
    assert isinstance(after.get(1), hv.Contours) and len(after.get(1).split()) >= 1


def test_spread_skill_axes_fit_the_bins(run_root, ens_run):
    app = AppState()
    app.poll()
    ens = EnsembleState(app=app, run=ens_run.run_id)
    view = UncertaintyView(state=app, ens=ens)
    pane = view._calibration()
    skill = pane.select(lambda p: "fs-spread-skill" in (getattr(p, "css_classes", None) or []))[0].object
    opts = hv.Store.lookup_options("bokeh", skill, "plot").kwargs
    ss = ens.spread_skill()
    lo, hi = opts["xlim"]
    assert opts["xlim"] == opts["ylim"]
    assert lo <= ss["spread"].min() and hi >= ss["rmse"].max()
    # Not from 0: the bins (spread ~0.5) fill the plot rather than a corner of it.
    assert lo > 0.5 * ss["spread"].min()
