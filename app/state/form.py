"""The experiment form: the parameters of the dashboard's state that make up a configuration,
and the configuration they describe (built, saved as YAML, loaded from YAML).

:class:`FormState` is the first layer of :class:`app.state.AppState`; the checks of the form
(:mod:`app.state.checks`) and everything after build on it.
"""

from __future__ import annotations

import param

from ..validation import IN_PROCESS_LAUNCHERS
from .values import _to_date

#: Training defaults of the form, small on purpose: a demo run finishes in about a minute on a
#: laptop CPU. The library's own defaults (engine.config.TrainingConfig) are for real runs.
DEMO_TRAINING = {"epochs": 3, "samples_per_epoch": 256, "batch_size": 16, "patch_size": 32}

#: Experiment fields that make up the configuration; a change to any re-validates it.
_CONFIG_FIELDS = (
    "run_name", "dataset", "variable", "scale", "patch_size", "train_period", "val_period", "test_period",
    "backbone", "upsampling", "loss", "epochs", "samples_per_epoch", "batch_size", "lr",
    "launcher", "partition", "account", "slurm_time", "nodes", "gpus_per_node", "cpus_per_task", "mem_gb",
    "region", "use_region",
)

#: Largest configuration file the dashboard reads (an upload, not a path on the server).
MAX_CONFIG_BYTES = 200_000


class FormState(param.Parameterized):
    """The form's fields (data, experiment, launch and every further configuration field).

    Parameters
    ----------
    run_root : str
        The run store folder (default ``$FINESCALE_RUNS`` or ``./runs``). The dashboard only
        reads and writes below it: runs are addressed by id, never by a path from the user.
    catalog : str or None
        The intake catalogue (None: the engine's default, with the embedded demo).
    """

    run_root = param.String(default=None, allow_None=True, constant=True, doc="Run store folder.")
    catalog = param.String(default=None, allow_None=True, constant=True, doc="Intake catalogue.")

    # -- data ---------------------------------------------------------------------------
    dataset = param.Selector(default=None, objects=[], doc="High-resolution catalogue entry (the target).")
    variable = param.Selector(default=None, objects=[], doc="Target variable of the dataset.")
    dataset_info = param.Dict(default={}, doc="Catalogue metadata of the selected dataset.")
    time_range = param.Tuple(default=None, length=2, allow_None=True, doc="First and last date of the dataset.")
    region = param.Tuple(default=None, length=4, allow_None=True,
                         doc="Picked region (lat_min, lat_max, lon_min, lon_max) in degrees, or None (the whole domain). "
                             "Drawn on the data maps; the compare, explain and experiment views use it.")
    use_region = param.Boolean(default=False, doc="Train on the picked region only (data.bbox).")

    # -- experiment (maps onto ExperimentConfig) ----------------------------------------
    run_name = param.String(default="demo", doc="Run name: letters, digits, '_', '-', '.'.")
    # Numbers carry no bounds here: a bounded parameter refuses a typed value and silently
    # keeps the old one. Every value is taken, then checked (app.validation) and an error is
    # shown beside its field; allow_None: an emptied field is an error too, not a restore.
    scale = param.Integer(default=4, allow_None=True, doc="Downscaling factor (high-res / low-res).")
    patch_size = param.Integer(default=DEMO_TRAINING["patch_size"], allow_None=True,
                               doc="High-resolution training patch size (multiple of the scale).")
    train_period = param.CalendarDateRange(default=None, allow_None=True, doc="Training period.")
    val_period = param.CalendarDateRange(default=None, allow_None=True, doc="Validation period.")
    test_period = param.CalendarDateRange(default=None, allow_None=True, doc="Test period (maps and scores).")
    backbone = param.Selector(default=None, objects=[], doc="Backbone network (engine registry).")
    upsampling = param.Selector(default=None, objects=[], doc="Upsampling method allowed with the backbone.")
    loss = param.Selector(default=None, objects=[], doc="Training loss (engine registry).")
    epochs = param.Integer(default=DEMO_TRAINING["epochs"], allow_None=True)
    samples_per_epoch = param.Integer(default=DEMO_TRAINING["samples_per_epoch"], allow_None=True)
    batch_size = param.Integer(default=DEMO_TRAINING["batch_size"], allow_None=True)
    lr = param.Number(default=1e-3, allow_None=True, step=1e-4, doc="Learning rate.")

    # -- launch -------------------------------------------------------------------------
    launcher = param.Selector(default=None, objects=[], doc="Where the run executes (engine registry).")
    partition = param.String(default="", doc="SLURM partition (empty: the cluster's default).")
    account = param.String(default="", doc="SLURM account (empty: none).")
    slurm_time = param.String(default="01:00:00", doc="SLURM time limit, e.g. 01:30:00 or 1-00:00:00.")
    nodes = param.Integer(default=1, allow_None=True)
    gpus_per_node = param.Integer(default=0, allow_None=True)
    cpus_per_task = param.Integer(default=2, allow_None=True)
    mem_gb = param.Number(default=0.0, allow_None=True, step=1.0, doc="Memory in GB (0: the cluster's default).")

    # -- every other configuration field (generated from engine.config, see app.schema) ----
    options = param.ClassSelector(class_=param.Parameterized, constant=True,
                                  doc="app.schema.ExperimentOptions: the configuration's remaining fields.")

    # -- derived from the form ----------------------------------------------------------
    config_error = param.String(default="", doc="Why the current form is not a valid configuration ('' if it is): "
                                                "every message of field_errors, one a line.")
    field_errors = param.Dict(default={}, doc="{dotted field ('training.epochs'): the engine's message} of every "
                                              "field the checks refuse (app.validation); shown beside the field.")
    checking_data = param.Boolean(default=False, doc="The data checks (engine check) of the form run now.")
    message = param.String(default="", doc="The last thing the dashboard did or failed to do.")
    choices_loaded = param.Boolean(default=False, doc="Catalogue and registries have been read.")

    def _validate(self) -> None:
        """Check the form again (the checks layer, :mod:`app.state.checks`, does it)."""

    # ======================================================================================
    # The experiment configuration
    # ======================================================================================
    def build_config(self):
        """The :class:`engine.config.ExperimentConfig` that the form describes (not validated).

        Returns
        -------
        engine.config.ExperimentConfig
        """
        from engine.config import DataConfig, ExperimentConfig, LaunchConfig, ModelConfig, TrainingConfig

        def period(value, fallback):
            return tuple(v.isoformat() for v in value) if value else fallback

        from engine.config import InferenceConfig

        d = DataConfig()
        o = self.options
        bbox = tuple(float(v) for v in self.region) if (self.use_region and self.region) else None
        return ExperimentConfig(
            name=self.run_name,
            inference=InferenceConfig(**o.section_values("inference")),
            data=DataConfig(
                **o.section_values("data"),
                bbox=bbox,
                highres=self.dataset or d.highres,
                variable=self.variable or d.variable,
                scale=self.scale,
                patch_size=self.patch_size,
                train_period=period(self.train_period, d.train_period),
                val_period=period(self.val_period, d.val_period),
                test_period=period(self.test_period, d.test_period),
                catalog=self.catalog,
            ),
            model=ModelConfig(backbone=self.backbone or "", upsampling=self.upsampling or "",
                              **o.section_values("model")),
            training=TrainingConfig(
                **o.section_values("training"),
                loss=self.loss or "", epochs=self.epochs, samples_per_epoch=self.samples_per_epoch,
                batch_size=self.batch_size, lr=float(self.lr) if self.lr is not None else None,
            ),
            launch=LaunchConfig(
                launcher=self.launcher or "",
                partition=self.partition.strip() or None,
                account=self.account.strip() or None,
                time=self.slurm_time.strip(),
                nodes=self.nodes,
                gpus_per_node=self.gpus_per_node,
                cpus_per_task=self.cpus_per_task,
                mem_gb=float(self.mem_gb) if self.mem_gb else None,
                extra=dict(self._launch_extra),
                **o.section_values("launch"),
            ),
        )

    # ======================================================================================
    # Configuration files: save and load as YAML
    # ======================================================================================
    def config_yaml(self) -> str:
        """The form as YAML (:meth:`engine.config.ExperimentConfig.to_yaml`), valid or not."""
        return self.build_config().to_yaml()

    def load_yaml(self, data: bytes | str) -> bool:
        """Fill the form from a YAML configuration (an uploaded file's content, never a path).

        Read with ``yaml.safe_load`` by the engine (no object construction); a file that is
        not a configuration leaves the form as it was and says why in ``message``.

        Returns
        -------
        bool
            True when the form now holds the file's configuration.
        """
        from engine.config import ConfigError, ExperimentConfig

        if isinstance(data, bytes):
            if len(data) > MAX_CONFIG_BYTES:
                self.message = f"Not loaded: the file has {len(data)} bytes; a configuration has at most {MAX_CONFIG_BYTES}."
                return False
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                self.message = "Not loaded: the file is not UTF-8 text (expected a YAML configuration)."
                return False
        if "\n" not in data:
            data += "\n"  # from_yaml reads a one-line "x.yaml" as a path; a form never does
        try:
            config = ExperimentConfig.from_yaml(data)
        except (ConfigError, TypeError, ValueError) as exc:
            self.message = f"Not loaded: {exc}"
            return False
        self.apply_config(config)
        self.message = " ".join(filter(None, [f"Loaded configuration {config.name!r}.", self._switched]))
        return True

    def apply_config(self, config) -> None:
        """Set every field of the form from an :class:`engine.config.ExperimentConfig`."""
        d, m, t, lch = config.data, config.model, config.training, config.launch

        def dates(p):
            return tuple(_to_date(v) for v in p)

        switched = ""
        if lch.launcher in IN_PROCESS_LAUNCHERS:
            # Never train in the server: the same run in a separate local process instead.
            switched = (f"launch.launcher={lch.launcher!r} trains inside the dashboard's server; "
                        "switched to 'local' (a separate process).")
            config = config.replace(launch={"launcher": "local"})
            lch = config.launch
        self._switched = switched
        with param.parameterized.batch_call_watchers(self):
            self.run_name = config.name
            for name, value in (("dataset", d.highres), ("backbone", m.backbone), ("loss", t.loss),
                                ("launcher", lch.launcher)):
                p = self.param[name]
                if value not in p.objects:  # shown (and refused by validation) rather than dropped
                    p.objects = [*p.objects, value]
                setattr(self, name, value)
        # After the dataset watcher has set the dataset's defaults (variables, periods).
        with param.parameterized.batch_call_watchers(self):
            for name, value in (("variable", d.variable), ("upsampling", m.upsampling)):
                p = self.param[name]
                if value not in p.objects:
                    p.objects = [*p.objects, value]
                setattr(self, name, value)
            self.scale, self.patch_size = d.scale, d.patch_size or self.patch_size
            self.train_period, self.val_period, self.test_period = (
                dates(d.train_period), dates(d.val_period), dates(d.test_period))
            self.epochs, self.samples_per_epoch, self.batch_size, self.lr = (
                t.epochs, t.samples_per_epoch, t.batch_size, float(t.lr))
            self.partition, self.account, self.slurm_time = lch.partition or "", lch.account or "", str(lch.time)
            self.nodes, self.gpus_per_node, self.cpus_per_task = lch.nodes, lch.gpus_per_node, lch.cpus_per_task
            self.mem_gb = float(lch.mem_gb or 0.0)
            self.region = tuple(float(v) for v in d.bbox) if d.bbox else None
            self.use_region = d.bbox is not None
            self._launch_extra = dict(lch.extra or {})
            self.options.set_from_config(config)
        self._validate()
