"""Captum attributions for downscaling networks: which inputs made this output region?

A downscaling network maps a field to a field, ``model(x, static_hr) -> (B, 1, H, W)``. Captum
attributes a scalar per sample, so the output is reduced by summing it over the chosen region
(a pixel, a box or a mask) — see :class:`RegionOutput`. Attributions come for both inputs (the
low-resolution input ``x`` (B, C_in, h, w) and the high-resolution static fields
``static_hr`` (B, S, H, W)); Captum handles the tuple of inputs.

Methods (:data:`METHODS`): ``saliency`` (|gradient|), ``integrated_gradients`` (with Captum's
convergence delta), ``gradient_shap``, ``occlusion`` (sliding windows), ``grad_cam``
(LayerGradCam on a chosen layer, upsampled to the output grid).

Example
-------
>>> import torch
>>> from torch import nn
>>> class Net(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.conv = nn.Conv2d(2, 1, 3, padding=1)
...         self.up = nn.Upsample(scale_factor=4)
...     def forward(self, x, static_hr):
...         return self.up(self.conv(x)) + static_hr[:, :1]
>>> x, s = torch.randn(1, 2, 8, 8), torch.randn(1, 1, 32, 32)
>>> out = attribute(Net(), x, s, region=(10, 12), method="integrated_gradients", n_steps=16)
>>> out["x"].shape, out["static_hr"].shape
((1, 2, 8, 8), (1, 1, 32, 32))
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

METHODS = ("saliency", "integrated_gradients", "gradient_shap", "occlusion", "grad_cam")
_ALIASES = {"ig": "integrated_gradients", "gradcam": "grad_cam", "layer_grad_cam": "grad_cam", "shap": "gradient_shap"}


class ExplainError(ValueError):
    """Bad input to an attribution: unknown method or layer, a region outside the grid, shapes."""


# ---------------------------------------------------------------------------------------
# Regions and the scalar output
# ---------------------------------------------------------------------------------------
def region_mask(region: Any, H: int, W: int) -> torch.Tensor:
    """The output region as a float (H, W) mask of 0/1 on the high-resolution grid.

    Parameters
    ----------
    region : None (the whole domain); ``(row, col)`` one pixel; ``(row0, row1, col0, col1)``
        a half-open box of indices; a boolean/0-1 array or tensor of shape (H, W)

    Example
    -------
    >>> int(region_mask((0, 2, 0, 3), 4, 4).sum())
    6
    """
    if region is None:
        return torch.ones(H, W)
    if isinstance(region, (np.ndarray, torch.Tensor)) and np.ndim(region) == 2:
        m = torch.as_tensor(np.asarray(region, dtype=np.float32) if isinstance(region, np.ndarray) else region).float()
        if tuple(m.shape) != (H, W):
            raise ExplainError(f"region mask has shape {tuple(m.shape)}; expected the output grid ({H}, {W})")
    elif isinstance(region, (tuple, list)) and len(region) == 2:
        r, c = (int(v) for v in region)
        if not (0 <= r < H and 0 <= c < W):
            raise ExplainError(f"pixel {(r, c)} is outside the output grid (rows 0..{H - 1}, cols 0..{W - 1})")
        m = torch.zeros(H, W)
        m[r, c] = 1.0
    elif isinstance(region, (tuple, list)) and len(region) == 4:
        r0, r1, c0, c1 = (int(v) for v in region)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, H), min(c1, W)
        if r1 <= r0 or c1 <= c0:
            raise ExplainError(f"box {tuple(region)} (row0, row1, col0, col1) holds no pixel of the {H}x{W} output grid")
        m = torch.zeros(H, W)
        m[r0:r1, c0:c1] = 1.0
    else:
        raise ExplainError(
            f"region {region!r} is not valid; accepted: None, (row, col), (row0, row1, col0, col1), an (H, W) mask"
        )
    if not m.any():
        raise ExplainError("the region mask selects no pixel")
    return m


class RegionOutput(nn.Module):
    """``model``'s output summed over a region: (B, C_in, h, w), (B, S, H, W) -> (B,).

    The sum (not the mean) keeps Integrated Gradients' completeness readable: the
    attributions add up to the change of the summed output.
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor) -> torch.Tensor:
        out = self.model(x, static_hr)
        if out.ndim != 4 or out.shape[1] != 1 or tuple(out.shape[-2:]) != tuple(self.mask.shape):
            raise ExplainError(
                f"expected the model output (B, 1, {self.mask.shape[0]}, {self.mask.shape[1]}), got {tuple(out.shape)}"
            )
        return (out[:, 0] * self.mask).sum(dim=(1, 2))


def _method(name: str) -> str:
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in METHODS:
        raise ExplainError(f"attribution method {name!r} is not valid; accepted: {', '.join(METHODS)}")
    return name


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's Conv2d layers (candidates for Grad-CAM), in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    if isinstance(layer, nn.Module):
        return type(layer).__name__, layer
    convs = conv_layers(model)
    if layer is None:
        if not convs:
            raise ExplainError("the model has no Conv2d layer; pass layer= (a module name) for Grad-CAM")
        # The last conv is usually the 1-channel output conv, where Grad-CAM only restates the
        # output; the one before it is the last layer of features.
        name = convs[-2] if len(convs) >= 2 else convs[-1]
        return name, model.get_submodule(name)
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        raise ExplainError(f"layer {layer!r} is not in the model; its conv layers: {', '.join(convs) or 'none'}") from None


def _baselines(baseline, x, static_hr):
    if baseline is None:
        # Zero = the training mean in normalised space: "what if the inputs were average".
        return torch.zeros_like(x), torch.zeros_like(static_hr)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline)), torch.full_like(static_hr, float(baseline))
    if isinstance(baseline, (tuple, list)) and len(baseline) == 2:
        bx, bs = (torch.as_tensor(b, dtype=x.dtype) for b in baseline)
        return bx.expand_as(x) if bx.shape != x.shape else bx, bs.expand_as(static_hr) if bs.shape != static_hr.shape else bs
    raise ExplainError("baseline must be None, a number, or a pair (x_baseline, static_baseline) of tensors")


# ---------------------------------------------------------------------------------------
# The torch-level core
# ---------------------------------------------------------------------------------------
def attribute(
    model: nn.Module,
    x: torch.Tensor,
    static_hr: torch.Tensor,
    region: Any = None,
    method: str = "integrated_gradients",
    baseline: Any = None,
    n_steps: int = 32,
    layer: str | nn.Module | None = None,
    internal_batch_size: int | None = None,
    window: int = 4,
) -> dict[str, Any]:
    """Attribute the output summed over ``region`` to both inputs.

    Parameters
    ----------
    model : ``forward(x, static_hr) -> (B, 1, H, W)``; put in eval mode, float32
    x : (B, C_in, h, w) low-resolution input (normalised, as the model sees it)
    static_hr : (B, S, H, W) high-resolution static fields (S may be 0)
    region : see :func:`region_mask` (pixel, box, mask; None = the whole domain)
    method : one of :data:`METHODS`
    baseline : reference input for integrated_gradients / gradient_shap / occlusion:
        None (zeros = the training mean in normalised space), a number, or a pair of tensors
    n_steps : integration steps (IG) or samples (GradientSHAP)
    layer : Grad-CAM layer (a module name such as ``"body.2.conv"`` or the module); default the
        second-to-last Conv2d
    internal_batch_size : IG steps evaluated per forward pass; default all steps at once for a
        batch of one (fast on CPU for small domains)
    window : occlusion tile on the LR grid (static fields use ``window * scale``); tiles do
        not overlap, so each forward pass answers for one tile and the cost stays at
        (C_in + S) * (h / window) * (w / window) forward passes

    Returns
    -------
    dict with ``x`` (B, C_in, h, w) and ``static_hr`` (B, S, H, W) numpy attributions (for
    ``grad_cam``: ``grad_cam`` (B, H, W) and ``layer``), ``output`` (B,) the reduced output,
    ``region`` (H, W), ``method``, and for IG ``delta`` (B,) the convergence delta
    (sum of attributions minus the output difference).
    """
    from captum.attr import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    method = _method(method)
    if x.ndim != 4 or static_hr.ndim != 4:
        raise ExplainError(f"expected x (B, C_in, h, w) and static_hr (B, S, H, W); got {tuple(x.shape)}, "
                           f"{tuple(static_hr.shape)}")
    if x.shape[0] != static_hr.shape[0]:
        raise ExplainError(f"x and static_hr have different batch sizes: {x.shape[0]} vs {static_hr.shape[0]}")
    if n_steps < 1:
        raise ExplainError(f"n_steps={n_steps} is not valid; expected >= 1")
    B = x.shape[0]
    x = x.detach().float()
    static_hr = static_hr.detach().float()
    with torch.no_grad():
        H, W = model(x[:1], static_hr[:1]).shape[-2:]
    mask = region_mask(region, H, W)
    f = RegionOutput(model, mask).eval()
    inputs = (x.requires_grad_(), static_hr.requires_grad_())
    with torch.no_grad():
        output = f(x, static_hr).numpy()
    result: dict[str, Any] = {"method": method, "output": output, "region": mask.numpy().astype(bool)}
    if method == "saliency":
        ax, asx = Saliency(f).attribute(inputs, abs=True)
    elif method == "integrated_gradients":
        bx, bs = _baselines(baseline, x, static_hr)
        ibs = internal_batch_size or n_steps * B
        (ax, asx), delta = IntegratedGradients(f).attribute(
            inputs, baselines=(bx, bs), n_steps=n_steps, internal_batch_size=ibs, return_convergence_delta=True
        )
        result["delta"] = delta.detach().numpy()
        with torch.no_grad():
            result["baseline_output"] = f(bx, bs).numpy()
    elif method == "gradient_shap":
        bx, bs = _baselines(baseline, x, static_hr)
        (ax, asx), delta = GradientShap(f).attribute(
            inputs, baselines=(bx[:1], bs[:1]), n_samples=n_steps, stdevs=0.1, return_convergence_delta=True
        )
        result["delta"] = delta.detach().reshape(B, -1).mean(1).numpy()
    elif method == "occlusion":
        scale = max(1, H // x.shape[-2])
        bx, bs = _baselines(baseline, x, static_hr)
        if window < 1:
            raise ExplainError(f"window={window} is not valid; expected >= 1")
        stride_lr = window
        ax, asx = Occlusion(f).attribute(
            inputs,
            sliding_window_shapes=((1, window, window), (1, window * scale, window * scale)),
            strides=((1, stride_lr, stride_lr), (1, stride_lr * scale, stride_lr * scale)),
            baselines=(bx, bs),
            perturbations_per_eval=16,
        )
    else:  # grad_cam
        name, module = _layer(model, layer)
        cam = LayerGradCam(f, module).attribute(inputs, relu_attributions=False)
        if isinstance(cam, tuple):
            cam = cam[0]
        cam = LayerAttribution.interpolate(cam.detach(), (H, W), interpolate_mode="bilinear")
        result.update(grad_cam=cam[:, 0].numpy(), layer=name)
        return result
    result["x"] = ax.detach().numpy()
    result["static_hr"] = asx.detach().numpy()
    return result


# ---------------------------------------------------------------------------------------
# xarray
# ---------------------------------------------------------------------------------------
def to_dataset(
    result: dict[str, Any],
    input_channels: Sequence[str] | None = None,
    static_channels: Sequence[str] | None = None,
    lr_coords: dict[str, np.ndarray] | None = None,
    hr_coords: dict[str, np.ndarray] | None = None,
    times: Sequence | None = None,
) -> xr.Dataset:
    """Attributions as a Dataset: one map per input channel, named.

    Variables: ``input_<name>`` (time, lat_lr, lon_lr) for each LR input channel,
    ``static_<name>`` (time, lat, lon) for each HR static channel, ``grad_cam`` (time, lat, lon)
    for Grad-CAM; ``importance`` (channel) = share of the total |attribution| per channel
    (sums to 1) and ``importance_signed`` (channel) = the summed signed attribution;
    ``output`` (time) the region-summed output; ``region`` (lat, lon); ``convergence_delta``
    (time) for IG. Attributes: method, layer, time of creation.
    """
    method = result["method"]
    B = len(result["output"])
    H, W = result["region"].shape
    tcoord = np.asarray(times) if times is not None else np.arange(B)
    hr = hr_coords or {"lat": np.arange(H), "lon": np.arange(W)}
    hd = tuple(hr.get("dims", ("lat", "lon")))  # ("y", "x") on rotated/projected grids (engine.data.grid)
    ds = xr.Dataset(coords=_grid_coords(hr, hd, ""))
    ds = ds.assign_coords(time=tcoord)
    ds["output"] = ("time", np.asarray(result["output"], dtype=np.float64))
    ds["output"].attrs["long_name"] = "model output summed over the region"
    ds["region"] = (hd, result["region"].astype("int8"))
    ds.attrs.update(method=method, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if "delta" in result:
        ds["convergence_delta"] = ("time", np.asarray(result["delta"], dtype=np.float64))
    if method == "grad_cam":
        ds["grad_cam"] = (("time", *hd), result["grad_cam"])
        ds.attrs["layer"] = result["layer"]
        return ds
    ax, asx = result["x"], result["static_hr"]
    C, h, w = ax.shape[1:]
    S = asx.shape[1]
    input_channels = list(input_channels) if input_channels is not None else [f"x{i}" for i in range(C)]
    static_channels = list(static_channels) if static_channels is not None else [f"static{i}" for i in range(S)]
    if len(input_channels) != C or len(static_channels) != S:
        raise ExplainError(f"{len(input_channels)} input / {len(static_channels)} static channel names for "
                           f"{C} / {S} channels")
    lr = lr_coords or {"lat": np.arange(h), "lon": np.arange(w)}
    ld = tuple(f"{d}_lr" for d in lr.get("dims", ("lat", "lon")))
    ds = ds.assign_coords(_grid_coords(lr, tuple(lr.get("dims", ("lat", "lon"))), "_lr"))
    names, total_abs, total = [], [], []
    for i, name in enumerate(input_channels):
        var = f"input_{name}"
        ds[var] = (("time", *ld), ax[:, i])
        ds[var].attrs.update(long_name=f"{method} attribution of low-resolution input {name}", grid="low resolution")
        names.append(var)
        total_abs.append(np.abs(ax[:, i]).sum())
        total.append(ax[:, i].sum())
    for i, name in enumerate(static_channels):
        var = f"static_{name}"
        ds[var] = (("time", *hd), asx[:, i])
        ds[var].attrs.update(long_name=f"{method} attribution of high-resolution static field {name}",
                             grid="high resolution")
        names.append(var)
        total_abs.append(np.abs(asx[:, i]).sum())
        total.append(asx[:, i].sum())
    total_abs = np.asarray(total_abs, dtype=np.float64)
    share = total_abs / total_abs.sum() if total_abs.sum() > 0 else np.zeros_like(total_abs)
    ds = ds.assign_coords(channel=names)
    ds["importance"] = ("channel", share)
    ds["importance"].attrs["long_name"] = "share of the total absolute attribution"
    ds["importance_signed"] = ("channel", np.asarray(total, dtype=np.float64))
    ds["importance_signed"].attrs["long_name"] = "summed signed attribution"
    for c, units in (("lat", "degrees_north"), ("lon", "degrees_east"), ("lat_lr", "degrees_north"),
                     ("lon_lr", "degrees_east")):
        if (hr_coords is not None or lr_coords is not None) and c in ds.coords:
            ds[c].attrs["units"] = units
    return ds


def _unpad(ds: xr.Dataset, padding: dict | None) -> xr.Dataset:
    """``ds`` on the original target grid: the cells :func:`engine.data.grid.pad_to_multiple` added
    to reach a multiple of the scale cut off, as predictions are, and ``importance`` /
    ``importance_signed`` summed again over the original cells only."""
    from engine.data.grid import unpad

    if not padding or not any(padding.get("pad", (0, 0))):
        return ds
    out = unpad(ds, padding)
    if "channel" in out.coords:
        names = [str(c) for c in out.channel.values]
        total_abs = np.array([float(np.abs(out[n]).sum()) for n in names])
        share = total_abs / total_abs.sum() if total_abs.sum() > 0 else np.zeros_like(total_abs)
        out["importance"] = ("channel", share, out["importance"].attrs)
        out["importance_signed"] = ("channel", np.array([float(out[n].sum()) for n in names]),
                                    out["importance_signed"].attrs)
    out.attrs["unpadded"] = f"cut back from {ds.sizes[padding['dims'][0]]} x {ds.sizes[padding['dims'][1]]}"
    return out


def _grid_coords(coords: dict, dims: tuple[str, str], suffix: str) -> dict:
    """Coordinates of one grid for the attribution dataset: the two 1-D axes (``lat``/``lon`` or
    ``y``/``x``) and, on a non-lat/lon grid, the 2-D ``lat``/``lon``; names get ``suffix``."""
    d0, d1 = (f"{d}{suffix}" for d in dims)
    out = {d0: np.asarray(coords[dims[0]]), d1: np.asarray(coords[dims[1]])}
    if tuple(dims) != ("lat", "lon") and "lat" in coords:
        out[f"lat{suffix}"] = ((d0, d1), np.asarray(coords["lat"]))
        out[f"lon{suffix}"] = ((d0, d1), np.asarray(coords["lon"]))
    return out


def write_attributions(run, ds: xr.Dataset, name: str | None = None) -> "Path":  # noqa: F821
    """Write ``ds`` to ``run.path / "attributions" / <name>.nc`` atomically; returns the path.
    The default name is ``<method>-<UTC time stamp>``."""
    from pathlib import Path

    from engine.runs import atomic_path

    if name is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"{ds.attrs.get('method', 'attribution')}-{stamp}"
    path = Path(run.path) / "attributions" / f"{name}.nc"
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp)
    return path


# ---------------------------------------------------------------------------------------
# Run level
# ---------------------------------------------------------------------------------------
def _time_indices(time, times: np.ndarray) -> list[int]:
    items = time if isinstance(time, (list, tuple, np.ndarray)) and not isinstance(time, str) else [time]
    out = []
    for t in items:
        if isinstance(t, (int, np.integer)):
            if not 0 <= int(t) < len(times):
                raise ExplainError(f"time index {t} is outside 0..{len(times) - 1}")
            out.append(int(t))
            continue
        target = np.datetime64(t) if not hasattr(t, "calendar") else t
        hits = np.flatnonzero(times == target)
        if hits.size == 0:
            span = f"{str(times[0])[:19]} .. {str(times[-1])[:19]}" if len(times) else "none"
            raise ExplainError(f"time {t!r} is not a time step of the period ({span}, {len(times)} steps)")
        out.append(int(hits[0]))
    return out


def _geo_region(region, hr_coords) -> np.ndarray | None:
    """A region in degrees -> (H, W) bool mask on the HR grid."""
    lat = np.asarray(hr_coords["lat"], dtype=float)
    lon = np.asarray(hr_coords["lon"], dtype=float)
    if region is None or (isinstance(region, str) and region == "domain"):
        return None
    if isinstance(region, (tuple, list)) and len(region) == 2:
        if lat.ndim == 2:  # 2-D lat/lon (rotated, projected): the nearest cell centre
            dlon = (lon - float(region[1]) + 180.0) % 360.0 - 180.0
            d2 = (lat - float(region[0])) ** 2 + (dlon * np.cos(np.deg2rad(lat))) ** 2
            m = np.zeros(lat.shape, bool)
            m[np.unravel_index(int(np.argmin(d2)), lat.shape)] = True
            return m
        i = int(np.abs(lat - float(region[0])).argmin())
        j = int(np.abs(lon - float(region[1])).argmin())
        m = np.zeros((lat.size, lon.size), bool)
        m[i, j] = True
        return m
    if isinstance(region, (np.ndarray, xr.DataArray)):
        return np.asarray(region, dtype=bool)
    from engine.evaluation.breakdown import region_masks

    spec = region if isinstance(region, dict) else {"region": region}
    masks = region_masks(spec, lat, lon, include_domain=False)
    if masks.sizes["region"] != 1:
        raise ExplainError(f"give one region at a time; got {list(masks.region.values)}")
    return masks.values[0]


def explain_run(
    run,
    time,
    region: Any = None,
    method: str = "integrated_gradients",
    period: str | tuple[str, str] = "test",
    baseline: Any = None,
    n_steps: int = 32,
    layer: str | None = None,
    write: bool = True,
    loaded: Any = None,
) -> xr.Dataset:
    """Attributions of a trained run for one or several time steps of ``period``.

    Parameters
    ----------
    run : :class:`engine.runs.Run` (or folder / run id)
    time : a time step (index into the period, ISO string or datetime64) or a list of them
    region : in degrees: None / "domain" (everything), ``(lat, lon)`` the nearest HR pixel,
        ``(lat_min, lat_max, lon_min, lon_max)`` a box, a shapely polygon, a boolean (H, W)
        mask, or a one-entry dict of any of these
    method, baseline, n_steps, layer : see :func:`attribute`
    write : also write the result to ``run.path/attributions/<method>-<stamp>.nc``
    loaded : an already loaded run (default ``engine.inference.load_run(run)``)

    Returns
    -------
    Dataset from :func:`to_dataset` with real times and lat/lon coordinates (attribute
    ``file`` = where it was written).
    """
    from engine.runs import Run, RunStore

    if not isinstance(run, Run):
        run = RunStore().resolve(run)
    if loaded is None:
        from engine.inference import load_run

        loaded = load_run(run)
    dataset = loaded.dataset(period)
    times = getattr(dataset, "times", None)
    if times is None:
        times = getattr(loaded, "times", None)
    times = np.asarray(times) if times is not None else np.arange(len(dataset))
    idx = _time_indices(time, times)
    items = [dataset[i] for i in idx]
    x = torch.stack([torch.as_tensor(it["x"]) for it in items]).float()
    s = torch.stack([torch.as_tensor(it["static_hr"]) for it in items]).float()
    mask = _geo_region(region, loaded.hr_coords)
    model = loaded.model.eval().float()
    result = attribute(model, x, s, region=mask, method=method, baseline=baseline, n_steps=n_steps, layer=layer)
    ds = to_dataset(result, loaded.input_channels, loaded.static_channels, loaded.lr_coords, loaded.hr_coords,
                    times[idx])
    ds = _unpad(ds, getattr(getattr(loaded, "pair", None), "padding", None))
    ds.attrs.update(finescale_run=run.run_id, period=str(period), n_steps=n_steps,
                    baseline="zeros (training mean)" if baseline is None else str(baseline))
    if write:
        ds.attrs["file"] = str(write_attributions(run, ds))
    return ds
