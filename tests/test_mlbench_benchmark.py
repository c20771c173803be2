"""The ML-Bench benchmark's choice of its zoo model and its precipitation check
(``benchmarks/mlbench.py``), worked out by hand without training."""

from __future__ import annotations

import json

import pandas as pd

from benchmarks.mlbench import check_targets, choose_zoo


def _run(tmp_path, name, tasmax, pr):
    path = tmp_path / name
    path.mkdir()
    info = {"val_rmse": {"tasmax": tasmax, "pr": pr}, "seconds": {"tasmax": 10.0, "pr": 20.0, "predict": 5.0}}
    (path / "mlbench.json").write_text(json.dumps(info))
    return path


def test_zoo_candidates_ranked_by_their_best_held_out_epochs(tmp_path):
    runs = {"a": _run(tmp_path, "a", [2.0, 1.0], [3.0, 2.0]),   # best 1.0, 2.0: best in both
            "b": _run(tmp_path, "b", [1.5], [2.2]),             # 1.5 / 1.0, 2.2 / 2.0 -> (1.5 + 1.1) / 2
            "c": _run(tmp_path, "c", [1.2], [2.0])}             # (1.2 + 1.0) / 2 = 1.1
    table = choose_zoo(runs)
    assert list(table.index) == ["a", "c", "b"]
    assert table.loc["a", "score"] == 1.0
    assert abs(table.loc["b", "score"] - 1.3) < 1e-12 and abs(table.loc["c", "score"] - 1.1) < 1e-12
    assert table.loc["a", "train_seconds"] == 30.0  # training of both variables, not the prediction
    tie = choose_zoo({"y": _run(tmp_path, "y", [1.0], [1.0]), "x": _run(tmp_path, "x", [1.0], [1.0])})
    assert list(tie.index) == ["y", "x"]  # a tie keeps the order given


def test_pr_check_fails_a_model_no_better_than_climatology():
    keys = {"experiment": "ESD_pseudo_reality", "test": "t", "period": "historical", "mode": "perfect", "gcm": "G"}
    table = pd.DataFrame([{"model": "m", **keys, "pr_rmse": 1.9, "tasmax_rmse": 1.0, "tasmax_ralsd": 1.0},
                          {"model": "climatology", **keys, "pr_rmse": 1.89, "tasmax_rmse": 5.0, "tasmax_ralsd": 9.0},
                          {"model": "interpolation", **keys, "pr_rmse": float("nan"), "tasmax_rmse": 2.0,
                           "tasmax_ralsd": 2.0}])
    checks = {text: ok for text, ok, _ in check_targets(table, ["m"])}
    assert checks["m ESD_pseudo_reality: pr_rmse < climatology in all 1 test sets"] is False
    assert checks["m ESD_pseudo_reality: tasmax_rmse < interpolation in all 1 test sets"] is True
    table.loc[0, "pr_rmse"] = 1.5
    checks = {text: ok for text, ok, _ in check_targets(table, ["m"])}
    assert checks["m ESD_pseudo_reality: pr_rmse < climatology in all 1 test sets"] is True
