"""Quantile mapping applied to a field, checked by hand."""

import numpy as np

from engine.inference.corrections import BiasCorrection


def test_quantile_map_by_hand():
    corr = BiasCorrection("quantile_map")
    corr.q_model = np.array([0.0, 1.0, 2.0])[:, None, None] * np.ones((3, 1, 2))
    corr.q_truth = np.array([10.0, 20.0, 40.0])[:, None, None] * np.ones((3, 1, 2))
    corr.known = np.array([[True, False]])
    out = corr.apply(np.array([[[0.5, 0.5]], [[1.5, 7.0]], [[3.0, 3.0]], [[-1.0, -1.0]]]), times=None)
    # inside: linear between the quantiles; beyond: the end correction added; unknown cells unchanged
    np.testing.assert_allclose(out[:, 0, 0], [15.0, 30.0, 41.0, 9.0])
    np.testing.assert_allclose(out[:, 0, 1], [0.5, 7.0, 3.0, -1.0])
