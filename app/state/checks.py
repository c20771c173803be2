"""Checks of the form as the user types: the configuration's own checks, the form's limits,
periods inside the data, and the data checks (``engine check``, in a thread, shared by every
session); ``{dotted field: message}`` shown beside each field (:mod:`app.validation`).
"""

from __future__ import annotations

import param

from ..serial import one_at_a_time
from .choices import ChoicesState
from .form import _CONFIG_FIELDS


class CheckedState(ChoicesState):
    """:class:`~app.state.choices.ChoicesState` whose every change is checked."""

    @param.depends(*_CONFIG_FIELDS, watch=True)
    @one_at_a_time  # two quick edits: the older check must not write its errors after the newer one
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

        from .. import validation as V

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
        from .. import datachecks

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
