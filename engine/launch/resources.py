"""Will the model fit? An estimate of training memory, checked before a run is created.

A network too large for the machine otherwise fails minutes later, in the middle of an epoch, as
an out-of-memory kill ("died") or a CUDA error. :func:`estimate_training_memory` builds the model on
PyTorch's ``meta`` device (shapes only: no memory, no arithmetic) and runs one forward pass with a
batch of the configured size to measure:

- parameters: weights, gradients and two Adam moments, 4 bytes each (16 bytes a parameter);
- activations: every module's output kept for the backward pass, at the batch size, in the
  precision's bytes (2 for bf16/16-mixed, 4 otherwise).

:func:`check_fits` compares the sum with what the run may use: the free GPU memory for a GPU run,
``launch.mem_gb`` for a SLURM run that sets it, otherwise the memory available on this machine
(``MemAvailable``), and refuses with the estimate when it does not fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import ConfigError, ExperimentConfig

#: Fraction of the available memory a run may plan to use (the data, the allocator and the rest
#: of the process need the remainder).
USABLE_FRACTION = 0.8


def _field_size(cfg: ExperimentConfig) -> tuple[int, int] | None:
    """(H, W) of one training field: the patch, or the whole (possibly cut) domain."""
    if cfg.data.patch_size is not None:
        return cfg.data.patch_size, cfg.data.patch_size
    try:  # the whole domain: its size from the (lazily opened) dataset
        from engine.data.catalog import open_dataset

        ds = open_dataset(cfg.data.highres, cfg.data.catalog)
        dims = [d for d in ds[cfg.data.variable].dims if d != "time"]
        return int(ds.sizes[dims[-2]]), int(ds.sizes[dims[-1]])
    except Exception:  # unknown here; the data checks say what is wrong with the data
        return None


def estimate_training_memory(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """Bytes training ``cfg`` needs: ``{"parameters", "parameter_bytes", "activation_bytes",
    "total_bytes", "field"}``, or None when the model or the field size cannot be worked out
    here (then nothing is refused)."""
    import torch

    from engine.models import build_model

    size = _field_size(cfg)
    if size is None:
        return None
    d, t = cfg.data, cfg.training
    scale = int(d.scale)
    h, w = max(1, size[0] // scale), max(1, size[1] // scale)
    n_static = len(d.static)
    n_in = int(getattr(d, "target_as_input", True)) + len(d.predictors) + n_static
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, max(n_in, 1), n_static, scale, time_window=d.time_window,
                                grid_shape=(h * scale, w * scale))
            params = sum(p.numel() for p in model.parameters())
            outputs = []

            def hook(module, args, out):
                if isinstance(out, torch.Tensor):
                    outputs.append(out.numel())
            handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
            B = int(t.batch_size)
            x = torch.empty((B, d.time_window, max(n_in, 1), h, w) if d.time_window > 1 else (B, max(n_in, 1), h, w))
            static = torch.empty((B, n_static, h * scale, w * scale))
            model(x, static, torch.zeros((B, 2), dtype=torch.long))
            for handle in handles:
                handle.remove()
    except Exception:  # a model that cannot run on the meta device: no estimate, no refusal
        return None
    act_bytes = 2 if t.precision in ("bf16-mixed", "16-mixed") else 4
    parameter_bytes = 16 * params
    activation_bytes = act_bytes * sum(outputs)
    return {"parameters": params, "parameter_bytes": parameter_bytes, "activation_bytes": activation_bytes,
            "total_bytes": parameter_bytes + activation_bytes, "field": (h * scale, w * scale)}


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory(cfg: ExperimentConfig) -> tuple[int | None, str]:
    """(bytes the run may use, where that figure comes from)."""
    lch = cfg.launch
    if lch.gpus_per_node or cfg.training.device == "cuda":
        if lch.launcher == "slurm":
            return None, "GPU memory of the SLURM node (unknown here)"
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return free, "free memory of this machine's GPU"
        return None, "no GPU here"
    if lch.launcher == "slurm":
        if lch.mem_gb is None:
            return None, "the SLURM node's memory (unknown here)"
        return int(lch.mem_gb * 2**30), f"launch.mem_gb={lch.mem_gb}"
    return _mem_available(), "memory available on this machine (MemAvailable)"


def check_fits(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """Refuse ``cfg`` with the estimate when training it would not fit in memory; return the
    estimate (None when there is none)."""
    estimate = estimate_training_memory(cfg)
    if estimate is None:
        return None
    limit, source = available_memory(cfg)
    if limit is None or estimate["total_bytes"] <= USABLE_FRACTION * limit:
        return estimate
    gib = 2**30
    raise ConfigError(
        f"the model does not fit in memory: training needs about {estimate['total_bytes'] / gib:.1f} GiB "
        f"({estimate['parameters']:,} parameters -> {estimate['parameter_bytes'] / gib:.2f} GiB with gradients and "
        f"Adam state; activations of a batch of {cfg.training.batch_size} fields of {estimate['field'][0]} x "
        f"{estimate['field'][1]} -> {estimate['activation_bytes'] / gib:.1f} GiB), more than "
        f"{USABLE_FRACTION:.0%} of the {limit / gib:.1f} GiB of {source}. Accepted: a smaller training.batch_size, "
        "data.patch_size, model.filters or model.blocks (or more memory: launch.mem_gb on SLURM)")
