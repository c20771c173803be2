"""An exponential moving average (EMA) of a network's weights: validated, early-stopped on and saved
instead of the raw weights, which smooths the last steps' noise and so the seed-to-seed spread.

The averaged copy follows ``ema = d * ema + (1 - d) * weights`` after every optimiser step, with
the decay warmed up as ``d_t = min(decay, (1 + t) / (10 + t))`` (t = updates so far): a short run
(a few hundred steps) would otherwise validate an average still dominated by its random
initialisation. Buffers (batch-norm statistics) are copied, not averaged.

``torch.optim.swa_utils.AveragedModel`` offers a fixed-decay EMA; its averaging function sees
only the parameters, not a warm-up, hence this small class.

Checkpoints: :meth:`EMA.state_dict` holds the update count and decay; the averaged weights are
saved as the checkpoint's ``model`` (what inference loads) and the raw weights as
``train_model`` (what a resumed run trains on).

Example
-------
>>> ema = EMA(net, decay=0.999)                 # doctest: +SKIP
>>> loss.backward(); opt.step(); ema.update(net)  # doctest: +SKIP
>>> validate(ema.module)                        # doctest: +SKIP
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Moving average of ``model``'s weights (see the module docstring).

    Parameters
    ----------
    model : the network being trained (its current weights start the average)
    decay : 0 <= decay < 1, the asymptotic per-step decay
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay!r} is not valid; expected 0 <= decay < 1 (e.g. 0.999)")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the next update (warmed up over the first steps)."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimiser step)."""
        d = self.current_decay()
        src = dict(_unwrap(model).state_dict())
        for name, avg in self.module.state_dict().items():
            cur = src[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(cur.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(cur)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))


def ema_objects(net: nn.Module, ema: "EMA | None", **others) -> dict:
    """The objects a checkpoint holds: with an EMA, the averaged weights as ``model`` (what
    inference loads), the raw weights as ``train_model`` and the EMA's counters as ``ema``;
    without, the raw weights as ``model``. ``others`` (optimizer, scheduler) are added as given."""
    if ema is None:
        return {"model": net, **others}
    return {"model": ema.module, "train_model": net, "ema": ema, **others}


def _unwrap(model: nn.Module) -> nn.Module:
    # Fabric / DDP wrappers hold the network in .module; their state_dict keys would carry a prefix.
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model
