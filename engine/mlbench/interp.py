"""The interpolated 850 hPa temperature on the target grid: the ML-Bench interpolation baseline and
the first guess a network may correct (``MLBenchConfig.residual="interpolation"``).

The predictors lie on a regular lat/lon grid, the target on the domain's own grid (Lambert on ALPS):
the interpolation is bilinear in latitude/longitude at each target cell's true position, not an
index-space upsampling by the scale factor (the two grids are not nested).

Example
-------
>>> interp = T850Interpolation(lat1, lon1, lat2, lon2)        # doctest: +SKIP
>>> interp.fit(x_train, tasmax_train)                          # per-cell offset over training
>>> first_guess = interp(x_test)                               # (T, H, W), K
"""

from __future__ import annotations

import numpy as np

from engine.mlbench.protocol import PREDICTORS


def bilinear_weights(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
    """Bilinear weights from the regular grid ``lat1`` x ``lon1`` (ascending 1-D axes) to the points
    ``lat2``, ``lon2`` (any shape), as a sparse (points x grid cells) matrix: applying them to every
    day is one sparse product (scipy's RegularGridInterpolator re-locates every point for every
    call, ~100x slower on a test file)."""
    from scipy.sparse import csr_matrix

    lat1, lon1 = np.asarray(lat1, float), np.asarray(lon1, float)
    lon2 = np.asarray(lon2, float)
    lon2 = np.where(lon2 < lon1.min() - 180, lon2 + 360, lon2)  # continuous across the date line
    (i, fy), (j, fx) = _locate(lat1, np.ravel(lat2), "latitude"), _locate(lon1, lon2.ravel(), "longitude")
    rows = np.repeat(np.arange(i.size), 4)
    cols = np.stack([i * len(lon1) + j, i * len(lon1) + j + 1, (i + 1) * len(lon1) + j,
                     (i + 1) * len(lon1) + j + 1], axis=1).ravel()
    w = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1).ravel()
    return csr_matrix((w, (rows, cols)), shape=(i.size, len(lat1) * len(lon1)))


class PredictorAlignment:
    """All predictor channels interpolated to the centres of the target grid's ``scale`` x ``scale``
    blocks, so that target cell (i, j) lies under predictor cell (i // scale, j // scale), which is
    what the zoo's upsampling networks assume.

    The archive's predictor grid is not nested with the target grid: on ALPS the 16 x 16 grid spans
    29-59 N while the Lambert target spans 36.5-51.1 N, so without this a network would place
    predictors up to 5 coarse cells away from the target cells they drive. DeepESD (a dense layer
    to every target cell) learns any placement and is given the predictors as published.

    Parameters
    ----------
    lat1, lon1 : 1-D axes of the predictor grid (ascending)
    lat2, lon2 : 2-D positions of the target cells; their shape a multiple of the predictor grid's
    """

    def __init__(self, lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
        (h, w), (H, W) = (len(lat1), len(lon1)), np.shape(lat2)
        if H % h or W % w:
            raise ValueError(f"the target grid {H}x{W} is not a multiple of the predictor grid {h}x{w}")
        blocks = lambda a: np.asarray(a, float).reshape(h, H // h, w, W // w)  # noqa: E731
        lat_c = blocks(lat2).mean(axis=(1, 3))
        # circular mean: a block that straddles the date line keeps its longitude
        lon_c = np.rad2deg(np.angle(np.exp(1j * np.deg2rad(blocks(lon2))).mean(axis=(1, 3))))
        self.grid = (h, w)
        self.weights = bilinear_weights(lat1, lon1, lat_c, lon_c)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Predictors ``x`` (T, C, h, w) on the archive's grid -> (T, C, h, w) at the block centres."""
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"predictors on a {x.shape[-2]}x{x.shape[-1]} grid; the alignment was built for "
                             f"{self.grid[0]}x{self.grid[1]}")
        t, c, h, w = x.shape
        flat = np.asarray(x, dtype=np.float64).reshape(t * c, h * w)
        return (self.weights @ flat.T).T.reshape(t, c, h, w).astype(np.float32)


class T850Interpolation:
    """Bilinear interpolation of ``t_850`` to the target cells, plus a per-cell offset.

    Parameters
    ----------
    lat1, lon1 : 1-D axes of the predictor grid (ascending)
    lat2, lon2 : 2-D positions of the target cells
    """

    def __init__(self, lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
        self.shape = np.shape(lat2)
        self.grid = (len(lat1), len(lon1))
        self.weights = bilinear_weights(lat1, lon1, lat2, lon2)  # built once, one sparse product per call
        self.channel = PREDICTORS.index("t_850")
        self.offset = np.zeros(self.shape)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The interpolated ``t_850`` (no offset) of predictors ``x`` (T, C, h, w) -> (T, H, W)."""
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"predictors on a {x.shape[-2]}x{x.shape[-1]} grid; the interpolation was built for "
                             f"{self.grid[0]}x{self.grid[1]}")
        t850 = np.asarray(x[:, self.channel], dtype=np.float64).reshape(len(x), -1)
        return (self.weights @ t850.T).T.reshape(len(x), *self.shape)

    def fit(self, x: np.ndarray, tasmax: np.ndarray) -> "T850Interpolation":
        """The per-cell mean difference tasmax - interpolated t_850 over the training days (an
        interpolated predictor is only meaningful with that offset)."""
        self.offset = (tasmax - self.raw(x)).mean(0)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.raw(x) + self.offset


def _locate(axis: np.ndarray, values: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour index and fractional distance of ``values`` on an ascending ``axis``;
    values outside the axis are refused (no extrapolation)."""
    if np.any(values < axis[0]) or np.any(values > axis[-1]):
        raise ValueError(f"target {what}s {values.min():.3f}..{values.max():.3f} lie outside the predictor grid's "
                         f"{axis[0]:.3f}..{axis[-1]:.3f}")
    i = np.clip(np.searchsorted(axis, values, side="right") - 1, 0, len(axis) - 2)
    return i, (values - axis[i]) / (axis[i + 1] - axis[i])
