"""The catalogue: listing, metadata, opening entries (generated, downloaded, remote), bad input."""

import shutil
import time
from pathlib import Path

import intake
import numpy as np
import pytest

from engine.data import DataError, entry_metadata, list_entries, open_dataset
from engine.data import catalog as catalog_mod
from engine.data.paths import DEFAULT_CATALOG


def test_listing_and_metadata():
    names = list_entries()
    assert {"demo_alps", "demo_alps_gcm", "era5_uk_t2m", "arco_era5"} <= set(names)
    meta = entry_metadata("demo_alps")
    assert meta["role"] == "highres"
    assert meta["variables"]["t2m"]["units"] == "K" and meta["variables"]["pr"]["units"] == "mm/day"
    assert meta["pairs_with"] == ["demo_alps_gcm"]
    assert "Alps" in meta["description"]
    gcm = entry_metadata("demo_alps_gcm")
    assert gcm["role"] == "lowres" and gcm["pairs_with"] == ["demo_alps"]
    assert entry_metadata("arco_era5")["remote"] is True


def test_plain_intake_reads_the_catalogue():
    cat = intake.open_catalog(str(DEFAULT_CATALOG))
    assert "demo_alps" in list(cat)


def test_unknown_entry_lists_known():
    with pytest.raises(DataError, match=r"unknown catalogue entry 'demo_alp'.*demo_alps, demo_alps_gcm"):
        open_dataset("demo_alp")
    with pytest.raises(DataError, match="unknown catalogue entry"):
        entry_metadata("nope")


def test_missing_catalogue_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_entries(tmp_path / "none.yaml")


def test_finescale_catalog_names_the_default_catalogue(tmp_path, monkeypatch):
    """An install outside the checkout (or a site's own catalogue) is named by $FINESCALE_CATALOG."""
    own = tmp_path / "site.yaml"
    own.write_text(DEFAULT_CATALOG.read_text().replace("demo_alps_gcm", "site_gcm"))  # pairs_with too
    monkeypatch.setenv("FINESCALE_CATALOG", str(own))
    assert "site_gcm" in list_entries() and "demo_alps_gcm" not in list_entries()
    monkeypatch.setenv("FINESCALE_CATALOG", str(tmp_path / "gone.yaml"))
    with pytest.raises(DataError, match="gone.yaml' does not exist .*set FINESCALE_CATALOG"):
        list_entries()


def test_open_demo_layout():
    ds = open_dataset("demo_alps")
    assert ds.t2m.dims == ("time", "lat", "lon") and ds.t2m.shape == (1095, 64, 128)
    assert (np.diff(ds.lat.values) > 0).all()
    assert str(ds.time.values[0])[:10] == "2001-01-01" and str(ds.time.values[-1])[:10] == "2003-12-31"
    gcm = open_dataset("demo_alps_gcm")
    assert gcm.lat.size < ds.lat.size


def _user_catalog(tmp_path, nc: Path, extra: str = "") -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(
        f"""
sources:
  mine:
    description: a user file
    driver: netcdf
    args:
      urlpath: "{nc}"
      xarray_kwargs: {{engine: netcdf4}}
    metadata: {{role: highres, variables: {{t2m: {{units: K}}}}}}
{extra}"""
    )
    return path


def test_user_catalogue_renames_and_sorts(tmp_path, data_small_demo):
    hr, _ = data_small_demo
    # a file as many providers write it: latitude/longitude, latitude descending, 0..360 longitudes
    raw = hr.isel(time=slice(0, 3)).rename(lat="latitude", lon="longitude")
    raw = raw.isel(latitude=slice(None, None, -1)).assign_coords(longitude=raw.longitude + 360)
    nc = tmp_path / "mine.nc"
    raw.to_netcdf(nc, engine="netcdf4")
    cat = _user_catalog(tmp_path, nc)
    assert list_entries(cat) == ["mine"]
    ds = open_dataset("mine", catalog=cat)
    assert ds.t2m.dims == ("time", "lat", "lon")
    assert (np.diff(ds.lat.values) > 0).all()
    assert -180 <= float(ds.lon.min()) and float(ds.lon.max()) <= 180
    np.testing.assert_allclose(ds.t2m.values, hr.t2m.values[:3], rtol=1e-6)


def test_truncated_netcdf_names_the_file(tmp_path, data_small_demo):
    hr, _ = data_small_demo
    good = tmp_path / "good.nc"
    hr.isel(time=slice(0, 20)).to_netcdf(good, engine="netcdf4")
    bad = tmp_path / "truncated.nc"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    cat = _user_catalog(tmp_path, bad)
    with pytest.raises(DataError, match=r"could not open entry 'mine' from .*truncated\.nc.*truncated or corrupt"):
        open_dataset("mine", catalog=cat).load()


def test_generator_must_be_registered(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text(
        """
sources:
  evil:
    driver: netcdf
    args: {urlpath: "x.nc"}
    metadata: {role: highres, generator: "os:system", generator_args: {}}
"""
    )
    with pytest.raises(DataError, match=r"generator 'os:system'.*not a finescale generator; accepted: demo_alps"):
        open_dataset("evil", catalog=path)


def test_arco_era5_offline_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setattr(catalog_mod, "NETWORK_TIMEOUT", 3.0)
    start = time.monotonic()
    try:
        ds = open_dataset("arco_era5")
    except DataError as exc:
        msg = str(exc)
        assert "gcp-public-data-arco-era5" in msg and "network access" in msg
    else:  # online: it must stay lazy
        assert ds.chunks
    assert time.monotonic() - start < 30


def test_era5_through_the_download_path(tmp_path, monkeypatch, data_shared_dir):
    """The real xarray.tutorial / pooch path, with its cache seeded from ../shared/data."""
    monkeypatch.setenv("FINESCALE_DATA", str(tmp_path))
    name = "era5-2mt-2019-03-uk.grib"
    target = catalog_mod.tutorial_cache_path(name)
    assert target.parent == tmp_path / "xarray_tutorial_data"
    shutil.copy(data_shared_dir / name, target)
    ds = open_dataset("era5_uk_t2m")
    assert ds.t2m.dims == ("time", "lat", "lon") and ds.t2m.shape == (744, 33, 49)
    assert (np.diff(ds.lat.values) > 0).all() and float(ds.lat[0]) == 50.0
    assert float(ds.lon.min()) == -10.0 and float(ds.lon.max()) == 2.0
    t = ds.t2m.values
    assert np.isfinite(t).all() and 250 < t.mean() < 290
    # cfgrib wrote no index file next to the data (the cache may be read-only)
    assert not list(target.parent.glob("*.idx"))
    # and the shared folder got none either
    assert not list(data_shared_dir.glob("*.idx"))


def test_era5_missing_offline_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("FINESCALE_DATA", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    import pooch

    monkeypatch.setattr(pooch, "retrieve", no_network)
    with pytest.raises(DataError, match=r"could not download 'era5-2mt-2019-03-uk.grib'.*Network access.*place the file at"):
        open_dataset("era5_uk_t2m")
