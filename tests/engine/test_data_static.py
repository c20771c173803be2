"""Static fields: real elevation and land mask on any grid."""

import numpy as np
import pytest

from engine.data import DataError, STATIC_FIELDS, static_fields


def test_names():
    assert STATIC_FIELDS == ("elevation", "land_mask")


def test_alps_box_known_points():
    lat = 43 + (np.arange(64) + 0.5) / 12
    lon = 5 + (np.arange(128) + 0.5) / 12
    st = static_fields(lat, lon)
    assert set(st.data_vars) == {"elevation", "land_mask"}
    assert st.elevation.dims == ("lat", "lon") and st.elevation.attrs["units"] == "m"
    at = lambda v, la, lo: float(st[v].sel(lat=la, lon=lo, method="nearest"))  # noqa: E731
    # Mont Blanc massif is high, the Po plain low, the Ligurian Sea is sea at 0 m
    assert at("elevation", 45.83, 6.86) > 2000
    assert at("elevation", 45.1, 9.5) < 200
    assert at("elevation", 43.5, 8.5) == 0.0 and at("land_mask", 43.5, 8.5) == 0.0
    assert at("land_mask", 46.5, 10.0) == 1.0  # Engadin
    assert float(st.elevation.max()) > 3000
    assert 0.0 <= float(st.land_mask.min()) and float(st.land_mask.max()) <= 1.0
    # sea cells (no land at all) have elevation 0
    assert float(st.elevation.where(st.land_mask == 0).max()) <= 30.0


def test_any_grid_coarse_fraction_and_descending_and_0_360():
    # 1 degree cells straddling the Genoa coast: fractions between 0 and 1
    st = static_fields([44.5, 43.5], [8.5, 9.5], ["land_mask"])
    frac = st.land_mask.values
    assert ((frac > 0.05) & (frac < 0.95)).any()
    # 0..360 longitudes give the same as -180..180
    a = static_fields([51.5], [359.5, 0.5], ["elevation"]).elevation.values
    b = static_fields([51.5], [-0.5, 0.5], ["elevation"]).elevation.values
    np.testing.assert_allclose(a, b)


def test_finer_than_source_uses_nearest():
    st = static_fields(np.arange(45.80, 45.86, 0.01), np.arange(6.84, 6.90, 0.01), ["elevation"])
    assert np.isfinite(st.elevation.values).all() and float(st.elevation.min()) > 1000


def test_unknown_name():
    with pytest.raises(DataError, match=r"unknown static field.*'urban'.*elevation, land_mask"):
        static_fields([45.0, 46.0], [7.0, 8.0], ["urban"])


def test_bad_latitude():
    with pytest.raises(DataError, match="latitudes must lie in"):
        static_fields([95.0], [7.0], ["elevation"])
