"""The dashboard's state: plain :class:`param.Parameterized` objects, no widgets.

Everything the dashboard shows is derived from :class:`AppState`; the views in
:mod:`app.views` only render it and write user choices back into it. That keeps the logic
testable without a browser (change a parameter, look at the derived ones) and lets the same
state drive a served page and notebook widgets.

The state talks to the engine only through its public API: the catalogue
(:mod:`engine.data.catalog`), the registries (:mod:`engine.registry`), the configuration
(:class:`engine.config.ExperimentConfig`), the launchers (:func:`engine.launch.submit`,
:func:`engine.launch.attach`) and the run store (:class:`engine.runs.RunStore`). It never
reaches into a training process: progress is read from the run folder by :meth:`AppState.poll`.

Example
-------
>>> state = AppState(run_root="/tmp/finescale-runs")   # doctest: +SKIP
>>> state.load_choices()                               # doctest: +SKIP
>>> state.dataset = "demo_alps"                        # doctest: +SKIP
>>> state.config_error                                 # doctest: +SKIP
''
>>> run_id = state.train()                             # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from pathlib import Path
from typing import Any

import param

from .validation import IN_PROCESS_LAUNCHERS

log = logging.getLogger(__name__)

#: Training defaults of the form, small on purpose: a demo run finishes in about a minute on a
#: laptop CPU. The library's own defaults (engine.config.TrainingConfig) are for real runs.
DEMO_TRAINING = {"epochs": 3, "samples_per_epoch": 256, "batch_size": 16, "patch_size": 32}

#: Seconds between two questions to a launcher about an unfinished run (see AppState.poll).
JOB_CHECK_SECONDS = 10.0

#: Columns of :attr:`AppState.runs` (one dict per run, newest first).
RUN_COLUMNS = ("run_id", "name", "variable", "state", "progress", "epoch", "rmse", "units", "launcher", "job_id",
               "created")

#: Experiment fields that make up the configuration; a change to any re-validates it.
_CONFIG_FIELDS = (
    "run_name", "dataset", "variable", "scale", "patch_size", "train_period", "val_period", "test_period",
    "backbone", "upsampling", "loss", "epochs", "samples_per_epoch", "batch_size", "lr",
    "launcher", "partition", "account", "slurm_time", "nodes", "gpus_per_node", "cpus_per_task", "mem_gb",
    "region", "use_region",
)

#: Largest configuration file the dashboard reads (an upload, not a path on the server).
MAX_CONFIG_BYTES = 200_000


def _as_list(variables: Any) -> list[str]:
    """Variable names from catalogue metadata, which may hold a list or a {name: units} map."""
    if variables is None:
        return []
    if isinstance(variables, str):
        return [variables]
    if isinstance(variables, dict):
        return [str(v) for v in variables]
    return [str(v) if not isinstance(v, dict) else str(v.get("name")) for v in variables]


def _to_date(value: Any) -> _dt.date:
    """A ``datetime.date`` from an ISO string, numpy datetime64, pandas Timestamp or date."""
    import pandas as pd

    return pd.Timestamp(value).date()


def _period_from_metadata(period: Any) -> tuple | None:
    """``(first, last)`` dates from catalogue metadata ``period: [start, end]`` (end None: ongoing)."""
    if not period or len(period) != 2 or not period[0]:
        return None
    try:
        start = _to_date(period[0])
        end = _to_date(period[1]) if period[1] else _dt.date.today()
    except (ValueError, TypeError):
        return None
    return (start, end) if start <= end else None


def set_choices(obj: param.Parameterized, name: str, objects, preferred: Any = None) -> None:
    """Give the selector ``obj.<name>`` new choices, keeping its value when still valid (else
    ``preferred`` when offered, else the first choice, else None)."""
    objects = list(objects)
    current = getattr(obj, name)
    value = current if current in objects else (preferred if preferred in objects else (objects[0] if objects else None))
    obj.param[name].objects = objects
    # Set the value after the choices, and even if it looks unchanged: a widget shown for
    # this parameter may have picked its first new option and written it back here.
    if getattr(obj, name) != value:
        setattr(obj, name, value)


class AppState(param.Parameterized):
    """All state of the dashboard: data choice, experiment form, runs, selected run and time.

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

    # -- runs ---------------------------------------------------------------------------
    runs = param.List(default=[], item_type=dict, doc="One dict per run in the store (see RUN_COLUMNS), newest first.")
    selected_run = param.String(default=None, allow_None=True, doc="Run id shown in the progress and results views.")
    picked_runs = param.List(default=[], item_type=str, doc="Run ids ticked in the runs table (the compare view "
                                                              "shows them).")
    run_status = param.Dict(default={}, doc="status.json of the selected run.")
    epochs_log = param.List(default=[], item_type=dict, doc="Per-epoch metrics of the selected run.")
    log_tail = param.String(default="", doc="The last lines of the selected run's logs.")
    step_log = param.List(default=[], item_type=dict, doc="Step losses of the selected run: dicts with 'epoch' "
                                                            "(fractional, from 1), 'metric' and 'value'.")
    progress_info = param.Dict(default={}, doc="Live progress of the selected run: epoch, step, steps (per epoch), "
                                               "loss, samples_per_s, elapsed_s, eta_s (absent when unknown).")

    # -- results of the selected run ----------------------------------------------------
    times = param.List(default=[], item_type=str, doc="Time labels of the selected run's predictions.")
    selected_time = param.Selector(default=None, objects=[], doc="Time shown in the maps.")
    results_version = param.Integer(default=0, doc="Bumped whenever another run's results are loaded.")
    scores = param.DataFrame(default=None, allow_None=True, doc="Scores table (model x metric) of the selected run.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        from engine.runs import RunStore

        self._store = RunStore(self.run_root)
        with param.edit_constant(self):
            self.run_root = str(self._store.root)
        self._handles: dict[str, Any] = {}  # launcher handles of runs submitted from this session
        self._run_names: dict[str, str] = {}  # run id -> config name (config.yaml never changes)
        self._run_vars: dict[str, tuple[str, str]] = {}  # run id -> (variable, units)
        self._predictions = None  # xarray.Dataset of the selected run, in memory
        self._predictions_key: tuple | None = None
        self._static_cache: dict[tuple, Any] = {}
        self._rmse = None
        self._job_checked: dict[str, float] = {}
        self._launch_extra: dict[str, Any] = {}  # launch.extra of a loaded file (YAML only)
        self._switched = ""  # why a loaded file's launcher was switched (see apply_config)
        self._poll_lock = threading.Lock()
        #: Called as ``on_run_state(run_id, state)`` when a run reaches a final state between two
        #: polls (the served app shows a notification); None: nobody listens.
        self.on_run_state = None
        from .schema import ExperimentOptions

        with param.edit_constant(self):
            self.options = ExperimentOptions()
        self.options.param.watch(lambda *events: self._validate(), [n for n in self.options.param if n not in ("name", "version")])
        self.options.param.watch(lambda *events: self._update_predictors(), ["data_downscaling", "data_lowres"])

    # ======================================================================================
    # Choices: catalogue and registries
    # ======================================================================================
    def start(self) -> None:
        """Read the choices and the run store once (the served app then polls periodically)."""
        self.load_choices()
        self.poll()

    @property
    def store(self):
        """The :class:`engine.runs.RunStore` this dashboard reads."""
        return self._store

    def load_choices(self) -> None:
        """Read the catalogue entries and the engine's registries into the selectors.

        Called once per session after the page is up (it imports torch through the model
        registry, a few seconds the first time), never at import.
        """
        from engine import registry
        from engine.config import ExperimentConfig
        from engine.data import catalog

        try:
            registry.load_plugins()
        except Exception as exc:  # show what did register, and say what is missing
            log.exception("engine plugins failed to load")
            self.message = f"Some engine parts failed to load ({exc}); their choices are missing."
        defaults = ExperimentConfig()
        entries = []
        for name in catalog.list_entries(self.catalog):
            role = (catalog.entry_metadata(name, self.catalog) or {}).get("role")
            # Targets are high-resolution entries; static and low-res-only entries pair with them.
            if role in (None, "highres"):
                entries.append(name)
        self._set_objects("backbone", registry.BACKBONES.names(), defaults.model.backbone)
        self._update_upsampling()
        if defaults.model.upsampling in self.param.upsampling.objects:
            self.upsampling = defaults.model.upsampling
        self._set_objects("loss", registry.LOSSES.names(), defaults.training.loss)
        # Only launchers that start a separate process: training inside the web server would
        # block every session until it ends (app.validation.IN_PROCESS_LAUNCHERS).
        self._set_objects("launcher", launcher_choices(), defaults.launch.launcher)
        self._set_objects("dataset", entries, defaults.data.highres)
        lowres = [n for n in catalog.list_entries(self.catalog)
                  if (catalog.entry_metadata(n, self.catalog) or {}).get("role") == "lowres"]
        self.options.set_choices("data", "lowres", lowres)
        self._update_run_choices()
        if self.dataset is not None and not self.dataset_info:  # the watcher did not fire
            self._on_dataset()
        self.choices_loaded = True
        self._validate()

    def _set_objects(self, name: str, objects: list, preferred: Any = None) -> None:
        set_choices(self, name, objects, preferred)

    @param.depends("backbone", watch=True)
    def _update_upsampling(self) -> None:
        """Offer only the upsampling methods the backbone can be combined with."""
        from engine import registry

        names = registry.UPSAMPLERS.names()
        if self.backbone is not None and self.backbone in registry.BACKBONES:
            allowed = registry.BACKBONES.info(self.backbone).get("upsampling")
            if allowed:
                names = [n for n in names if n in allowed]
        self._set_objects("upsampling", names, self.upsampling)

    @param.depends("dataset", watch=True)
    def _on_dataset(self) -> None:
        """Read the dataset's variables and time range; default the periods to fit inside it."""
        if self.dataset is None:
            return
        from engine.config import DataConfig
        from engine.data import catalog

        info = dict(catalog.entry_metadata(self.dataset, self.catalog) or {})
        variables = _as_list(info.get("variables"))
        time_range = _period_from_metadata(info.get("period"))
        if time_range is None and not info.get("remote") and not info.get("fetch"):
            # No period in the metadata: read the time coordinate of a local entry (lazy open).
            # Never for remote or downloaded entries: selecting one must not hit the network.
            try:
                with catalog.open_dataset(self.dataset, self.catalog) as ds:
                    if ds.sizes.get("time", 0):
                        times = ds["time"].values
                        time_range = (_to_date(times[0]), _to_date(times[-1]))
                    if not variables:
                        variables = [v for v in ds.data_vars if ds[v].ndim >= 2]
            except Exception as exc:  # the form still works with the library's default periods
                log.warning("could not open %s: %s", self.dataset, exc)
        defaults = DataConfig()
        with param.parameterized.batch_call_watchers(self):
            self.dataset_info = info
            self._set_objects("variable", variables, defaults.variable)
            self.time_range = time_range
            self._set_periods(time_range)
            self.region = None  # a box drawn on another domain means nothing here
        self._update_predictors()

    @param.depends("variable", watch=True)
    def _update_predictors(self) -> None:
        """Predictors: the dataset's other variables (MOS: the low-resolution entry's)."""
        if not hasattr(self, "options"):
            return
        source = self.dataset_info
        lowres = self.options.data_lowres if self.options.data_downscaling == "mos" else None
        if lowres:
            from engine.data import catalog

            try:
                source = catalog.entry_metadata(lowres, self.catalog) or {}
            except Exception:  # an entry that vanished from the catalogue: no predictors offered
                source = {}
        names = [v for v in _as_list(source.get("variables")) if v != self.variable]
        self.options.set_choices("data", "predictors", names)

    def _update_run_choices(self) -> None:
        """Runs that a diffusion run may build on (model.regression_run): completed ones."""
        done = [r["run_id"] for r in self.runs if r.get("state") == "completed"]
        if done != [v for v in self.options.param.model_regression_run.objects if v is not None]:
            self.options.set_choices("model", "regression_run", done)

    def _set_periods(self, time_range: tuple | None) -> None:
        """Keep the library's default periods when the data cover them, else split 70/15/15."""
        from engine.config import DataConfig

        d = DataConfig()
        default = [tuple(_to_date(v) for v in p) for p in (d.train_period, d.val_period, d.test_period)]
        if time_range is None or all(time_range[0] <= p[0] and p[1] <= time_range[1] for p in default):
            periods = default
        else:
            start, end = time_range
            days = (end - start).days
            cut1 = start + _dt.timedelta(days=int(days * 0.7))
            cut2 = start + _dt.timedelta(days=int(days * 0.85))
            one = _dt.timedelta(days=1)
            periods = [(start, cut1), (cut1 + one, cut2), (cut2 + one, end)]
        # No bounds on the period parameters: a picker holding the previous dataset's period
        # would refuse the new bounds. The data's range is shown beside the dataset instead.
        for name, value in zip(("train_period", "val_period", "test_period"), periods):
            setattr(self, name, tuple(value))

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

    @param.depends(*_CONFIG_FIELDS, watch=True)
    def _validate(self) -> None:
        """Re-validate on every change so each error shows beside its field as the user types.

        The configuration checks run here (milliseconds); the data checks (``engine check``:
        they open the entries) run in a thread and are merged in when done (:meth:`_data_errors`).
        """
        if not self.choices_loaded:
            return
        errors = self._form_errors()
        self._set_errors(errors)

    def _form_errors(self, wait: bool = False) -> dict[str, str]:
        from engine.config import ConfigError

        from . import validation as V

        try:
            config = self.build_config()
        except (ConfigError, ValueError, TypeError) as exc:
            message = str(exc)
            return {V.field_of(message): message}
        errors = {**V.limit_errors(config), **V.config_errors(config)}
        try:
            self._check_periods()
        except ConfigError as exc:
            errors.setdefault(V.field_of(str(exc)), str(exc))
        if not errors:
            errors.update(self._data_errors(config, wait=wait))
        return errors

    def check_now(self) -> dict[str, str]:
        """Run every check of the form here, the data checks included, and show the result
        (what :meth:`_validate` does, but waiting for the data checks: notebooks and tests)."""
        errors = self._form_errors(wait=True)
        self._set_errors(errors)
        self.checking_data = False
        return errors

    def _set_errors(self, errors: dict[str, str]) -> None:
        # One message a line, each once (a message naming two fields is filed under the first).
        text = "\n".join(dict.fromkeys(errors.values()))
        with param.parameterized.batch_call_watchers(self):
            if errors != self.field_errors:
                self.field_errors = dict(errors)
            self.config_error = text

    def _data_errors(self, config, wait: bool = False) -> dict[str, str]:
        """The data checks of a configuration that passed every other check.

        Results are kept per data section (shared by every session); an unknown one is worked
        out in a thread and the form re-validated when it is ready (``wait``: here and now)."""
        from . import datachecks

        key = datachecks.key_of(config)
        found = datachecks.cached(key)
        if found is not None:
            return found
        if wait:
            return datachecks.run(config, key)
        self.checking_data = True

        def done(errors):
            self.checking_data = False
            self._validate()

        datachecks.submit(config, key, done)
        # A check that finished at once (another session asked first) has its result stored.
        return datachecks.cached(key) or {}

    def _check_periods(self) -> None:
        """Periods must lie inside the dataset; the configuration cannot know the data's range,
        the dashboard does (catalogue metadata), so it says so before a job fails on it."""
        from engine.config import ConfigError

        if self.time_range is None:
            return
        lo, hi = self.time_range
        for name in ("train_period", "val_period", "test_period"):
            value = getattr(self, name)
            if value and not (lo <= value[0] and value[1] <= hi):
                raise ConfigError(
                    f"data.{name}=[{value[0]}, {value[1]}] is not valid; {self.dataset} covers {lo} to {hi}"
                )

    def train(self) -> str | None:
        """Validate the form and submit the run through its launcher.

        Returns
        -------
        str or None
            The new run id, or None when the configuration is invalid (see ``config_error``)
            or the launcher refused it (see ``message``).
        """
        from engine import launch
        from engine.config import ConfigError

        try:
            # Every check of the form, the data checks included (waited for: a job must never
            # fail on something the form could have said).
            errors = self._form_errors(wait=True)
            config = None if errors else self.build_config().validate()
        except Exception as exc:  # ConfigError names the bad value; anything else is shown too
            errors = {"": str(exc) if isinstance(exc, (ConfigError, ValueError)) else f"{type(exc).__name__}: {exc}"}
        if errors:
            self._set_errors(errors)
            return None
        if config.launch.launcher in IN_PROCESS_LAUNCHERS:  # refused by the checks; never reached
            return None
        try:
            handle = launch.submit(config, self._store)
        except Exception as exc:  # shown to the user; the traceback goes to the server log
            log.exception("submit failed")
            self.message = f"Could not start the run: {exc}"
            return None
        run_id = _handle_run_id(handle)
        self._handles[run_id] = handle
        from .niceness import yield_cpu

        try:  # a local job yields the CPU to the sessions of this server (app.niceness)
            yield_cpu(handle)
        except ValueError as exc:  # a bad $FINESCALE_JOB_NICENESS: the run still trains
            log.warning("%s", exc)
        self.message = f"Started run {run_id} ({config.launch.launcher})."
        self.poll()
        self.selected_run = run_id
        return run_id

    def cancel(self, run_id: str | None = None) -> None:
        """Cancel a run (default: the selected one) through its launcher handle."""
        from engine import launch
        from engine.runs import FINAL_STATES, RunStoreError

        run_id = run_id or self.selected_run
        if not run_id:
            return
        try:
            run = self._store.get(run_id)
        except RunStoreError as exc:
            self.message = str(exc)
            return
        if run.state in FINAL_STATES:
            self.message = f"Run {run_id} is already {run.state}."
            return
        try:
            handle = self._handles.get(run_id) or launch.attach(run)
            handle.cancel()
        except Exception as exc:
            log.exception("cancel failed")
            self.message = f"Could not cancel {run_id}: {exc}"
            return
        self.message = f"Cancelled run {run_id}."
        self.poll()

    # ======================================================================================
    # Runs: polling the run store
    # ======================================================================================
    def poll(self) -> None:
        """Re-read the run store: the runs list and the selected run's progress and results.

        Cheap enough for a periodic callback (a status.json per run, the selected run's
        events); parameters are only set when their value changed, so views re-render only
        when something happened.
        """
        # Periodic polls run in Panel's thread pool: one at a time per session (a slow file
        # system must not pile them up), the next simply skips.
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            self._poll()
        finally:
            self._poll_lock.release()

    def _poll(self) -> None:
        from engine.runs import FINAL_STATES

        before = {r["run_id"]: r["state"] for r in self.runs}
        rows = []
        for run in reversed(self._store.list()):
            try:
                status = run.status()
                if status.get("state") not in FINAL_STATES:
                    self._check_job(run)
                    status = run.status()
            except Exception as exc:  # one broken folder must not hide the others
                status = {"state": "unknown", "error": str(exc)}
            rows.append(self._run_row(run, status))
        if rows != self.runs:
            self.runs = rows
            self._update_run_choices()
            if self.on_run_state is not None and before:
                for row in rows:  # finished or failed since the last poll: tell the user
                    old = before.get(row["run_id"])
                    if old is not None and old != row["state"] and row["state"] in FINAL_STATES:
                        try:
                            self.on_run_state(row["run_id"], row["state"])
                        except Exception:  # a notification must never break polling
                            log.exception("run state notification failed")
        if self.selected_run is not None:
            self._refresh_selected()

    def _check_job(self, run) -> None:
        """Ask the launcher about an unfinished run now and then (not every poll: for SLURM
        that is a squeue call). A job that died without reporting is then marked failed in
        its status.json by the handle, and the table shows it."""
        now = time.monotonic()
        if now - self._job_checked.get(run.run_id, -1e9) < JOB_CHECK_SECONDS:
            return
        self._job_checked[run.run_id] = now
        from engine import launch

        try:
            handle = self._handles.get(run.run_id)
            if handle is None:
                handle = self._handles[run.run_id] = launch.attach(run)
            handle.status()
        except Exception as exc:  # a launcher that cannot be reached from here (no sbatch)
            log.debug("cannot check job of %s: %s", run.run_id, exc)

    def _run_row(self, run, status: dict) -> dict:
        if run.run_id not in self._run_names:
            # config.yaml never changes: name, variable and its units are read once per run.
            try:
                config = run.config
                self._run_names[run.run_id] = config.name
                self._run_vars[run.run_id] = (config.data.variable, _units_of(config.data.highres, config.data.variable,
                                                                              config.data.catalog))
            except Exception:
                self._run_names[run.run_id] = ""
                self._run_vars[run.run_id] = ("", "")
        variable, units = self._run_vars.get(run.run_id, ("", ""))
        scores = status.get("scores") or {}
        rmse = (scores.get("model") or {}).get("rmse")
        return {
            "run_id": run.run_id,
            "name": self._run_names[run.run_id],
            "variable": variable,
            "units": units,
            "launcher": str(status.get("launcher") or ""),
            "job_id": str(status.get("job_id") or ""),
            "state": str(status.get("state", "pending")),
            "progress": float(status.get("progress") or 0.0),
            "epoch": _epoch_label(status),
            "rmse": float(rmse) if rmse is not None else None,
            "created": str(status.get("created") or ""),
        }

    @param.depends("selected_run", watch=True)
    def _on_selected_run(self) -> None:
        from engine.runs import RunStoreError

        if self.selected_run is None:
            self._clear_selected()
            return
        try:
            self._store.get(self.selected_run)  # confines ids to the run root
        except RunStoreError as exc:
            self.message = str(exc)
            self.selected_run = None
            return
        self._refresh_selected()

    def _clear_selected(self) -> None:
        self.run_status, self.epochs_log, self.log_tail = {}, [], ""
        self.step_log, self.progress_info = [], {}
        self._set_results(None)

    def _refresh_selected(self) -> None:
        from engine.runs import RunStoreError

        try:
            run = self._store.get(self.selected_run)
        except RunStoreError:
            self.selected_run = None
            return
        status = run.status()
        if status != self.run_status:
            self.run_status = status
        epochs = run.epochs()
        if epochs != self.epochs_log:
            self.epochs_log = epochs
        tail = run.log_tail(30)
        if tail != self.log_tail:
            self.log_tail = tail
        steps, info = self._progress_of(run, status)
        if steps != self.step_log:
            self.step_log = steps
        if info != self.progress_info:
            self.progress_info = info
        self._load_results(run)

    def _progress_of(self, run, status: dict) -> tuple[list[dict], dict]:
        """Step losses and live progress from the run's events (engine.runs: "step" events are
        written every few seconds during an epoch) and status (progress, start time)."""
        import pandas as pd

        try:
            config = run.config
            batch = int(config.training.batch_size)
            per_epoch = max(1, int(config.training.samples_per_epoch) // max(batch, 1))
        except Exception:  # a run folder without a readable configuration
            batch, per_epoch = 0, 0
        steps = run.events("step")
        rows, info = [], {}
        for e in steps:
            loss = {k: v for k, v in e.items() if "loss" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
            x = int(e.get("epoch", 0)) + ((int(e.get("step", 0)) + 1) / per_epoch if per_epoch else 0.0)
            for k, v in loss.items():
                rows.append({"epoch": x, "metric": f"{k} (step)", "value": float(v)})
        progress = float(status.get("progress") or 0.0)
        started = status.get("started")
        if steps:
            last = steps[-1]
            info.update(epoch=int(last.get("epoch", 0)) + 1, step=int(last.get("step", 0)) + 1, steps=per_epoch or None)
            loss = [v for k, v in last.items() if "loss" in k and isinstance(v, (int, float))]
            if loss:
                info["loss"] = float(loss[0])
            same = [e for e in steps if e.get("epoch") == last.get("epoch")]
            if len(same) >= 2 and batch:
                dt = (pd.Timestamp(same[-1]["time"]) - pd.Timestamp(same[0]["time"])).total_seconds()
                if dt > 0:
                    info["samples_per_s"] = (int(same[-1]["step"]) - int(same[0]["step"])) * batch / dt
        epochs = run.epochs()
        if "samples_per_s" not in info and epochs and epochs[-1].get("samples_per_s"):
            info["samples_per_s"] = float(epochs[-1]["samples_per_s"])
        if started and status.get("state") == "running":
            try:
                elapsed = (pd.Timestamp.now(tz="UTC") - pd.Timestamp(started).tz_convert("UTC")).total_seconds()
            except (TypeError, ValueError):
                elapsed = None
            if elapsed is not None and elapsed > 0:
                info["elapsed_s"] = elapsed
                if 0 < progress < 1:
                    info["eta_s"] = elapsed * (1 - progress) / progress
        return rows, info

    @property
    def loss_history(self):
        """Per-epoch loss values of the selected run as a tidy DataFrame (epoch, metric, value)."""
        import pandas as pd

        rows = []
        for record in self.epochs_log:
            for key, value in record.items():
                if "loss" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append({"epoch": int(record["epoch"]), "metric": key, "value": float(value)})
        return pd.DataFrame(rows, columns=["epoch", "metric", "value"])

    # ======================================================================================
    # Results of the selected run
    # ======================================================================================
    def _load_results(self, run) -> None:
        """Load predictions.nc and scores.csv once they exist (and again if they change)."""
        path = run.predictions_path
        if not path.exists():
            if self._predictions_key is not None and self._predictions_key[0] != run.run_id:
                self._set_results(None)
            return
        stat = path.stat()
        scores_mtime = run.scores_path.stat().st_mtime if run.scores_path.exists() else None
        key = (run.run_id, stat.st_mtime, stat.st_size, scores_mtime)
        if key == self._predictions_key:
            return
        from . import cache

        # Shared by every session and view of the server (app.cache), read once per version.
        ds = cache.predictions(path)
        if ds is None:
            return
        self._predictions_key = key
        self._set_results(ds, run)

    def _set_results(self, ds, run=None) -> None:
        self._predictions = ds
        self._rmse = None
        if ds is None:
            self._predictions_key = None
            with param.parameterized.batch_call_watchers(self):
                self.times = []
                self.param.selected_time.objects = []
                self.selected_time = None
                self.scores = None
                self.results_version += 1
            return
        from engine.data.timeaxis import stamp  # any calendar (noleap, 360_day: cftime times)

        labels = [stamp(t)[:16] for t in ds["time"].values] if "time" in ds.dims else []
        with param.parameterized.batch_call_watchers(self):
            self.times = labels
            self.param.selected_time.objects = labels
            if self.selected_time not in labels:
                self.selected_time = labels[0] if labels else None
            self.scores = _scores_table(run.scores_path) if run is not None else None
            self.results_version += 1

    @property
    def predictions(self):
        """The selected run's predictions (``xarray.Dataset``, in memory) or None."""
        return self._predictions

    @property
    def variable_name(self) -> str:
        ds = self._predictions
        return str(ds.attrs.get("variable", "")) if ds is not None else ""

    #: The fields of :meth:`map_field`, in the order the maps show them.
    MAP_FIELDS = ("truth", "bicubic", "model", "rmse")

    def map_field(self, name: str, time: str | None = None):
        """One map of the selected run, masked where invalid.

        Parameters
        ----------
        name : {"truth", "bicubic", "model", "rmse"}
            A field of predictions.nc at ``time``, or the per-pixel RMSE of the model over the
            whole prediction period (which does not depend on ``time``).
        time : str, optional
            A label from :attr:`times`; default the selected time.

        Returns
        -------
        xarray.DataArray or None
            ``(lat, lon)``; None when the run has no such field.
        """
        ds = self._predictions
        if ds is None:
            return None
        if name == "rmse":
            return self.rmse_field()
        if name not in ds:
            return None
        time = time or self.selected_time
        index = self.times.index(time) if time in self.times else 0
        da = ds[name]
        if "member" in da.dims:  # ensembles: the maps show the ensemble mean
            da = da.mean("member")
        if "time" in da.dims:
            da = da.isel(time=index)
        mask = _valid_mask(ds)
        if mask is not None:
            da = da.where(mask.isel(time=index) if "time" in mask.dims else mask)
        return da

    def rmse_field(self):
        """Per-pixel RMSE of the model over the run's prediction period, ``(lat, lon)``."""
        ds = self._predictions
        if ds is None or "model" not in ds or "truth" not in ds:
            return None
        if self._rmse is not None:
            return self._rmse
        import numpy as np

        model = ds["model"].mean("member") if "member" in ds["model"].dims else ds["model"]
        err2 = (model - ds["truth"]) ** 2
        mask = _valid_mask(ds)
        if mask is not None:
            err2 = err2.where(mask)
        rmse = np.sqrt(err2.mean("time")) if "time" in err2.dims else np.sqrt(err2)
        rmse.name = "rmse"
        rmse.attrs = {"long_name": "root mean square error of the model", "units": ds["truth"].attrs.get("units", "")}
        self._rmse = rmse
        return rmse

    def land_mask(self):
        """The real land mask on the predictions' grid (``engine.data.static``), or None.

        Used to draw coastlines offline as its 0.5 contour; cached per grid.
        """
        ds = self._predictions
        if ds is None:
            return None
        lat, lon = ds["lat"].values, ds["lon"].values
        key = (lat.size, float(lat[0]), float(lat[-1]), lon.size, float(lon[0]), float(lon[-1]))
        if key not in self._static_cache:
            try:
                from engine.data.static import static_fields

                self._static_cache[key] = static_fields(lat, lon, ["land_mask"])["land_mask"].astype(float)
            except Exception as exc:  # maps without coastlines beat no maps
                log.warning("no land mask for coastlines: %s", exc)
                self._static_cache[key] = None
        return self._static_cache[key]


def _units_of(entry: str, variable: str, catalog: str | None) -> str:
    """Units of a catalogue entry's variable from its metadata ('' when not said)."""
    from engine.data import catalog as cat

    try:
        variables = (cat.entry_metadata(entry, catalog) or {}).get("variables")
    except Exception:  # an entry no longer in the catalogue
        return ""
    info = variables.get(variable) if isinstance(variables, dict) else None
    return str(info.get("units", "")) if isinstance(info, dict) else ""


def launcher_choices() -> list[str]:
    """The registered launchers that run training in a separate process (local, SLURM, ...):
    the engine's registry minus :data:`app.validation.IN_PROCESS_LAUNCHERS`, and minus any
    whose registry entry says ``in_process``."""
    from engine import registry

    return [n for n in registry.LAUNCHERS.names()
            if n not in IN_PROCESS_LAUNCHERS and not (registry.LAUNCHERS.info(n) or {}).get("in_process")]


def _epoch_label(status: dict) -> str:
    """'2/3' for a run that finished its second of three epochs (status ``epoch`` is 0-based)."""
    epoch, total = status.get("epoch"), status.get("epochs")
    if epoch is None:
        return f"0/{total}" if total else ""
    return f"{int(epoch) + 1}/{total}" if total else str(int(epoch) + 1)


def _valid_mask(ds):
    if "mask" not in ds:
        return None
    return ds["mask"].astype(bool)


def _scores_table(path: Path):
    """scores.csv as a compact table: one row per model (model, baselines), one column per metric."""
    import pandas as pd

    if not Path(path).exists():
        return None
    df = pd.read_csv(path)
    if df.empty or not {"model", "metric", "value"} <= set(df.columns):
        return None
    # The headline table: the whole domain over the test period when those columns exist.
    for column, preferred in (("region", ("all", "global", "domain")), ("period", ("test",))):
        if column in df.columns:
            chosen = df[df[column].astype(str).isin(preferred)]
            if not chosen.empty:
                df = chosen
    table = df.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
    order = ["model"] + sorted(m for m in table.index if m != "model")
    table = table.reindex([m for m in order if m in table.index])
    table.columns.name = None
    return table.reset_index()


def _handle_run_id(handle) -> str:
    """The run id of a launcher handle (``handle.run`` is an :class:`engine.runs.Run`)."""
    run = getattr(handle, "run", None)
    if run is not None:
        return getattr(run, "run_id", None) or Path(run).name
    run_id = getattr(handle, "run_id", None)
    if run_id:
        return str(run_id)
    return str(handle.status()["run_id"])
