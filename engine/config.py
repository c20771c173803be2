"""The experiment configuration: one typed, frozen object that fully describes a run.

The dashboard builds one, the command line reads one from YAML, a SLURM job receives one.
It round-trips to YAML (:meth:`ExperimentConfig.to_yaml` / :meth:`ExperimentConfig.from_yaml`)
and :meth:`ExperimentConfig.validate` refuses invalid values and combinations with a message
that names the bad value and the accepted ones, before anything is trained or submitted.

Example
-------
>>> cfg = ExperimentConfig(model=ModelConfig(backbone="resnet", upsampling="spc"))
>>> cfg = cfg.replace(training={"epochs": 3})
>>> ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """An invalid experiment configuration; the message names the field, the bad value and
    what would be accepted."""


def _one_of(section: str, name: str, value: Any, accepted) -> None:
    accepted = list(accepted)
    if value not in accepted:
        raise ConfigError(f"{section}.{name}={value!r} is not valid; accepted: {', '.join(map(str, accepted))}")


def _count_or_auto(section: str, name: str, value: Any, minimum: int) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
        raise ConfigError(f"{section}.{name}={value!r} is not valid; expected an integer >= {minimum} "
                          "or null (chosen from the job's CPUs)")


def _positive(section: str, name: str, value: Any, minimum: float = 1) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{section}.{name}={value!r} is not valid; expected a number >= {minimum}")


_LOSS_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*\*\s*)?([A-Za-z][A-Za-z0-9_]*)\s*$")


def parse_loss(spec: str, known) -> list[tuple[float, str]]:
    """Parse a loss name or weighted mix into ``[(weight, name), ...]``.

    A registered name (also a registered mix such as ``"dssim+mae"``) is one term of weight 1;
    otherwise ``spec`` is ``w1*name1 + w2*name2 + ...`` with positive weights (a missing weight is 1).

    >>> parse_loss("0.8*dssim+0.2*mae", ["dssim", "mae"])
    [(0.8, 'dssim'), (0.2, 'mae')]
    """
    known = list(known)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"training.loss={spec!r} is not valid; accepted: {', '.join(known)} or a mix like '0.8*dssim+0.2*mae'")
    if spec in known:
        return [(1.0, spec)]
    terms = []
    for term in spec.split("+"):
        match = _LOSS_TERM.match(term)
        if not match:
            raise ConfigError(f"training.loss={spec!r}: cannot read the term {term.strip()!r}; write mixes as "
                              f"'0.8*dssim+0.2*mae' with losses from: {', '.join(known)}")
        weight, name = float(match.group(1) or 1.0), match.group(2)
        if name not in known:
            raise ConfigError(f"training.loss={spec!r}: unknown loss {name!r}; accepted: {', '.join(known)}")
        if weight <= 0:
            raise ConfigError(f"training.loss={spec!r}: the weight of {name!r} must be > 0, got {weight}")
        terms.append((weight, name))
    return terms


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?$")


@dataclass(frozen=True)
class DataConfig:
    """Which data, how they are paired, normalised, split and sampled.

    ``highres`` names the catalogue entry with the target variable. With
    ``downscaling="perfectprog"`` the low-resolution input is the high-resolution field
    block-mean coarsened by ``scale``; with ``"mos"`` it comes from the catalogue entry
    ``lowres`` (any resolution ratio; see :mod:`engine.data.pairing`).
    Periods are inclusive ``(start, end)`` ISO dates. ``bbox`` = ``(lat_min, lat_max, lon_min,
    lon_max)`` cuts the high-resolution domain (e.g. to a size that ``scale`` divides).
    """

    highres: str = "demo_alps"
    variable: str = "t2m"
    downscaling: str = "perfectprog"
    lowres: str | None = None
    scale: int = 4
    predictors: tuple[str, ...] = ()
    static: tuple[str, ...] = ("elevation", "land_mask")
    # seasonal climatology per cell (monthly statistics smoothed by annual harmonics; monthly steps
    # when the training period lacks a month): the residual then starts from a mean-and-variance bias
    # correction of the input for that day of the year (measured best on PerfectProg and MOS cases,
    # benchmarks/results/skill.md)
    normalisation: str = "seasonal_pixel"
    train_period: tuple[str, str] = ("2001-01-01", "2002-12-31")
    val_period: tuple[str, str] = ("2003-01-01", "2003-06-30")
    test_period: tuple[str, str] = ("2003-07-01", "2003-12-31")
    patch_size: int | None = 64
    sample: str = "spatial"
    time_window: int = 1
    bbox: tuple[float, float, float, float] | None = None
    catalog: str | None = None
    # Train, validation and test periods must not overlap (a model scored on what it trained on
    # looks better than it is); true allows it on purpose (e.g. a smoke test on one short file).
    allow_overlap: bool = False
    # Low-resolution input missing (NaN) where the target has data: "refuse" (default) or "mask"
    # those cells out of training and scores (engine.data.validity); never filled silently.
    missing_input: str = "refuse"
    # MOS: how the input is regridded onto the intermediate grid (engine.data.regrid.METHODS):
    # auto = conservative/average where the input is finer than that grid, bilinear where coarser.
    regrid_method: str = "auto"
    # DataLoader worker processes; None = chosen from the job's CPUs (engine.hardware).
    workers: int | None = None
    # Time steps read for the valid-data mask and the normalisation statistics before training
    # (engine.data.datapass): "all" (every step: exact, one full pass), an integer N (at most N
    # training steps, whole storage chunks spread over the training period), or "auto" (all when the
    # target is at most 1 GiB, else a sample of about 1 GiB: a 30 GiB archive starts training in
    # seconds, not after reading 30 GiB).
    statistics_sample: int | str = "auto"
    # Variables, levels and units (engine.data.predictors, engine.data.units):
    # predictor_entries: catalogue entries of role "predictor" (own grids, regridded to the input grid)
    #   where names in ``predictors`` are also looked up; levels: {var: [850, 500]} picks pressure
    #   levels of a 4-D variable, which become channels "ta850", "ta500" (a predictor may also name
    #   "ta850" directly); variable_map: {config name: name in the input/predictor entry}, e.g.
    #   {tg: tas} pairs E-OBS tg with reanalysis tas; units: {name: canonical units} converts the
    #   target and predictors (the input target always goes to the target's units);
    #   target_as_input=False feeds only the predictors (emulation, as CORDEX ML-Bench).
    predictor_entries: tuple[str, ...] = ()
    levels: Mapping[str, Any] = field(default_factory=dict)
    variable_map: Mapping[str, str] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    target_as_input: bool = True

    def __post_init__(self) -> None:
        sample = self.statistics_sample
        if isinstance(sample, str) and sample.strip().isdigit():
            sample = int(sample)
        if isinstance(sample, bool) or not (sample in ("auto", "all") or (isinstance(sample, int) and sample >= 1)):
            raise ConfigError(f"data.statistics_sample={self.statistics_sample!r} is not valid; accepted: "
                              f"'auto', 'all' or a whole number of time steps >= 1")
        object.__setattr__(self, "statistics_sample", sample)
        # plain dicts of plain lists, so the YAML round trip and equality hold
        for name in ("levels", "variable_map", "units"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"data.{name}={value!r} is not valid; expected a mapping like "
                                  + {"levels": "{ta: [850, 500]}", "variable_map": "{tg: tas}",
                                     "units": "{t2m: K}"}[name])
            if name == "levels":
                value = {str(k): [v for v in (list(lv) if isinstance(lv, (list, tuple)) else [lv])]
                         for k, lv in value.items()}
            else:
                value = {str(k): str(v) for k, v in value.items()}
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class ModelConfig:
    """The network: backbone, upsampling and output head, with their options.

    ``residual=True`` makes the network predict a correction to the interpolated LR target
    (``interpolation`` method), which keeps the model at least as good as that baseline from
    the first epoch; ``static_hr`` feeds the static fields again at HR before the output.
    """

    backbone: str = "resnet"
    upsampling: str = "spc"
    interpolation: str = "bicubic"
    filters: int = 32
    blocks: int = 4
    lcb: bool = False
    static_hr: bool = True
    attention: bool = False
    normalization: str = "none"
    # Spatial (channel-wise) dropout in every convolution block while training. 0.1 by default: on a
    # real-shaped MOS pair (3 weeks of hourly training data) it cut the spread over seeds from 4.6 % to
    # 1.8 % of the RMSE and lowered the RMSE, and changed nothing or helped on the demo, its MOS pair and
    # ERA5 UK (benchmarks/results/skill.md). Off at inference unless ``mc_dropout``.
    dropout: float = 0.1
    mc_dropout: bool = False
    activation: str = "relu"
    residual: bool = True
    discriminator_filters: int = 16  # width of the PatchGAN discriminator (training.learning="gan")
    # Diffusion (training.learning="diffusion"; see engine.models.diffusion): the denoiser ("unet",
    # ours, or "diffusers", UNet2DModel) uses ``filters`` and ``blocks`` (= U-Net levels, 1-4);
    # ``diffusion_steps`` is the training noise schedule, ``sampler`` / ``sampling_steps`` the
    # defaults at inference; ``regression_run`` names a trained run (its id in the same run store,
    # never a path) whose model predicts the mean, the diffusion model its residual (CorrDiff).
    denoiser: str = "unet"
    diffusion_steps: int = 1000
    # SDE DPM-Solver++ at 20 steps: measured as close to DDPM-1000's CRPS as DDPM itself, ~50x faster;
    # the ODE samplers (ddim, dpmsolver++) leave over-dispersed samples (benchmarks/results/generative.md).
    sampler: str = "sde-dpmsolver++"
    sampling_steps: int = 20
    regression_run: str | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """Loss, optimiser and loop.

    ``precision="auto"`` (default) trains with bfloat16 autocast only where the device runs it
    natively (CUDA Ampere+, CPUs with AVX-512-BF16/AMX) and in float32 elsewhere;
    ``channels_last="auto"`` uses the channels-last memory format where oneDNN/cuDNN run the
    convolutions; ``threads=None`` takes torch's intra-op threads from the job's CPU allocation
    (see :mod:`engine.hardware`, which also records the choice in the run's ``hardware.json``).
    An explicit value always wins."""

    learning: str = "supervised"
    loss: str = "mae"
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    epochs: int = 20
    # 8, not 16: the network learns a small correction on top of the normalised input, and the
    # number of optimiser steps limits it; at the same samples, 8 lowered validation RMSE on the
    # demo, demo MOS and real-shaped MOS cases alike (benchmarks/results/skill.md).
    batch_size: int = 8
    samples_per_epoch: int = 2048
    patience: int = 5
    seed: int = 0
    precision: str = "auto"
    channels_last: bool | str = "auto"
    threads: int | None = None
    device: str = "auto"
    gan_pixel_weight: float = 100.0
    # Less seed variance (engine.training.ema, engine.training.seeds): an exponential moving average
    # of the weights (decay per step, warmed up; 0 = off; supervised trainer) is validated and saved; early stopping
    # counts an epoch as better only when the EMA's validation loss drops by more than
    # ``min_delta``; ``seeds`` > 1 trains that many members (seed, seed+1, ...) as a deep ensemble.
    ema_decay: float = 0.999
    min_delta: float = 0.0
    seeds: int = 1


@dataclass(frozen=True)
class InferenceConfig:
    """How predictions are made (see engine.inference).

    ``members`` > 1 asks for an ensemble with a ``member`` dimension: diffusion samples, or
    Monte-Carlo dropout passes for a zoo model with ``model.dropout`` > 0 (deep ensembles of N
    runs: :func:`engine.inference.ensembles.predict_deep_ensemble`). ``tile`` (HR pixels, a
    multiple of ``data.scale``; None = the whole domain at once) with ``overlap`` predicts a large
    domain in overlapping, blended tiles, ``tile_batch`` tiles at a time.
    """

    members: int = 1
    tile: int | None = None
    overlap: int = 16
    tile_batch: int = 16
    # predictions are written block by block: "netcdf" (predictions.nc, appended along time) or
    # "zarr" (predictions.zarr, one region per block); ``block`` time steps per block (None: as
    # many as fit in 256 MiB, aligned to the data's time chunks).
    format: str = "netcdf"
    block: int | None = None
    # baselines written beside the model (engine.inference.baselines): interpolations of the
    # native input and bias corrections fitted on the training period; () = none.
    baselines: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "conservative", "bias_cell", "bias_month",
                                  "quantile_map")


BASELINE_NAMES = InferenceConfig.baselines  # every baseline engine.inference.baselines computes


@dataclass(frozen=True)
class LaunchConfig:
    """Where the run executes. ``local`` runs a separate process on this machine, ``inline``
    runs in the calling process (tests, notebooks), ``slurm`` submits through submitit."""

    launcher: str = "local"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Where evaluation's dask work runs: ``{cluster: none|local|slurm, workers, cores, memory,
    #: walltime, timeout, interface, extra}`` (engine.launch.dask_cluster; empty = dask's threads).
    dask: Mapping[str, Any] = field(default_factory=dict)


PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
CHANNELS_LAST = ("auto", True, False)
PREDICTION_FORMATS = ("netcdf", "zarr")
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("cosine", "constant")
DOWNSCALING = ("perfectprog", "mos")
REGRID_METHODS = ("auto", "bilinear", "nearest", "average", "conservative")  # = engine.data.regrid.METHODS
LEARNING = ("supervised", "gan", "diffusion")
SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++")
DENOISERS = ("unet", "diffusers")
SAMPLES = ("spatial", "spatiotemporal")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
NORMALIZATIONS = ("none", "batch", "layer")
ACTIVATIONS = ("relu", "gelu", "silu", "leaky_relu", "elu", "prelu")
DEVICES = ("auto", "cpu", "cuda")
_SLURM_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")

SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "launch": LaunchConfig,
             "inference": InferenceConfig}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that describes one run. See the section classes for the fields."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    # -- conversion ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # YAML has no tuples; lists read back as tuples in from_dict.
        for section in SECTIONS:
            for key, value in out[section].items():
                if isinstance(value, tuple):
                    out[section][key] = list(value)
                elif isinstance(value, Mapping):
                    out[section][key] = dict(value)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ExperimentConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"an experiment configuration must be a mapping, got {type(raw).__name__}")
        known = {"name", *SECTIONS}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown configuration section(s) {sorted(unknown)}; accepted: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        if "name" in raw:
            kwargs["name"] = str(raw["name"])
        for section, section_cls in SECTIONS.items():
            kwargs[section] = _section_from_dict(section, section_cls, raw.get(section) or {})
        return cls(**kwargs)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, text_or_path: str | Path) -> "ExperimentConfig":
        """Read a configuration from a YAML file path or a YAML string."""
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
            path = Path(text_or_path)
            if not path.exists():
                raise ConfigError(f"configuration file {str(path)!r} does not exist")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"configuration file {str(path)!r} cannot be read as text: {exc}") from None
        else:
            path = None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"configuration file {str(path)!r}" if path is not None else "configuration text"
            line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}{line} is not valid YAML: {problem}") from None
        return cls.from_dict(raw or {})

    def replace(self, **changes: Any) -> "ExperimentConfig":
        """A copy with some fields changed; a section may be given as a dict of its fields.

        >>> ExperimentConfig().replace(training={"epochs": 1}).training.epochs
        1
        """
        kwargs: dict[str, Any] = {}
        for key, value in changes.items():
            if key in SECTIONS and isinstance(value, Mapping):
                current = dataclasses.asdict(getattr(self, key))
                current.update(value)
                kwargs[key] = _section_from_dict(key, SECTIONS[key], current)
            else:
                kwargs[key] = value
        return dataclasses.replace(self, **kwargs)

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> "ExperimentConfig":
        """Check every value and combination; return ``self`` or raise :class:`ConfigError`.

        Names of backbones, upsamplers, losses, normalisations and launchers are checked
        against the engine's registries, so the accepted lists are always current.
        """
        from engine import registry

        registry.load_plugins()
        d, m, t, lch = self.data, self.model, self.training, self.launch
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", self.name):
            raise ConfigError(
                f"name={self.name!r} is not valid; use 1-80 letters, digits, '_', '-' or '.'"
            )

        _one_of("data", "downscaling", d.downscaling, DOWNSCALING)
        _one_of("data", "regrid_method", d.regrid_method, REGRID_METHODS)
        if d.downscaling == "mos" and not d.lowres:
            raise ConfigError("data.lowres is required when data.downscaling='mos' (the low-resolution catalogue entry)")
        _positive("data", "scale", d.scale, 1)
        if not isinstance(d.scale, int):
            raise ConfigError(f"data.scale={d.scale!r} is not valid; expected an integer factor such as 2, 3, 4, 5 or 8")
        _one_of("data", "normalisation", d.normalisation, registry.NORMALISATIONS.names())
        _one_of("data", "sample", d.sample, SAMPLES)
        _positive("data", "time_window", d.time_window, 1)
        if d.sample == "spatial" and d.time_window != 1:
            raise ConfigError(f"data.time_window={d.time_window} needs data.sample='spatiotemporal'; spatial samples use time_window=1")
        if d.patch_size is not None:
            _positive("data", "patch_size", d.patch_size, 2 * d.scale)
            if d.patch_size % d.scale:
                raise ConfigError(
                    f"data.patch_size={d.patch_size} is not divisible by data.scale={d.scale}; "
                    f"accepted: multiples of {d.scale} such as {d.scale * max(1, d.patch_size // d.scale)}"
                )
        for period in ("train_period", "val_period", "test_period"):
            value = getattr(d, period)
            if len(value) != 2 or not all(isinstance(v, str) and _DATE.match(v) for v in value):
                raise ConfigError(f"data.{period}={value!r} is not valid; expected [start, end] as ISO dates like '2001-01-31'")
            if value[0] > value[1]:
                raise ConfigError(f"data.{period}={value!r} ends before it starts")
        if not d.allow_overlap:
            _check_disjoint_periods(d)
        _one_of("data", "missing_input", d.missing_input, ("refuse", "mask"))
        if d.bbox is not None:
            if len(d.bbox) != 4 or not d.bbox[0] < d.bbox[1] or not d.bbox[2] < d.bbox[3]:
                raise ConfigError(
                    f"data.bbox={d.bbox!r} is not valid; expected [lat_min, lat_max, lon_min, lon_max] with min < max"
                )
        for name in d.static:
            from engine.data.static import STATIC_FIELDS

            _one_of("data", "static", name, STATIC_FIELDS)
        for var, lv in d.levels.items():
            if not lv or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lv):
                raise ConfigError(f"data.levels[{var!r}]={lv!r} is not valid; expected a list of level values "
                                  "such as [850, 500] (in the file's level units)")
        if not d.target_as_input:
            if not d.predictors:
                raise ConfigError("data.target_as_input=False needs data.predictors (the input would be empty)")
            if m.residual:
                raise ConfigError("data.target_as_input=False cannot be combined with model.residual=True (the "
                                  "residual adds the interpolated input target); accepted: model.residual=False")
            if d.normalisation == "instance":
                raise ConfigError("data.normalisation='instance' scales the target by the input target's statistics; "
                                  "with data.target_as_input=False use another normalisation (e.g. 'global')")

        _one_of("model", "backbone", m.backbone, registry.BACKBONES.names())
        _one_of("model", "upsampling", m.upsampling, registry.UPSAMPLERS.names())
        allowed = registry.BACKBONES.info(m.backbone).get("upsampling")
        if allowed and m.upsampling not in allowed:
            raise ConfigError(
                f"model.backbone={m.backbone!r} cannot be combined with model.upsampling={m.upsampling!r}; "
                f"accepted upsampling for {m.backbone}: {', '.join(allowed)}"
            )
        scales = registry.UPSAMPLERS.info(m.upsampling).get("scales")
        if scales and d.scale not in scales:
            raise ConfigError(
                f"model.upsampling={m.upsampling!r} does not support data.scale={d.scale}; accepted scales: "
                f"{', '.join(map(str, scales))} (use upsampling='pin' for any factor)"
            )
        if d.sample == "spatiotemporal" and not registry.BACKBONES.info(m.backbone).get("temporal", False):
            temporal = [b for b in registry.BACKBONES.names() if registry.BACKBONES.info(b).get("temporal")]
            raise ConfigError(
                f"model.backbone={m.backbone!r} has no spatio-temporal variant; accepted with "
                f"data.sample='spatiotemporal': {', '.join(temporal) or 'none'}"
            )
        _one_of("model", "interpolation", m.interpolation, INTERPOLATIONS)
        _one_of("model", "normalization", m.normalization, NORMALIZATIONS)
        _one_of("model", "activation", m.activation, ACTIVATIONS)
        _positive("model", "filters", m.filters, 1)
        _positive("model", "blocks", m.blocks, 1)
        _positive("model", "discriminator_filters", m.discriminator_filters, 1)
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout={m.dropout!r} is not valid; expected 0 <= dropout < 1")
        if m.mc_dropout and m.dropout == 0.0:
            raise ConfigError("model.mc_dropout=True needs model.dropout > 0 (e.g. 0.1)")

        _one_of("training", "learning", t.learning, LEARNING)
        parse_loss(t.loss, registry.LOSSES.names())
        _one_of("training", "optimizer", t.optimizer, OPTIMIZERS)
        _one_of("training", "lr_schedule", t.lr_schedule, LR_SCHEDULES)
        _one_of("training", "precision", t.precision, PRECISIONS)
        _one_of("training", "device", t.device, DEVICES)
        if not (isinstance(t.lr, (int, float)) and 0 < t.lr < 10):
            raise ConfigError(f"training.lr={t.lr!r} is not valid; expected 0 < lr < 10")
        for name in ("epochs", "batch_size", "samples_per_epoch", "patience"):
            _positive("training", name, getattr(t, name), 1)
        if t.samples_per_epoch < t.batch_size:
            raise ConfigError(f"training.samples_per_epoch={t.samples_per_epoch} is smaller than training.batch_size="
                              f"{t.batch_size}: an epoch would hold no full batch; accepted: samples_per_epoch >= "
                              "batch_size (or a smaller batch_size)")
        _check_ssim_size(t.loss, d.patch_size, registry.LOSSES.names())
        _one_of("training", "channels_last", t.channels_last, CHANNELS_LAST)
        _count_or_auto("training", "threads", t.threads, 1)
        _count_or_auto("data", "workers", d.workers, 0)
        _positive("training", "gan_pixel_weight", t.gan_pixel_weight, 0)

        _one_of("model", "sampler", m.sampler, SAMPLERS)
        _one_of("model", "denoiser", m.denoiser, DENOISERS)
        _positive("model", "diffusion_steps", m.diffusion_steps, 2)
        _positive("model", "sampling_steps", m.sampling_steps, 1)
        if m.sampling_steps > m.diffusion_steps:
            raise ConfigError(f"model.sampling_steps={m.sampling_steps} is not valid; accepted: 1 .. "
                              f"model.diffusion_steps={m.diffusion_steps}")
        if m.regression_run is not None and t.learning != "diffusion":
            raise ConfigError(f"model.regression_run={m.regression_run!r} needs training.learning='diffusion' "
                              f"(residual diffusion); got training.learning={t.learning!r}")
        # Runs and files a configuration names stay inside the run store and the data roots
        # (a configuration may be an upload): see engine.confine.
        from engine.confine import PathNotAllowed, check_run_id, confine, data_roots

        try:
            if m.regression_run is not None:
                check_run_id(m.regression_run, "model.regression_run")
            if d.catalog is not None:
                confine(d.catalog, data_roots(), "data.catalog")
        except PathNotAllowed as exc:
            raise ConfigError(str(exc)) from None
        if t.learning == "diffusion" and d.sample != "spatial":
            raise ConfigError(f"training.learning='diffusion' needs data.sample='spatial'; got {d.sample!r}")

        inf = self.inference
        if not isinstance(inf.members, int) or isinstance(inf.members, bool) or inf.members < 1:
            raise ConfigError(f"inference.members={inf.members!r} is not valid; expected an integer >= 1 "
                              "(1 = one prediction, N > 1 = an ensemble of N members)")
        _positive("inference", "overlap", inf.overlap, 0)
        _positive("inference", "tile_batch", inf.tile_batch, 1)
        _one_of("inference", "format", inf.format, PREDICTION_FORMATS)
        _count_or_auto("inference", "block", inf.block, 1)
        for name in inf.baselines:
            _one_of("inference", "baselines", name, BASELINE_NAMES)
        if not isinstance(t.seeds, int) or isinstance(t.seeds, bool) or t.seeds < 1:
            raise ConfigError(f"training.seeds={t.seeds!r} is not valid; expected an integer >= 1 (1 = one model, "
                              "N > 1 = a deep ensemble of N models trained with seeds seed, seed+1, ...)")
        if not (isinstance(t.ema_decay, (int, float)) and 0.0 <= t.ema_decay < 1.0):
            raise ConfigError(f"training.ema_decay={t.ema_decay!r} is not valid; expected 0 <= ema_decay < 1 "
                              "(0 = no moving average, e.g. 0.999)")
        if not (isinstance(t.min_delta, (int, float)) and t.min_delta >= 0):
            raise ConfigError(f"training.min_delta={t.min_delta!r} is not valid; expected a number >= 0")
        if t.seeds > 1 and t.learning != "supervised":
            raise ConfigError(f"training.seeds={t.seeds} (a deep ensemble) needs training.learning='supervised'; "
                              f"got {t.learning!r}, whose ensembles come from inference.members")
        if inf.tile is not None:
            _positive("inference", "tile", inf.tile, d.scale)
            if inf.tile % d.scale or inf.overlap % d.scale or inf.overlap >= inf.tile:
                raise ConfigError(f"inference.tile={inf.tile}, inference.overlap={inf.overlap} are not valid; accepted: "
                                  f"multiples of data.scale={d.scale} with 0 <= overlap < tile")

        _one_of("launch", "launcher", lch.launcher, registry.LAUNCHERS.names())
        # launch.extra and the partition/account/qos names end up in a batch script: the slurm
        # launcher's allow-list checks them whatever the launcher (a run may be resumed on SLURM).
        check_launch = registry.LAUNCHERS.info("slurm").get("check_config") if "slurm" in registry.LAUNCHERS else None
        if check_launch is not None:
            check_launch(lch)
        if not _SLURM_TIME.match(str(lch.time)):
            raise ConfigError(
                f"launch.time={lch.time!r} is not valid; accepted SLURM formats: 'MM', 'HH:MM:SS', 'D-HH:MM:SS' (e.g. '01:30:00')"
            )
        for name in ("nodes", "tasks_per_node", "cpus_per_task"):
            _positive("launch", name, getattr(lch, name), 1)
        _positive("launch", "gpus_per_node", lch.gpus_per_node, 0)
        if lch.mem_gb is not None:
            _positive("launch", "mem_gb", lch.mem_gb, 0.1)
        _workers_fit(d.workers, lch)
        from engine.launch.dask_cluster import dask_settings

        dask_settings(lch)  # launch.dask: every bad key or value named with the accepted ones
        if lch.launcher != "slurm" and (lch.nodes > 1 or lch.gpus_per_node > 0 and lch.launcher == "inline"):
            raise ConfigError(f"launch.nodes={lch.nodes} needs launch.launcher='slurm'; local runs use one node")
        return self


def _workers_fit(workers: int | None, lch: LaunchConfig) -> None:
    """More DataLoader workers than the job's CPUs would only fight over them: refuse before submitting."""
    if workers is None:
        return
    if lch.launcher == "slurm":
        cpus, where = lch.cpus_per_task, f"launch.cpus_per_task={lch.cpus_per_task}"
    else:
        import os

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        where = f"this machine's {cpus} CPU(s)"
    if workers > cpus:
        raise ConfigError(f"data.workers={workers} is larger than {where}; accepted: 0 .. {cpus} "
                          "(or null to choose from the CPUs)")


def _section_from_dict(section: str, section_cls: type, raw: Mapping[str, Any]):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"configuration section {section!r} must be a mapping, got {raw!r}")
    names = {f.name: f for f in fields(section_cls)}
    # Configurations from before data.workers held training.num_workers (always 0 then): drop it
    # so that old run folders still load; their workers are chosen from the CPUs like any run's.
    if section == "training" and "num_workers" in raw:
        raw = {k: v for k, v in raw.items() if k != "num_workers"}
    unknown = set(raw) - set(names)
    if unknown:
        raise ConfigError(
            f"unknown field(s) {sorted(unknown)} in section {section!r}; accepted: {', '.join(names)}"
        )
    if section == "launch" and isinstance(raw.get("extra"), Mapping):
        _refuse_shell_in_extra(raw["extra"])
    if section == "model" and raw.get("regression_run") is not None:
        from engine.confine import PathNotAllowed, check_run_id

        try:  # a run id, never a path: refused as read (an upload holding a path is not loaded)
            check_run_id(raw["regression_run"], "model.regression_run")
        except PathNotAllowed as exc:
            raise ConfigError(str(exc)) from None
    kwargs = {}
    hints = _type_hints(section_cls)
    for key, value in raw.items():
        value = _coerce(f"{section}.{key}", hints.get(key, ""), value)
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return section_cls(**kwargs)


def _period_bounds(period: tuple[str, str]) -> tuple[str, str]:
    start, end = (str(v).replace(" ", "T") for v in period)
    return (start if "T" in start else start + "T00:00:00", end if "T" in end else end + "T23:59:59")


def _check_disjoint_periods(d: "DataConfig") -> None:
    names = ("train_period", "val_period", "test_period")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (a0, a1), (b0, b1) = _period_bounds(getattr(d, a)), _period_bounds(getattr(d, b))
            if a0 <= b1 and b0 <= a1:
                raise ConfigError(
                    f"data.{a}={list(getattr(d, a))} and data.{b}={list(getattr(d, b))} overlap: the model would be "
                    "validated or scored on data it trained on; accepted: disjoint periods, or data.allow_overlap: "
                    "true to allow it on purpose")


#: SSIM compares 11 x 11 Gaussian windows; a smaller field has no window to compare.
SSIM_MIN_SIZE = 11


def _check_ssim_size(loss: str, patch_size: int | None, known) -> None:
    ssim_terms = [name for _, name in parse_loss(loss, known) if "ssim" in name]
    if ssim_terms and patch_size is not None and patch_size < SSIM_MIN_SIZE:
        raise ConfigError(
            f"training.loss={loss!r} uses {', '.join(ssim_terms)} (SSIM, an {SSIM_MIN_SIZE} x {SSIM_MIN_SIZE} window) "
            f"but data.patch_size={patch_size} gives {patch_size} x {patch_size} fields; accepted: data.patch_size >= "
            f"{SSIM_MIN_SIZE}, or a loss without SSIM (mae, mse)")


#: ``launch.extra`` keys that would put shell into a batch script: only the site launcher file on
#: the server may set them (engine.launch.sbatch); a configuration holding one is refused as read.
SITE_ONLY_LAUNCH_KEYS = ("setup", "teardown", "srun_args", "use_srun", "stderr_to_stdout")


def _refuse_shell_in_extra(extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if str(key).lstrip("-").replace("-", "_") in SITE_ONLY_LAUNCH_KEYS:
            raise ConfigError(
                f"launch.extra.{key} is not accepted in a run configuration: shell setup and srun arguments come "
                "only from the site launcher configuration on the server ($FINESCALE_SITE_CONFIG, default "
                "/etc/finescale/launcher.yaml); accepted in launch.extra: allow-listed sbatch options "
                "(engine.launch.sbatch.OPTIONS)")
        if isinstance(value, str) and any(ch in value for ch in "\n\r\0"):
            raise ConfigError(f"launch.extra.{key}={value!r} is not valid: it holds a newline or NUL character, "
                              "which would break out of its line in the batch script")


# -- strict values ---------------------------------------------------------------------------
# YAML and forms hand over strings where numbers or booleans are meant ("false" is truthy!),
# dates where ISO strings are meant. Each value is checked against its field's annotation: a
# boolean is a boolean (or the words true/false/yes/no/on/off), an integer an integer, a number a
# finite number; a YAML date becomes its ISO string. Annotations this does not know pass as they are.
_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")
_INT_TEXT = re.compile(r"^[+-]?\d+$")


def _type_hints(section_cls: type) -> dict[str, str]:
    return {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            for f in fields(section_cls)}


def _split_union(annotation: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in annotation:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p and p != "None"]


def _coerce(where: str, annotation: str, value: Any) -> Any:
    """``value`` checked (and where unambiguous converted) for a field annotated ``annotation``."""
    import datetime as _dt

    if value is None or not annotation:
        return value
    options = _split_union(annotation)
    if isinstance(value, (_dt.date, _dt.datetime)) and "str" in options:
        return value.isoformat()  # an unquoted YAML date
    if options == ["bool"] or (set(options) == {"bool", "str"} and isinstance(value, str)
                               and value.strip().lower() in _TRUE + _FALSE):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where}={value!r} is not valid; expected a boolean: true or false")
    if options == ["int"]:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}={value!r} is not valid; expected an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}={value!r} is not valid; expected an integer")
            return int(value)
        if isinstance(value, str):
            if not _INT_TEXT.match(value.strip()):
                raise ConfigError(f"{where}={value!r} is not valid; expected an integer")
            return int(value)
        return value
    if options == ["float"]:
        import math

        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}={value!r} is not valid; expected a number")
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
            except ValueError:
                raise ConfigError(f"{where}={value!r} is not valid; expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}={value!r} is not valid; expected a finite number")
        return value
    if options == ["str"]:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}={value!r} is not valid; expected text (quote it in YAML)")
        return value if isinstance(value, str) else str(value)
    if len(options) == 1 and options[0].startswith("tuple[") and options[0].endswith("]"):
        items = _split_union(options[0][6:-1].replace(",", "|"))
        if isinstance(value, str) and items[-1:] == ["..."]:
            value = [value]  # one name where a list of names is meant
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} is not valid; expected a list")
        elem = [t for t in items if t != "..."]
        if len(set(elem)) == 1:
            return tuple(_coerce(f"{where}[{i}]", elem[0], v) for i, v in enumerate(value))
        return tuple(value)
    if len(options) == 1 and options[0].startswith(("Mapping[", "dict[")) and not isinstance(value, Mapping):
        raise ConfigError(f"{where}={value!r} is not valid; expected a mapping")
    return value
