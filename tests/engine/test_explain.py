"""Attributions on a small hand-built conv model: receptive field, ignored channels, IG
completeness, Grad-CAM layers, xarray output, the run-level wrapper, speed."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

from engine.config import ExperimentConfig
from engine.explain import ExplainError, attribute, conv_layers, explain_run, region_mask, to_dataset, write_attributions
from engine.runs import RunStore

SCALE = 4


class TinyNet(nn.Module):
    """LR conv 3x3 -> ReLU -> nearest x4 -> concat static -> HR conv 3x3 -> (B, 1, H, W).

    Receptive field of output pixel (r, c): HR rows r-1..r+1 of the static fields; LR rows
    (r-1)//4 - 1 .. (r+1)//4 + 1 of the input (the HR conv, then the nearest upsampling, then
    the LR conv).
    """

    def __init__(self, c_in=3, s=2, ignore=None):
        super().__init__()
        self.ignore = ignore
        self.lr = nn.Conv2d(c_in, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.up = nn.Upsample(scale_factor=SCALE, mode="nearest")
        self.hr = nn.Conv2d(6 + s, 1, 3, padding=1)

    def forward(self, x, static_hr):
        if self.ignore is not None:
            x = x.clone()
            x[:, self.ignore] = 0.0  # this channel cannot matter
        return self.hr(torch.cat([self.up(self.act(self.lr(x))), static_hr], dim=1))


def _inputs(B=1, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, h, w, generator=g), torch.randn(B, 2, h * SCALE, w * SCALE, generator=g)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyNet().eval()


def test_region_mask_forms():
    assert int(region_mask(None, 4, 5).sum()) == 20
    assert region_mask((1, 2), 4, 4)[1, 2] == 1 and int(region_mask((1, 2), 4, 4).sum()) == 1
    assert int(region_mask((0, 2, 1, 4), 4, 4).sum()) == 2 * 3
    with pytest.raises(ExplainError, match="outside the output grid"):
        region_mask((9, 0), 4, 4)
    with pytest.raises(ExplainError, match="no pixel"):
        region_mask((5, 6, 0, 2), 4, 4)
    with pytest.raises(ExplainError, match="accepted"):
        region_mask("north", 4, 4)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "gradient_shap", "occlusion"])
def test_attributions_vanish_outside_the_receptive_field(net, method):
    x, s = _inputs()
    r, c = 13, 18  # HR pixel; HR rows 12..14 -> LR rows 3..3 -> with the LR conv 2..4; cols 17..19 -> 4 -> 3..5
    out = attribute(net, x, s, region=(r, c), method=method, n_steps=8, window=2)
    ax, asx = np.abs(out["x"][0]), np.abs(out["static_hr"][0])
    assert ax.shape == (3, 8, 8) and asx.shape == (2, 32, 32)
    inside_lr = np.zeros((8, 8), bool)
    inside_lr[2:5, 3:6] = True
    inside_hr = np.zeros((32, 32), bool)
    inside_hr[12:15, 17:20] = True
    if method == "occlusion":
        # a 2x2 LR tile (8x8 HR tile for the static fields) touching the field credits all of
        # its pixels: LR rows 2..5, cols 2..5; HR rows 8..15, cols 16..23
        inside_lr = np.zeros((8, 8), bool)
        inside_lr[2:6, 2:6] = True
        inside_hr = np.zeros((32, 32), bool)
        inside_hr[8:16, 16:24] = True
    # occlusion differences of batched forwards carry float32 rounding (~1e-8)
    tol = 1e-5 * max(ax.max(), asx.max()) if method == "occlusion" else 0.0
    assert ax[:, ~inside_lr].max() <= tol
    assert asx[:, ~inside_hr].max() <= tol
    assert ax[:, inside_lr].max() > 0 and asx[:, inside_hr].max() > 0


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "gradient_shap", "occlusion"])
def test_ignored_channel_gets_no_attribution(method):
    torch.manual_seed(1)
    model = TinyNet(ignore=1).eval()
    x, s = _inputs(B=2)
    out = attribute(model, x, s, region=(4, 12, 8, 20), method=method, n_steps=8)
    ax = np.abs(out["x"])
    assert ax[:, 1].max() < 1e-6 * max(ax.max(), 1e-12) + 1e-9
    assert ax[:, 0].max() > 0 and ax[:, 2].max() > 0


def test_integrated_gradients_completeness(net):
    x, s = _inputs(B=2, seed=3)
    out = attribute(net, x, s, region=(0, 16, 0, 16), method="integrated_gradients", n_steps=64)
    total = out["x"].reshape(2, -1).sum(1) + out["static_hr"].reshape(2, -1).sum(1)
    diff = out["output"] - out["baseline_output"]
    # Captum's convergence delta is exactly this difference; with 64 steps it is small
    assert out["delta"] == pytest.approx(total - diff, abs=1e-4)
    assert np.abs(out["delta"]).max() < 0.02 * np.abs(diff).max()


def test_grad_cam_layers(net):
    x, s = _inputs()
    assert conv_layers(net) == ["lr", "hr"]
    out = attribute(net, x, s, region=(10, 11), method="gradcam")
    assert out["layer"] == "lr" and out["grad_cam"].shape == (1, 32, 32)
    out = attribute(net, x, s, region=(10, 11), method="grad_cam", layer="hr")
    assert out["layer"] == "hr"
    with pytest.raises(ExplainError, match="its conv layers: lr, hr"):
        attribute(net, x, s, method="grad_cam", layer="body.9")


def test_bad_method_and_shapes(net):
    x, s = _inputs()
    with pytest.raises(ExplainError, match="accepted: saliency, integrated_gradients"):
        attribute(net, x, s, method="lime")
    with pytest.raises(ExplainError, match="batch sizes"):
        attribute(net, x, torch.cat([s, s]), method="saliency")


def test_to_dataset_names_coords_importance(net, tmp_path):
    x, s = _inputs(B=2)
    out = attribute(net, x, s, region=(8, 12, 8, 12), method="integrated_gradients", n_steps=8)
    times = pd.date_range("2003-07-01", periods=2)
    lr = {"lat": np.linspace(40, 47, 8), "lon": np.linspace(0, 7, 8)}
    hr = {"lat": np.linspace(40, 47.75, 32), "lon": np.linspace(0, 7.75, 32)}
    ds = to_dataset(out, ["t2m", "elevation_lr", "land_mask_lr"], ["elevation", "land_mask"], lr, hr, times)
    assert ds["input_t2m"].dims == ("time", "lat_lr", "lon_lr")
    assert ds["static_elevation"].dims == ("time", "lat", "lon")
    assert list(ds.channel.values) == ["input_t2m", "input_elevation_lr", "input_land_mask_lr", "static_elevation",
                                       "static_land_mask"]
    assert float(ds.importance.sum()) == pytest.approx(1.0)
    assert float(ds.importance_signed.sel(channel="input_t2m")) == pytest.approx(float(out["x"][:, 0].sum()))
    assert ds.lat_lr.values == pytest.approx(lr["lat"]) and ds["convergence_delta"].dims == ("time",)
    run = RunStore(tmp_path).create(ExperimentConfig(name="x"), run_id="r")
    path = write_attributions(run, ds)
    assert path.parent == run.path / "attributions"
    with xr.open_dataset(path) as back:
        assert back["input_t2m"].values == pytest.approx(ds["input_t2m"].values)


class _FakeDataset:
    def __init__(self, n, times):
        self.times = times
        self._x, self._s = _inputs(B=n, seed=7)

    def __len__(self):
        return len(self.times)

    def __getitem__(self, i):
        return {"x": self._x[i], "static_hr": self._s[i], "y": torch.zeros(1, 32, 32),
                "mask": torch.ones(1, 32, 32), "time": i}


class _FakeLoaded:
    def __init__(self, model):
        self.model = model
        self.times = pd.date_range("2003-07-01", periods=3).values
        self.input_channels = ["t2m", "elevation", "land_mask"]
        self.static_channels = ["elevation", "land_mask"]
        self.lr_coords = {"lat": np.linspace(40, 47, 8), "lon": np.linspace(0, 7, 8)}
        self.hr_coords = {"lat": np.linspace(40, 47.75, 32), "lon": np.linspace(0, 7.75, 32)}

    def dataset(self, period="test"):
        return _FakeDataset(3, self.times)


def test_explain_run_with_a_loaded_run(net, tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig(name="x"), run_id="r")
    loaded = _FakeLoaded(net)
    ds = explain_run(run, ["2003-07-02", 2], region=(42.0, 44.0, 2.0, 4.0), method="saliency", loaded=loaded)
    assert ds.time.values.tolist() == loaded.times[[1, 2]].tolist()
    assert ds.region.sum() > 0 and ds.attrs["finescale_run"] == "r"
    assert (run.path / "attributions").is_dir() and ds.attrs["file"].endswith(".nc")
    # a (lat, lon) point selects the nearest HR pixel
    one = explain_run(run, 0, region=(44.0, 4.0), method="integrated_gradients", n_steps=4, loaded=loaded,
                      write=False)
    assert int(one.region.sum()) == 1
    with pytest.raises(ExplainError, match="not a time step"):
        explain_run(run, "1999-01-01", loaded=loaded, write=False)
    from engine.evaluation._common import MetricError

    with pytest.raises(MetricError, match="misses the domain"):
        explain_run(run, 0, region=(80.0, 85.0, 0.0, 1.0), loaded=loaded, write=False)


def test_ig_on_a_64x128_domain_in_batched_steps():
    # The speed itself is measured by benchmarks.evaluation (no timing assertions in tests).
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(1, 3, 16, 32)
    s = torch.randn(1, 2, 64, 128)
    whole = attribute(model, x, s, region=(20, 28, 40, 48), method="integrated_gradients", n_steps=32)
    chunked = attribute(model, x, s, region=(20, 28, 40, 48), method="integrated_gradients", n_steps=32,
                        internal_batch_size=8)
    assert whole["x"].shape == (1, 3, 16, 32) and whole["static_hr"].shape == (1, 2, 64, 128)
    assert whole["x"] == pytest.approx(chunked["x"], abs=1e-5)


def test_explain_run_cuts_attributions_back_to_the_unpadded_grid(net, tmp_path):
    # a 30 x 29 target padded to 32 x 32 for scale 4: attributions come back on 30 x 29, like predictions
    import types

    run = RunStore(tmp_path).create(ExperimentConfig(name="x"), run_id="p")
    loaded = _FakeLoaded(net)
    loaded.pair = types.SimpleNamespace(padding={"dims": ("lat", "lon"), "shape": (30, 29), "pad": (2, 3)})
    ds = explain_run(run, 0, method="saliency", loaded=loaded, write=False)
    full = explain_run(run, 0, method="saliency", loaded=_FakeLoaded(net), write=False)
    assert ds.sizes["lat"] == 30 and ds.sizes["lon"] == 29 and ds.static_elevation.shape == (1, 30, 29)
    assert ds.region.shape == (30, 29) and ds.input_t2m.shape == full.input_t2m.shape
    np.testing.assert_array_equal(ds.lat.values, full.lat.values[:30])
    np.testing.assert_allclose(ds.static_elevation.values, full.static_elevation.values[:, :30, :29])
    # the shares are those of the original cells only
    cut = float(full.static_elevation[:, :30, :29].sum())
    assert float(ds.importance_signed.sel(channel="static_elevation")) == pytest.approx(cut, rel=1e-6)
    assert float(ds.importance.sum()) == pytest.approx(1.0)
