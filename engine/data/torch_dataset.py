"""PyTorch datasets over paired data: random aligned patches for training, full domains in time
order for inference.

Everything is normalised once, up front, into float32 tensors held in memory, so ``__getitem__`` is
a few tensor slices (tens of microseconds) and data loading never waits on xarray.

Items are dicts (see ``docs/DEVELOPING.md``):

- ``x``: ``(C_in, h, w)`` for ``sample="spatial"``, ``(T, C_in, h, w)`` for
  ``sample="spatiotemporal"`` (``T = time_window`` consecutive LR steps ending at the target time;
  before the first step the first one repeats). Channels: the LR variable, the predictors, then the
  static fields block-averaged to the LR grid (:attr:`DownscalingDataset.input_channels`).
- ``static_hr``: ``(S, H, W)`` static fields on the HR grid (:attr:`DownscalingDataset.static_channels`).
- ``y``: ``(1, H, W)`` normalised target; ``mask``: ``(1, H, W)`` float, 1 = valid.
- ``time``: int, the index of the item's time step in :attr:`DownscalingDataset.times`.

NaN in inputs and targets become 0 (the mean after normalisation); the target's NaN are reported in
``mask`` so losses ignore them. Static fields are scaled by fixed physical constants (elevation in
km, land fraction as is), so they mean the same on every domain.

Example
-------
>>> ds = DownscalingDataset(pair, norm, ("2001-01-01", "2002-12-31"), patch_size=32,
...                         samples_per_epoch=512, seed=0)   # doctest: +SKIP
>>> item = ds[0]; item["x"].shape, item["y"].shape             # doctest: +SKIP
(torch.Size([3, 8, 8]), torch.Size([1, 32, 32]))
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.data.errors import DataError
from engine.data.splits import config_period, period_mask
from engine.data.timeaxis import fmt_times, stamp
from engine.data.timeaxis import keys as time_keys

#: Fixed scaling of static fields: value / scale (elevation in km).
STATIC_SCALE = {"elevation": 1000.0, "land_mask": 1.0}


def _fill(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, 0.0).astype(np.float32)


class DownscalingDataset(Dataset):
    """Samples of (LR input, HR target) from a :class:`~engine.data.pairing.PairedData`.

    Parameters
    ----------
    pair : PairedData
    normaliser : a fitted normaliser (:mod:`engine.data.normalise`)
    period : ``(start, end)`` ISO dates (inclusive), a sequence of times, or None for all times
    patch_size : HR patch edge (multiple of ``pair.scale``) for random training patches, or None
        for the full domain, one item per time step in order (inference, validation)
    samples_per_epoch : number of random patches per epoch (patch mode; default: one per time step)
    seed : patches are a function of ``(seed, epoch, index)`` only: deterministic and worker-safe
    sample : ``"spatial"`` or ``"spatiotemporal"``; None: spatiotemporal when ``time_window > 1``
    time_window : LR steps per item (spatiotemporal)
    """

    def __init__(
        self,
        pair,
        normaliser,
        period=None,
        patch_size: int | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        sample: str | None = None,
        time_window: int = 1,
    ) -> None:
        if sample is None:  # callers that pass only time_window (as the configuration allows)
            sample = "spatiotemporal" if int(time_window) > 1 else "spatial"
        if sample not in ("spatial", "spatiotemporal"):
            raise DataError(f"sample={sample!r} is not valid; accepted: spatial, spatiotemporal")
        if int(time_window) < 1 or (sample == "spatial" and time_window != 1):
            raise DataError(f"time_window={time_window!r} is not valid; spatial samples use 1, spatiotemporal >= 1")
        self.pair = pair
        self.normaliser = normaliser
        self.scale = s = int(pair.scale)
        self.sample = sample
        self.time_window = int(time_window)
        self.seed = int(seed)
        self.epoch = 0

        all_times = pair.times
        if period is None:
            sel = np.ones(all_times.size, dtype=bool)
        elif isinstance(period, (tuple, list)) and len(period) == 2 and all(isinstance(p, str) for p in period):
            sel = period_mask(all_times, period, "period")
        else:
            sel = np.isin(time_keys(all_times), time_keys(period))  # any calendar
            if not sel.any():
                raise DataError(f"none of the requested times is in the data ({fmt_times(all_times)})")
        self._t_index = np.flatnonzero(sel)  # positions in pair.times
        self.times = all_times[sel]

        H, W = pair.hr.sizes["lat"], pair.hr.sizes["lon"]
        h, w = pair.lr.sizes["lat"], pair.lr.sizes["lon"]
        if (h * s, w * s) != (H, W):
            raise DataError(f"LR grid {h} x {w} times scale {s} does not match the HR grid {H} x {W}")
        self.hr_shape, self.lr_shape = (H, W), (h, w)
        if patch_size is not None:
            patch_size = int(patch_size)
            if patch_size % s or patch_size < s:
                raise DataError(f"patch_size={patch_size} is not a multiple of scale={s}; accepted: multiples of {s}")
            if patch_size > min(H, W):
                raise DataError(
                    f"patch_size={patch_size} is larger than the HR domain {H} x {W}; "
                    f"accepted: multiples of {s} up to {min(H, W) - min(H, W) % s}, or None for the full domain"
                )
        self.patch_size = patch_size
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch else len(self.times)

        # Inputs: all time steps (windows may reach before the period), normalised once.
        lr_norm = normaliser.lr(pair.lr[pair.lr_channels])
        lr_vals = np.stack([_fill(lr_norm[v].values) for v in pair.lr_channels], axis=1)  # (T, C, h, w)
        self.static_channels = list(pair.static.data_vars)
        st = [
            _fill(pair.static[n].values / STATIC_SCALE.get(n, 1.0)) for n in self.static_channels
        ]
        static_hr = np.stack(st) if st else np.zeros((0, H, W), np.float32)
        static_lr = static_hr.reshape(len(st), h, s, w, s).mean(axis=(2, 4)) if st else np.zeros((0, h, w), np.float32)
        x = np.concatenate([lr_vals, np.broadcast_to(static_lr, (lr_vals.shape[0],) + static_lr.shape)], axis=1)
        self.input_channels = list(pair.lr_channels) + self.static_channels
        self._x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self._static_hr = torch.from_numpy(np.ascontiguousarray(static_hr, dtype=np.float32))

        hr = pair.hr.isel(time=self._t_index)
        y = normaliser.hr(hr).values
        valid = np.isfinite(y) & pair.mask.values[None]
        self._y = torch.from_numpy(_fill(y)[:, None])
        self._mask = torch.from_numpy(valid[:, None])  # bool; converted per item

    # -- torch Dataset ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Draw a different (but reproducible) set of patches for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.patch_size is not None else len(self.times)

    def _window(self, t_all: int) -> torch.Tensor:
        if self.sample == "spatial":
            return self._x[t_all]
        idx = np.clip(np.arange(t_all - self.time_window + 1, t_all + 1), 0, None)
        return self._x[torch.from_numpy(idx)]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        if self.patch_size is None:
            k = i
            x = self._window(int(self._t_index[k]))
            return {
                "x": x,
                "static_hr": self._static_hr,
                "y": self._y[k],
                "mask": self._mask[k].float(),
                "time": k,
                "offset": torch.zeros(2, dtype=torch.long),
            }
        rng = np.random.default_rng((self.seed, self.epoch, i))
        s, p = self.scale, self.patch_size
        q = p // s
        h, w = self.lr_shape
        for _ in range(10):  # avoid patches with no valid target (e.g. all sea), within reason
            k = int(rng.integers(len(self.times)))
            ly, lx = int(rng.integers(h - q + 1)), int(rng.integers(w - q + 1))
            m = self._mask[k, :, ly * s : ly * s + p, lx * s : lx * s + p]
            if bool(m.any()):
                break
        x = self._window(int(self._t_index[k]))[..., ly : ly + q, lx : lx + q]
        hy, hx = ly * s, lx * s
        return {
            "x": x,
            "static_hr": self._static_hr[:, hy : hy + p, hx : hx + p],
            "y": self._y[k, :, hy : hy + p, hx : hx + p],
            "mask": m.float(),
            "time": k,
            # Where the patch sits in the HR grid: location-specific layers (LCB) need it.
            "offset": torch.tensor([hy, hx], dtype=torch.long),
        }

    # -- coordinates for building outputs ----------------------------------------------------------
    @property
    def lat(self) -> np.ndarray:
        """HR latitudes (H,)."""
        return self.pair.hr.lat.values

    @property
    def lon(self) -> np.ndarray:
        """HR longitudes (W,)."""
        return self.pair.hr.lon.values

    def __repr__(self) -> str:
        mode = f"patches {self.patch_size}" if self.patch_size else "full domain"
        return (
            f"DownscalingDataset({len(self)} items, {mode}, x{self.scale}, inputs {self.input_channels}, "
            f"static {self.static_channels}, {stamp(self.times[0])[:10]}..{stamp(self.times[-1])[:10]})"
        )


class Datasets(NamedTuple):
    """What :func:`build_datasets` returns."""

    pair: object
    normaliser: object
    train: DownscalingDataset
    val: DownscalingDataset
    test: DownscalingDataset


def build_datasets(
    data_cfg,
    samples_per_epoch: int | None = None,
    seed: int = 0,
    pair=None,
    normaliser=None,
    periods: Sequence[str] = ("train", "val", "test"),
) -> Datasets:
    """Pair, fit the normaliser on the training period, and build the three datasets.

    ``train`` draws random patches of ``data_cfg.patch_size`` (full domain if None); ``val`` and
    ``test`` give full domains in time order. A fitted ``normaliser`` (e.g. from a run's
    ``normalisation.json``) is used as is.
    """
    from engine.data.normalise import create
    from engine.data.pairing import make_pair

    pair = make_pair(data_cfg) if pair is None else pair
    train_period = config_period(data_cfg, "train")
    if normaliser is None:
        normaliser = create(data_cfg.normalisation).fit(pair, train_period)
    common = dict(sample=data_cfg.sample, time_window=data_cfg.time_window)
    train = DownscalingDataset(
        pair, normaliser, train_period, data_cfg.patch_size, samples_per_epoch, seed, **common
    )
    val = DownscalingDataset(pair, normaliser, config_period(data_cfg, "val"), None, None, seed, **common)
    test = DownscalingDataset(pair, normaliser, config_period(data_cfg, "test"), None, None, seed, **common)
    return Datasets(pair, normaliser, train, val, test)
