"""Validation of the experiment form, field by field, with the engine's own checks.

The form shows every problem beside the field that causes it, as the user types, and the
Train button stays disabled while any stands. The checks are the engine's:

1. :meth:`engine.config.ExperimentConfig.validate` — it stops at the first bad value, so
   :func:`config_errors` re-validates with each faulty field put back to the library's default
   until the configuration passes, collecting one message per field;
2. the dashboard's own limits for values the engine accepts but a form should not send
   without a second look (:data:`FORM_LIMITS`: a million epochs, a learning rate of 5);
3. the data checks of ``engine check`` (:func:`engine.data.check.check_config`, opening the
   entries lazily: a patch larger than the domain, periods outside the data ...), when that
   function exists; :func:`domain_errors` covers the patch-versus-domain check until then.

Messages are the engine's (``training.epochs=0 is not valid; expected a number >= 1``); the
dotted name at their start says which field they belong to (:func:`field_of`).

Example
-------
>>> from engine.config import ExperimentConfig
>>> errors = config_errors(ExperimentConfig().replace(training={"epochs": 0, "lr": 0.0}))
>>> sorted(errors)
['training.epochs', 'training.lr']
>>> limit_errors(ExperimentConfig().replace(training={"epochs": 1_000_000}))["training.epochs"][:41]
'training.epochs=1000000 is not valid; the'
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

#: Launchers that train inside the calling process. The dashboard never offers them: training
#: in the web server would block every session until it ends.
IN_PROCESS_LAUNCHERS = ("inline",)

#: Inclusive limits the form enforces on top of the engine's checks: ``(low, high)`` per
#: dotted field. The engine accepts more (a YAML file run with ``python -m engine`` may ask for
#: it); a form that sends a typo such as 1000000 epochs to a cluster must not.
FORM_LIMITS: dict[str, tuple[float, float]] = {
    "data.scale": (1, 16),
    "training.epochs": (1, 10_000),
    "training.samples_per_epoch": (1, 10_000_000),
    "training.batch_size": (1, 4096),
    "training.lr": (1e-7, 1.0),
    "launch.nodes": (1, 1024),
    "launch.gpus_per_node": (0, 64),
    "launch.cpus_per_task": (1, 1024),
    "launch.mem_gb": (0, 100_000),
}

_FIELD = re.compile(r"^\s*((?:data|model|training|inference|launch)\.[A-Za-z_]+|name)\b")

#: Key of a message that no field owns (shown under the form).
GENERAL = ""


def field_of(message: str) -> str:
    """The dotted field a message of the engine starts with (``training.epochs``), or ``''``.

    >>> field_of("training.epochs=0 is not valid; expected a number >= 1")
    'training.epochs'
    >>> field_of("target variable 'tas' is not in entry 'demo_alps'; its variables: t2m, pr")
    'data.variable'
    >>> field_of("an experiment configuration must be a mapping")
    ''
    """
    match = _FIELD.match(str(message))
    if match:
        return match.group(1)
    text = str(message).lower()
    for words, field in _KEYWORDS:  # engine check's messages that start with a sentence
        if all(w in text for w in words):
            return field
    return GENERAL


#: Fields of ``engine check`` messages that do not start with the dotted name.
_KEYWORDS = ((("target variable",), "data.variable"), (("patch",), "data.patch_size"),
             (("lowres",), "data.lowres"), (("predictor",), "data.predictors"))


def _default_of(field: str) -> Any:
    """The library's default value of a dotted field (a valid value to test the others with)."""
    from engine.config import SECTIONS, ExperimentConfig

    if "." not in field:
        return getattr(ExperimentConfig(), field)
    section, name = field.split(".", 1)
    return getattr(SECTIONS[section](), name)


def _with(config, field: str, value: Any):
    if "." not in field:
        return dataclasses.replace(config, **{field: value})
    section, name = field.split(".", 1)
    return config.replace(**{section: {name: value}})


def config_errors(config, max_fields: int = 20) -> dict[str, str]:
    """Every field :meth:`ExperimentConfig.validate` refuses, ``{dotted field: message}``.

    ``validate`` raises on the first problem; the faulty field is then set to its default and
    the configuration validated again, until it passes (or a message names no field, or the
    same field again: its default cannot fix it, so nothing after it can be told apart).
    """
    from engine.config import ConfigError

    errors: dict[str, str] = {}
    for _ in range(max_fields):
        try:
            config.validate()
            return errors
        except (ConfigError, ValueError, TypeError) as exc:
            message = str(exc) if isinstance(exc, (ConfigError, ValueError)) else f"{type(exc).__name__}: {exc}"
        field = field_of(message)
        if field in errors or field == GENERAL:
            errors.setdefault(field, message)
            return errors
        errors[field] = message
        try:
            config = _with(config, field, _default_of(field))
        except Exception:  # the default does not fit this configuration either
            return errors
    return errors


def limit_errors(config) -> dict[str, str]:
    """The dashboard's :data:`FORM_LIMITS` and launcher rule, ``{dotted field: message}``."""
    errors: dict[str, str] = {}
    for field, (low, high) in FORM_LIMITS.items():
        section, name = field.split(".")
        value = getattr(getattr(config, section), name)
        if value is None:
            if field == "launch.mem_gb":  # None: the cluster's default
                continue
            errors[field] = f"{field} is empty; the form accepts {low:g} .. {high:g}"
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
            errors[field] = (f"{field}={value!r} is not valid; the form accepts {low:g} .. {high:g} "
                             "(a larger value can be run from a YAML file with python -m engine)")
    if config.launch.launcher in IN_PROCESS_LAUNCHERS:
        errors["launch.launcher"] = (f"launch.launcher={config.launch.launcher!r} trains inside the dashboard's server "
                                     "and is not offered here; accepted: local, slurm")
    return errors


def domain_errors(config, shape: tuple[int, int] | None) -> dict[str, str]:
    """The patch must fit the high-resolution domain ``shape`` = (ny, nx) (None: unknown).

    Only used while :func:`engine.data.check.check_config` does not exist; the engine's check
    covers this and more.
    """
    patch = config.data.patch_size
    if not shape or not isinstance(patch, int) or isinstance(patch, bool):
        return {}
    ny, nx = shape
    if config.data.bbox is not None:  # a sub-domain: the engine cuts it first; its size is not known here
        return {}
    if patch > min(ny, nx):
        return {"data.patch_size": (f"data.patch_size={patch} is not valid; the domain of {config.data.highres} is "
                                    f"{ny} x {nx} cells, so a patch is at most {min(ny, nx)}")}
    return {}


def data_check(config) -> dict[str, str] | None:
    """``engine check``'s data problems, ``{dotted field: messages}``; None when the engine has
    no :func:`engine.data.check.check_config` (yet). Opens the entries lazily: seconds, so the
    dashboard calls it off the event loop."""
    try:
        from engine.data.check import check_config
    except ImportError:
        return None
    errors: dict[str, str] = {}
    for message in check_config(config) or []:
        field = field_of(message)
        errors[field] = f"{errors[field]}\n{message}" if field in errors else str(message)
    return errors
