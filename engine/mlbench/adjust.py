"""Bias adjustment of a GCM's predictors before a perfect-prognosis model sees them.

A model of the ESD experiment learns from *perfect* predictors (the upscaled RCM). The *imperfect*
test sets feed it the driving GCM's own fields, whose biases (a warmer, moister or calmer free
atmosphere) the model reads as climate: a +1 K GCM bias in t850 becomes a +1 K (or, through the
correlated humidity, more) error in tasmax. The classical perfect-prognosis answer, used e.g. for
DeepESD's CMIP5 projections (Baño-Medina et al. 2022), is to map each GCM predictor's distribution
onto the reference's over a common period before prediction. Here the common period is the test
folder's *historical* period (1981-2000), where both the GCM's imperfect predictors and the
reference's perfect ones (of the RCM driven by that same GCM) are in the archive; no target is used.

``mean_variance``: per predictor channel and predictor cell,
``x' = (x - mean_gcm) * std_ref / std_gcm + mean_ref``, with the moments of the historical period.
The climate-change signal of a future GCM file is kept (scaled by the variance ratio); only the
GCM's historical bias is removed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from engine.mlbench.protocol import MLBenchError, predictor_path

ADJUSTMENTS = ("none", "mean_variance")
REFERENCE_PERIOD = "historical"


class MeanVarianceAdjustment:
    """Maps predictors (T, C, h, w) of one GCM onto the reference's historical moments."""

    def __init__(self, gcm_hist: np.ndarray, ref_hist: np.ndarray):
        gcm_hist, ref_hist = np.asarray(gcm_hist, np.float64), np.asarray(ref_hist, np.float64)
        if gcm_hist.shape[1:] != ref_hist.shape[1:]:
            raise MLBenchError(f"predictor adjustment: the GCM's historical predictors are {gcm_hist.shape[1:]} "
                               f"(channels, lat, lon), the reference's {ref_hist.shape[1:]}; they must match")
        self.gcm_mean, self.ref_mean = gcm_hist.mean(0), ref_hist.mean(0)
        gcm_std, ref_std = gcm_hist.std(0), ref_hist.std(0)
        # a constant channel (std 0) keeps its variance: only its mean is moved
        self.ratio = np.where(gcm_std > 0, ref_std / np.where(gcm_std > 0, gcm_std, 1.0), 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if tuple(np.shape(x)[1:]) != self.gcm_mean.shape:
            raise MLBenchError(f"predictor adjustment fitted for {self.gcm_mean.shape} (channels, lat, lon); "
                               f"got predictors of shape {np.shape(x)}")
        return ((np.asarray(x, np.float64) - self.gcm_mean) * self.ratio + self.ref_mean).astype(np.float32)


def adjustment_for(kind: str, root: str | Path, mode: str, gcm: str):
    """The function applied to the predictors of a ``mode`` file of ``gcm`` (None for perfect
    predictors or ``kind="none"``). Fitted once per (kind, archive, mode, GCM) in a process: a run's
    submission and its scorecard ask for the same GCM's adjustment for every imperfect test file.
    The reference files' size and modification time are part of that key, so an archive written
    again at the same path (a regenerated stand-in) is fitted again."""
    stamps = tuple(_stamp(predictor_path(Path(root), REFERENCE_PERIOD, which, gcm)) for which in ("imperfect", "perfect"))
    return _adjustment_for(kind, str(root), mode, gcm, stamps)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None  # missing: _adjustment_for says which file and what is accepted
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _adjustment_for(kind: str, root: str, mode: str, gcm: str, stamps: tuple):
    if kind not in ADJUSTMENTS:
        raise MLBenchError(f"predictor_adjustment={kind!r} is not valid; accepted: {', '.join(ADJUSTMENTS)}")
    if kind == "none" or mode == "perfect":
        return None
    from engine.mlbench.experiments import _predictor_array
    from engine.mlbench.protocol import open_cf

    arrays = {}
    for which in ("imperfect", "perfect"):
        path = predictor_path(Path(root), REFERENCE_PERIOD, which, gcm)
        if not path.is_file():
            raise MLBenchError(f"predictor_adjustment={kind!r} needs {gcm}'s {REFERENCE_PERIOD} {which} predictors "
                               f"({path}), which are missing; use predictor_adjustment='none' or complete the archive")
        with open_cf(path) as ds:
            arrays[which] = _predictor_array(ds, path.name)
    return MeanVarianceAdjustment(arrays["imperfect"], arrays["perfect"])
