"""Choices of the form read from the catalogue and the engine's registries: datasets and
their variables, periods inside the data, backbones and the upsamplings they allow, losses,
launchers (process-based only), predictors.
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

import param

from .form import FormState
from .values import _as_list, _period_from_metadata, _to_date, launcher_choices, set_choices

log = logging.getLogger(__name__)


class ChoicesState(FormState):
    """:class:`~app.state.form.FormState` with its selectors' choices read from the engine."""

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
        # The selected entry first: a Select shown for this parameter falls back to its first option
        # while its options change, and under load that fallback's echo from the browser can arrive
        # after the value below and win (a session then showed demo_alps but worked on arco_era5).
        preferred = self.dataset if self.dataset in entries else defaults.data.highres
        entries = sorted(entries, key=lambda name: name != preferred)
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
