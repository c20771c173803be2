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


class T850Interpolation:
    """Bilinear interpolation of ``t_850`` to the target cells, plus a per-cell offset.

    Parameters
    ----------
    lat1, lon1 : 1-D axes of the predictor grid (ascending)
    lat2, lon2 : 2-D positions of the target cells
    """

    def __init__(self, lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray):
        from scipy.interpolate import RegularGridInterpolator  # noqa: F401  (fail here if missing)

        self.lat1, self.lon1 = np.asarray(lat1, float), np.asarray(lon1, float)
        lon2 = np.asarray(lon2, float)
        lon2 = np.where(lon2 < self.lon1.min() - 180, lon2 + 360, lon2)  # continuous across the date line
        self.shape = np.shape(lat2)
        self.points = np.stack([np.ravel(lat2), lon2.ravel()], axis=1)
        self.channel = PREDICTORS.index("t_850")
        self.offset = np.zeros(self.shape)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The interpolated ``t_850`` (no offset) of predictors ``x`` (T, C, h, w) -> (T, H, W)."""
        from scipy.interpolate import RegularGridInterpolator

        f = RegularGridInterpolator((self.lat1, self.lon1), np.moveaxis(x[:, self.channel], 0, -1), method="linear")
        return np.moveaxis(f(self.points), -1, 0).reshape(len(x), *self.shape)

    def fit(self, x: np.ndarray, tasmax: np.ndarray) -> "T850Interpolation":
        """The per-cell mean difference tasmax - interpolated t_850 over the training days (an
        interpolated predictor is only meaningful with that offset)."""
        self.offset = (tasmax - self.raw(x)).mean(0)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.raw(x) + self.offset
