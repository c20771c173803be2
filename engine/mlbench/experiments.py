"""The benchmark's experiments as configurations: train on an experiment's data, predict every test
predictor file, write the submission.

A configuration (:class:`MLBenchConfig`) names the domain, the training experiment and a model of
the zoo; :func:`train` runs it into a run folder::

    <runs>/mlbench/<domain>_<experiment>_<model>_s<seed>/
        mlbench.json               the configuration, the archive used, losses, timings
        experiment.yaml            the engine's ExperimentConfig (model, optimiser, loss, epochs)
        normalisation.npz          predictor mean/std per cell, target mean/std (training period)
        checkpoints/<var>.pt       one network per target variable (tasmax, pr), as the benchmark's DeepESD
        submission/<domain>_Domain/<experiment>/<period>/<mode>/Predictions_pr_tasmax_<GCM>_<years>.nc

Predictor -> target models do not fit the engine's pairing (the predictors are not a coarsened
target, the target grid is Lambert inside a lat/lon predictor grid); this loop reuses the engine's
pieces instead: :func:`engine.models.build_model` (any zoo model, DeepESD included), the loss
registry, :func:`engine.training.loop.make_optimizer` / ``make_scheduler`` / ``save_checkpoint``.
Predictors are standardised per cell over the training period (as the benchmark's DeepESD script
does), targets by their training mean and standard deviation; precipitation is clipped at 0.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.config import ExperimentConfig, ModelConfig, TrainingConfig
from engine.files import write_text_atomic
from engine.mlbench.download import download_archive
from engine.mlbench.protocol import (
    PREDICTORS, VARIABLES, MLBenchError, all_test_inputs, check_predictors, get_domain, get_experiment, open_cf,
    submission_file, predictor_path, train_files,
)

# Named models: the benchmark's reference and zoo models that fit 16 x 16 -> 128 x 128 (x8).
# DeepESD's single-filter last convolution feeds its activation: with ReLU, Adam at lr 1e-3 switched
# off >99 % of it in the first epoch on the stand-in, and at 3e-4 it needed ~4x the epochs; with GELU
# (no dead units) at 3e-3 it reached 1.5 K training RMSE in 3 epochs where ReLU at 3e-4 had 5.7 K
# (measured on the ALPS stand-in). The preset therefore uses GELU; "deepesd-relu" is the benchmark
# script's exact activation.
DEFAULT_LR = {"deepesd": 3e-3, "deepesd-relu": 3e-4}
MODEL_PRESETS = {
    "deepesd": {"backbone": "deepesd", "upsampling": "pin", "activation": "gelu"},
    "deepesd-relu": {"backbone": "deepesd", "upsampling": "pin", "activation": "relu"},
    "resnet": {"backbone": "resnet", "upsampling": "spc", "filters": 8, "blocks": 2, "residual": False},
    "convnet": {"backbone": "convnet", "upsampling": "spc", "filters": 8, "blocks": 2, "residual": False},
}


@dataclass
class MLBenchConfig:
    """One benchmark run: a model trained on one experiment of one domain.

    ``model`` is a preset name (:data:`MODEL_PRESETS`) or ``backbone:upsampling`` of the zoo;
    ``root`` the unpacked ``<domain>_domain`` archive (None: the cache, downloading it once).
    """

    domain: str = "ALPS"
    experiment: str = "ESD_pseudo_reality"
    model: str = "deepesd"
    variables: tuple[str, ...] = VARIABLES
    orography: bool = True
    epochs: int = 20
    batch_size: int = 16
    samples_per_epoch: int | None = None  # None: every training day once per epoch
    lr: float | None = None  # None: DEFAULT_LR of the model, else 1e-3
    loss: str = "mse"
    seed: int = 0
    threads: int | None = None
    root: str | None = None
    model_options: dict = field(default_factory=dict)

    def validate(self) -> "MLBenchConfig":
        get_domain(self.domain)
        get_experiment(self.experiment)
        bad = [v for v in self.variables if v not in VARIABLES]
        if bad or not self.variables:
            raise MLBenchError(f"variables {list(self.variables)} are not valid; accepted: {', '.join(VARIABLES)}")
        self.model_config()
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise MLBenchError(f"{name}={getattr(self, name)} is not valid; expected an integer >= 1")
        return self

    def model_config(self) -> ModelConfig:
        from engine.registry import BACKBONES, UPSAMPLERS

        import engine.models  # noqa: F401  (registers the zoo)

        if self.model in MODEL_PRESETS:
            options = dict(MODEL_PRESETS[self.model])
        elif ":" in self.model:
            backbone, upsampling = self.model.split(":", 1)
            options = {"backbone": backbone, "upsampling": upsampling, "residual": False}
        else:
            raise MLBenchError(f"unknown ML-Bench model {self.model!r}; accepted: {', '.join(MODEL_PRESETS)} "
                               f"or backbone:upsampling with backbones {', '.join(BACKBONES.names())} and "
                               f"upsampling {', '.join(UPSAMPLERS.names())}")
        options.update(self.model_options)
        for key, registry in (("backbone", BACKBONES), ("upsampling", UPSAMPLERS)):
            if options[key] not in registry:
                raise MLBenchError(f"unknown {key} {options[key]!r} in model {self.model!r}; accepted: "
                                   f"{', '.join(registry.names())}")
        return ModelConfig(**options)

    def experiment_config(self) -> ExperimentConfig:
        """The engine's configuration of the network and its training (optimiser, schedule, loss)."""
        return ExperimentConfig(
            name=self.run_name, model=self.model_config(),
            training=TrainingConfig(loss=self.loss, lr=self.learning_rate, epochs=self.epochs, batch_size=self.batch_size,
                                    seed=self.seed, optimizer="adam", lr_schedule="cosine"))

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR.get(self.model, 2e-3)

    @property
    def run_name(self) -> str:
        return f"{self.domain}_{self.experiment}_{self.model.replace(':', '-')}_s{self.seed}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["variables"] = list(self.variables)
        return d

    @classmethod
    def from_dict(cls, raw: dict) -> "MLBenchConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MLBenchError(f"unknown ML-Bench configuration key(s) {unknown}; accepted: {', '.join(sorted(known))}")
        raw = dict(raw)
        if "variables" in raw:
            raw["variables"] = tuple(raw["variables"])
        return cls(**raw)


# -- data -------------------------------------------------------------------------------------------

def _predictor_array(ds, name: str) -> np.ndarray:
    check_predictors(ds, name)
    return np.stack([ds[v].transpose("time", "lat", "lon").values for v in PREDICTORS], axis=1).astype(np.float32)


def load_training(cfg: MLBenchConfig) -> dict:
    """Predictors (T, C, 16, 16), targets {var: (T, H, W)}, orography (H, W), times, archive root."""
    dom, exp = get_domain(cfg.domain), get_experiment(cfg.experiment)
    root = Path(cfg.root) if cfg.root else download_archive(cfg.domain)
    files = train_files(root, dom, exp)
    with open_cf(files["predictors"]) as p, open_cf(files["target"]) as t, open_cf(files["static"]) as s:
        x = _predictor_array(p, files["predictors"].name)
        missing = [v for v in cfg.variables if v not in t]
        if missing:
            raise MLBenchError(f"{files['target'].name} lacks {missing}; it has {list(t.data_vars)}")
        if len(p.time) != len(t.time) or not all(a == b for a, b in zip(p.indexes["time"], t.indexes["time"])):
            raise MLBenchError(f"{files['predictors'].name} and {files['target'].name} have different time axes")
        y = {v: t[v].transpose("time", *dom.spatial_dims).values.astype(np.float32) for v in cfg.variables}
        orog = s["orog"].transpose(*dom.spatial_dims).values.astype(np.float32)
        lr_grid = (p["lat"].values, p["lon"].values)
    return {"x": x, "y": y, "orog": orog, "root": root, "lr_grid": lr_grid}


def fit_normalisation(x: np.ndarray, y: dict) -> dict:
    """Per-cell mean and standard deviation over the training days, of every predictor channel and
    of each target (a network then learns anomalies; with one global scale, DeepESD spent its first
    epochs on the time-mean map)."""
    mean, std = x.mean(0), x.std(0)
    stats = {"x_mean": mean, "x_std": np.where(std > 0, std, 1.0).astype(np.float32)}
    for v, a in y.items():
        sd = a.std(0)
        stats[f"{v}_mean"] = a.mean(0).astype(np.float32)
        stats[f"{v}_std"] = np.where(sd > 1e-6, sd, max(float(sd.max()), 1e-6)).astype(np.float32)
    return stats


def _inputs(x, stats, orog, use_orog):
    xn = torch.from_numpy((x - stats["x_mean"]) / stats["x_std"])
    static = torch.from_numpy(((orog - 1000.0) / 1000.0)[None]) if use_orog else None
    return xn, static


# -- training ----------------------------------------------------------------------------------------

def train(cfg: MLBenchConfig, runs_root: str | Path | None = None, log=print) -> Path:
    """Train ``cfg`` (one network per variable), predict every test file, write the submission.

    Returns the run folder.
    """
    from engine.models import build_model
    from engine.runs import default_root
    from engine.training.losses import build_loss
    from engine.training.loop import make_optimizer, make_scheduler, save_checkpoint

    cfg.validate()
    run = Path(runs_root if runs_root is not None else default_root()) / "mlbench" / cfg.run_name
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    ecfg = cfg.experiment_config()
    write_text_atomic(run / "experiment.yaml", ecfg.to_yaml())
    data = load_training(cfg)
    stats = fit_normalisation(data["x"], data["y"])
    np.savez(run / "normalisation.npz", **stats)
    xn, static = _inputs(data["x"], stats, data["orog"], cfg.orography)
    H, W = data["orog"].shape
    scale = H // xn.shape[-2]
    loss_fn = build_loss(cfg.loss)
    info = {"config": cfg.to_dict(), "archive": str(data["root"]), "scale": scale, "grid_shape": [H, W],
            "train_days": int(xn.shape[0]), "losses": {}, "seconds": {}}
    for var in cfg.variables:
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        net = build_model(ecfg.model, xn.shape[1], 1 if cfg.orography else 0, scale, grid_shape=(H, W))
        y = torch.from_numpy((data["y"][var] - stats[f"{var}_mean"]) / stats[f"{var}_std"])[:, None]
        opt = make_optimizer(ecfg, net.parameters())
        sched = make_scheduler(ecfg, opt)
        gen = torch.Generator().manual_seed(cfg.seed)
        mask = torch.ones(1, 1, H, W)
        history = []
        for epoch in range(cfg.epochs):
            net.train()
            total, n = 0.0, 0
            order = torch.randperm(xn.shape[0], generator=gen)
            if cfg.samples_per_epoch:
                order = torch.cat([order, torch.randperm(xn.shape[0], generator=gen)])[: cfg.samples_per_epoch]
            for idx in order.split(cfg.batch_size):
                s = None if static is None else static.expand(len(idx), -1, -1, -1)
                loss = loss_fn(net(xn[idx], s), y[idx], mask.expand(len(idx), -1, -1, -1))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, n = total + loss.item() * len(idx), n + len(idx)
            if sched is not None:
                sched.step()
            history.append(total / n)
            log(f"[{cfg.run_name}] {var} epoch {epoch + 1}/{cfg.epochs} loss {total / n:.4f}")
        save_checkpoint(run / "checkpoints" / f"{var}.pt", {"model": net.state_dict(), "variable": var,
                                                            "model_config": asdict(ecfg.model)})
        info["losses"][var] = history
        info["seconds"][var] = round(time.perf_counter() - t0, 1)
    write_text_atomic(run / "mlbench.json", json.dumps(info, indent=1))
    predict_run(run)
    return run


def load_run(run: str | Path) -> tuple[MLBenchConfig, dict]:
    run = Path(run)
    path = run / "mlbench.json"
    if not path.is_file():
        raise MLBenchError(f"{run} is not an ML-Bench run folder (no mlbench.json); train one with "
                           "python -m engine mlbench train ...")
    info = json.loads(path.read_text())
    return MLBenchConfig.from_dict(info["config"]), info


def predictor_fn(run: str | Path):
    """A function predictors-Dataset -> {var: (T, H, W) array in physical units} for a trained run."""
    from engine.models import build_model
    from engine.training.loop import load_checkpoint

    run = Path(run)
    cfg, info = load_run(run)
    stats = dict(np.load(run / "normalisation.npz"))
    H, W = info["grid_shape"]
    model_cfg = cfg.model_config()
    with open_cf(train_files(Path(info["archive"]), get_domain(cfg.domain), get_experiment(cfg.experiment))["static"]) as s:
        orog = s["orog"].transpose(*get_domain(cfg.domain).spatial_dims).values.astype(np.float32)
    nets = {}
    for var in cfg.variables:
        net = build_model(model_cfg, len(PREDICTORS), 1 if cfg.orography else 0, info["scale"], grid_shape=(H, W))
        net.load_state_dict(load_checkpoint(run / "checkpoints" / f"{var}.pt")["model"])
        nets[var] = net.eval()

    def predict(ds, name: str = "predictors") -> dict[str, np.ndarray]:
        x = _predictor_array(ds, name)
        if x.shape[-2:] != stats["x_mean"].shape[-2:]:
            raise MLBenchError(f"{name}: predictors on a {x.shape[-2]}x{x.shape[-1]} grid; the run was trained on "
                               f"{stats['x_mean'].shape[-2]}x{stats['x_mean'].shape[-1]}")
        xn, static = _inputs(x, stats, orog, cfg.orography)
        out = {}
        with torch.no_grad():
            for var, net in nets.items():
                parts = []
                for chunk in xn.split(64):
                    s = None if static is None else static.expand(len(chunk), -1, -1, -1)
                    parts.append(net(chunk, s)[:, 0].numpy())
                a = np.concatenate(parts) * stats[f"{var}_std"] + stats[f"{var}_mean"]
                out[var] = np.clip(a, 0, None) if var == "pr" else a
        return out

    return predict


def predict_run(run: str | Path) -> list[Path]:
    """Write the run's prediction for every test predictor file of its domain, in the submission
    format, each checked against the template. Variables the run did not train are refused."""
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
            arrays = predict(ds, src.name)
            times = ds.indexes["time"]
        path = submission_file(run / "submission", dom, exp, period, mode, gcm)
        write_prediction(arrays, times, dom.name, path, template,
                         attrs={"source": f"finescale {cfg.model} ({cfg.run_name})", "predictors": str(src)})
        check_prediction_file(path, dom.name, times=times)
        written.append(path)
    return written
