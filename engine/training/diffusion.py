"""The diffusion trainer (``training.learning="diffusion"``): conditional or residual diffusion.

The model is :class:`engine.models.diffusion.DiffusionDownscaler`, trained with the standard
noise-prediction objective (masked MSE between the true and the predicted noise, timesteps uniform
over ``model.diffusion_steps``). With ``model.regression_run`` (a run id in the same run store;
never a path) the mean comes from that run's best checkpoint, frozen, and its stored normalisation
is reused (the regression predicts in those units); the diffusion model learns the residual
(CorrDiff). Without it, the mean is the interpolated LR target (DeepR, DPDM). Either part trains
alone: the regression is an ordinary supervised run.

Run-store bookkeeping is the supervised trainer's (:class:`engine.training.loop.EpochLoop`): events
("start", "step", "epoch"), ``normalisation.json``, status, atomic ``checkpoints/best.pt`` /
``last.pt``, resume after the last completed epoch. Checkpoints also carry ``learning``,
``regression`` (the regression run's model configuration and id, so that a diffusion checkpoint is
self-contained) and the whole model's weights (regression included).

Validation, per epoch: ``val_loss`` is the noise-prediction loss on the validation fields with fixed
timesteps and noise (comparable across epochs; it selects ``best.pt``); ``val_rmse`` is the RMSE in
physical units of one sample per field (at most :data:`VAL_FIELDS` fields, :data:`VAL_STEPS` DDIM
steps, to keep validation cheap).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.config import ExperimentConfig
from engine.models import build_model, count_parameters
from engine.models.diffusion import build_diffusion
from engine.runs import Run, RunStore
from engine.training.loop import (
    EpochLoop,
    TrainingError,
    autocast,
    configure,
    load_checkpoint,
    make_train_loader,
    make_fabric,
    make_optimizer,
    prepare_data,
    to_device,
)

VAL_FIELDS = 16
VAL_STEPS = 10


def resolve_regression_run(run: Run, ref: str) -> Run:
    """The run named by ``model.regression_run``: a run id in ``run``'s store (never a path)."""
    from engine.runs import RunStoreError

    try:
        return RunStore(run.path.parent).get(ref)
    except RunStoreError as exc:
        raise TrainingError(f"model.regression_run={ref!r}: {exc}") from None


def load_regression(run: Run, ref: str) -> tuple[torch.nn.Module, dict, Any, Run]:
    """(frozen model, checkpoint state, its normaliser, its run) of a trained regression run."""
    reg_run = resolve_regression_run(run, ref)
    path = reg_run.checkpoint("best")
    if not path.exists():
        raise TrainingError(f"model.regression_run={ref!r} has no best checkpoint ({path}); state: {reg_run.state}")
    reg_cfg = reg_run.config
    if reg_cfg.training.learning == "diffusion":
        raise TrainingError(f"model.regression_run={ref!r} is a diffusion run; accepted: a supervised or GAN run "
                            "(a deterministic model for the mean)")
    state = load_checkpoint(path)
    grid = tuple(state["grid_shape"]) if reg_cfg.model.lcb and "grid_shape" in state else None
    model = build_model(reg_cfg.model, len(state["input_channels"]), len(state["static_channels"]),
                        int(state["scale"]), grid_shape=grid)
    model.load_state_dict(state["model"])
    model.eval()
    from engine.data.normalise import load as load_normalisation

    normaliser = load_normalisation(reg_run.normalisation_path)  # JSON (+ its .npz sidecar)
    return model, state, normaliser, reg_run


def rebuild_from_checkpoint(cfg: ExperimentConfig, state: dict[str, Any]):
    """A :class:`DiffusionDownscaler` with the weights of a diffusion checkpoint (inference)."""
    regression = None
    reg = state.get("regression")
    if reg:
        reg_cfg = ExperimentConfig.from_dict(reg["config"])
        grid = tuple(reg["grid_shape"]) if reg.get("grid_shape") else None
        regression = build_model(reg_cfg.model, len(state["input_channels"]), len(state["static_channels"]),
                                 int(state["scale"]), grid_shape=grid)
    model = build_diffusion(cfg.model, len(state["input_channels"]), len(state["static_channels"]),
                            int(state["scale"]), regression=regression)
    model.load_state_dict(state["model"])
    return model.eval()


def train_diffusion(run: Run, resume: bool = True) -> dict[str, Any]:
    """Train the run's diffusion configuration; return the same summary as ``train``."""
    cfg = configure(run)  # hardware-dependent settings decided and recorded
    t, d, m = cfg.training, cfg.data, cfg.model
    fabric = make_fabric(cfg)
    fabric.launch()
    fabric.seed_everything(t.seed)

    regression, reg_info, normaliser = None, None, None
    if m.regression_run:
        regression, reg_state, normaliser, reg_run = load_regression(run, m.regression_run)
        reg_info = {"run_id": reg_run.run_id, "config": reg_run.config.to_dict(),
                    "grid_shape": reg_state.get("grid_shape") if reg_run.config.model.lcb else None}
    data = prepare_data(cfg, normaliser)  # a residual run keeps its regression's normalisation
    if m.regression_run and list(reg_state["input_channels"]) != list(data.train.input_channels):
        raise TrainingError(f"model.regression_run={m.regression_run!r} was trained on inputs "
                            f"{reg_state['input_channels']}, this run has {data.train.input_channels}; "
                            "use the same data.variable, predictors and static fields")
    n_in, n_static = len(data.train.input_channels), len(data.train.static_channels)
    net = build_diffusion(m, n_in, n_static, data.pair.scale, regression=regression)
    optimizer = make_optimizer(cfg, [p for p in net.parameters() if p.requires_grad])

    loop = EpochLoop(run, cfg, fabric, data)
    first_epoch, state = loop.resume({"model": net, "optimizer": optimizer}, enabled=resume)
    if state is None:
        # The residual's RMS over a few training batches makes the diffused signal ~unit variance.
        probe = DataLoader(data.train, batch_size=t.batch_size, shuffle=False)
        net.fit_residual_scale([b for _, b in zip(range(8), probe)])

    model, optimizer = fabric.setup(net, optimizer)
    # The loss is the training forward: route it through Fabric's wrapper (DDP gradient sync).
    model.mark_forward_method("loss")
    train_loader = make_train_loader(cfg, fabric, data.train)  # chunk-aware, sharded by worker and rank
    val_loader = DataLoader(data.val, batch_size=t.batch_size, shuffle=False)
    loop.start(first_epoch, count_parameters(net), learning="diffusion",
               regression_run=reg_info["run_id"] if reg_info else None, residual_scale=float(net.residual_scale))

    for epoch in loop.epochs(first_epoch):
        model.train()
        for batch in loop.batches(train_loader, epoch, channels_last=False):
            with autocast(cfg, fabric.device):
                loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            loop.record(train_loss=loss)
        val = validate(net, val_loader, data.normaliser, data.val, fabric.device, cfg)
        if loop.end_epoch(epoch, val, {"model": net, "optimizer": optimizer},
                          extra_state={"learning": "diffusion", "regression": reg_info}):
            break
    return loop.finish()


@torch.no_grad()
def validate(net, loader, normaliser, dataset, device, cfg: ExperimentConfig) -> dict[str, float]:
    """Noise-prediction loss with fixed timesteps/noise, and the RMSE of one few-step sample."""
    net.eval()
    generator = torch.Generator().manual_seed(12345)
    losses, sq, n, fields = [], 0.0, 0.0, 0
    for batch in loader:
        batch = to_device(batch, device, False)
        losses.append(float(net.loss(batch, generator=generator)))
        if fields < VAL_FIELDS:
            k = min(VAL_FIELDS - fields, batch["x"].shape[0])
            pred = net.sample(batch["x"][:k], batch["static_hr"][:k], batch["offset"][:k], sampler="ddim",
                              steps=min(VAL_STEPS, net.train_steps), generator=generator)
            times = dataset.times[batch["time"][:k].cpu().numpy()]
            phys_pred = np.asarray(normaliser.inverse_hr(pred[:, 0].cpu().numpy(), times))
            phys_true = np.asarray(normaliser.inverse_hr(batch["y"][:k, 0].cpu().numpy(), times))
            mask = batch["mask"][:k, 0].cpu().numpy() > 0
            sq += float(np.where(mask, (phys_pred - phys_true) ** 2, 0.0).sum())
            n += float(mask.sum())
            fields += k
    return {"val_loss": float(np.mean(losses)) if losses else math.nan, "val_rmse": math.sqrt(sq / max(n, 1.0))}


__all__ = ["train_diffusion", "rebuild_from_checkpoint", "load_regression", "validate"]
