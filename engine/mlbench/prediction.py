"""Predictions of a trained ML-Bench run: every test predictor file of its domain through the run's
networks, written in the benchmark's submission format (:mod:`engine.mlbench.submission`).

:func:`predictor_fn` turns a run folder (:mod:`engine.mlbench.experiments`: ``mlbench.json``,
``normalisation.npz``, ``checkpoints/<var>.pt``) into a function from predictor arrays to target
fields (the ensemble members of a diffusion run); :func:`predict_run` applies it to every test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.mlbench.experiments import _inputs, _predictor_array, load_run
from engine.mlbench.protocol import (
    PREDICTORS, VARIABLES, MLBenchError, all_test_inputs, get_domain, get_experiment, open_cf, predictor_path,
    submission_file, train_files,
)

# Days per network call at prediction. 16 x 128 x 128 activations stay below glibc's mmap threshold
# (32 MiB): with 64 days every HR tensor was a fresh mmap whose pages the kernel zeroed on first
# touch (a third of the time in the kernel); 16 days ran the resnet preset 2.3x faster with the
# same bits (measured on a 365-day test file, one thread).
PREDICT_CHUNK = 16


def predictor_fn(run: str | Path):
    """A function predictors-Dataset -> {var: (T, H, W) array in physical units} for a trained run
    ((member, T, H, W) for a generative run: ``cfg.members`` samples, :mod:`engine.mlbench.generative`)."""
    from engine.mlbench import generative
    from engine.models import build_model
    from engine.training.loop import load_checkpoint

    run = Path(run)
    cfg, info = load_run(run)
    stats = dict(np.load(run / "normalisation.npz"))
    H, W = info["grid_shape"]
    model_cfg = cfg.model_config()
    with open_cf(train_files(Path(info["archive"]), get_domain(cfg.domain), get_experiment(cfg.experiment))["static"]) as s:
        orog = s["orog"].transpose(*get_domain(cfg.domain).spatial_dims).values.astype(np.float32)
    from engine.mlbench.interp import PredictorAlignment, T850Interpolation
    from engine.mlbench.standin import _latlon, target_template

    lat2, lon2 = _latlon(target_template(get_domain(cfg.domain)), get_domain(cfg.domain))
    nets = {}
    for var in cfg.variables:
        if cfg.learning == "diffusion":
            net = generative.build(model_cfg, len(PREDICTORS), 1 if cfg.orography else 0, info["scale"])
        else:
            net = build_model(model_cfg, len(PREDICTORS), 1 if cfg.orography else 0, info["scale"], grid_shape=(H, W))
        net.load_state_dict(load_checkpoint(run / "checkpoints" / f"{var}.pt")["model"])
        nets[var] = net.eval()

    def predict(ds, name: str = "predictors", adjust=None) -> dict[str, np.ndarray]:
        """``adjust``: a function applied to the predictor array first (:mod:`engine.mlbench.adjust`)."""
        x = _predictor_array(ds, name)
        if adjust is not None:
            x = adjust(x)
        if x.shape[-2:] != stats["x_mean"].shape[-2:]:
            raise MLBenchError(f"{name}: predictors on a {x.shape[-2]}x{x.shape[-1]} grid; the run was trained on "
                               f"{stats['x_mean'].shape[-2]}x{stats['x_mean'].shape[-1]}")
        # runs trained before the alignment existed have no flag: they saw the predictors as published
        x_net = PredictorAlignment(ds["lat"].values, ds["lon"].values, lat2, lon2)(x) \
            if info.get("aligned_predictors") else x
        xn, static = _inputs(x_net, stats, orog, cfg.orography)
        first_guess = {}
        if "tasmax_interp_offset" in stats:
            interp = T850Interpolation(ds["lat"].values, ds["lon"].values, lat2, lon2)
            interp.offset = stats["tasmax_interp_offset"]
            first_guess["tasmax"] = interp(x)
        out = {}
        with torch.inference_mode():
            for var, net in nets.items():
                if cfg.learning == "diffusion":
                    a = generative.sample_members(net, xn, static, cfg.members, seed=cfg.seed, chunk=PREDICT_CHUNK).numpy()
                else:
                    parts = []
                    for chunk in xn.split(PREDICT_CHUNK):
                        s = None if static is None else static.expand(len(chunk), -1, -1, -1)
                        parts.append(net(chunk, s)[:, 0].numpy())
                    a = np.concatenate(parts)
                a = a * stats[f"{var}_std"] + stats[f"{var}_mean"] + first_guess.get(var, 0.0)
                out[var] = np.clip(a, 0, None) if var == "pr" else a
        return out

    return predict


def predict_run(run: str | Path) -> list[Path]:
    """Write the run's prediction for every test predictor file of its domain, in the submission
    format, each checked against the template. Variables the run did not train are refused."""
    from engine.mlbench.adjust import adjustment_for
    from engine.mlbench.submission import check_prediction_file, write_prediction
    from engine.mlbench.standin import target_template

    run = Path(run)
    cfg, info = load_run(run)
    missing = [v for v in VARIABLES if v not in cfg.variables]
    if missing:
        raise MLBenchError(f"a submission needs both {', '.join(VARIABLES)}; run {run.name} trained only "
                           f"{list(cfg.variables)}")
    dom, exp = get_domain(cfg.domain), get_experiment(cfg.experiment)
    root = Path(info["archive"])
    predict = predictor_fn(run)
    template = target_template(dom)
    written = []
    for period, mode, gcm in all_test_inputs(dom):
        src = predictor_path(root, period, mode, gcm)
        with open_cf(src) as ds:
            arrays = predict(ds, src.name, adjust=adjustment_for(cfg.predictor_adjustment, root, mode, gcm))
            times = ds.indexes["time"]
        path = submission_file(run / "submission", dom, exp, period, mode, gcm)
        write_prediction(arrays, times, dom.name, path, template,
                         attrs={"source": f"finescale {cfg.model} ({cfg.run_name})", "predictors": str(src),
                                "predictor_adjustment": cfg.predictor_adjustment if mode == "imperfect" else "none"})
        check_prediction_file(path, dom.name, times=times, generative=cfg.learning == "diffusion",
                              members=cfg.members, template=template)
        written.append(path)
    return written
