"""The experiment form's remaining fields, generated from :mod:`engine.config`'s dataclasses.

:class:`app.state.AppState` holds the fields the form shows first (dataset, variable, scale,
periods, backbone, upsampling, loss, epochs, ..., launcher and SLURM resources). Every other
field of :class:`engine.config.ExperimentConfig` becomes a parameter of
:class:`ExperimentOptions`, generated here from the dataclass fields (their types and
defaults), with the accepted values taken from the engine (module constants and registries).
A field added to the engine's configuration therefore shows up in the dashboard without a
change here; only its list of accepted values may need naming in :func:`choices`.

Example
-------
>>> options = ExperimentOptions()
>>> options.model_filters, options.training_optimizer
(32, 'adam')
>>> sorted(option_sections())
['data', 'inference', 'launch', 'model', 'training']
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from typing import Any

import param

#: ``(section, field)`` pairs that :class:`app.state.AppState` shows itself (or that are not
#: user choices: the catalogue path is fixed by the server, the box comes from the region
#: picker, ``launch.extra`` is free-form and round-trips through YAML only).
OWN_FIELDS = {
    ("data", "highres"), ("data", "variable"), ("data", "scale"), ("data", "patch_size"),
    ("data", "train_period"), ("data", "val_period"), ("data", "test_period"), ("data", "catalog"),
    ("data", "bbox"),
    ("model", "backbone"), ("model", "upsampling"),
    ("training", "loss"), ("training", "epochs"), ("training", "samples_per_epoch"), ("training", "batch_size"),
    ("training", "lr"),
    ("launch", "launcher"), ("launch", "partition"), ("launch", "account"), ("launch", "time"),
    ("launch", "nodes"), ("launch", "gpus_per_node"), ("launch", "cpus_per_task"), ("launch", "mem_gb"),
    ("launch", "extra"),
}

#: Fields whose value is chosen from a list only known at run time (catalogue, run store);
#: :meth:`ExperimentOptions.set_choices` fills them.
DYNAMIC = {("data", "lowres"), ("data", "predictors"), ("model", "regression_run")}


def _sections() -> dict[str, type]:
    from engine import config

    return dict(config.SECTIONS)


def choices(section: str, name: str) -> list | None:
    """The accepted values of a field, from the engine's constants and registries (None: free)."""
    from engine import config, registry

    fixed = {
        ("data", "downscaling"): config.DOWNSCALING,
        ("data", "sample"): config.SAMPLES,
        ("model", "interpolation"): config.INTERPOLATIONS,
        ("model", "normalization"): config.NORMALIZATIONS,
        ("model", "activation"): config.ACTIVATIONS,
        ("model", "sampler"): config.SAMPLERS,
        ("model", "denoiser"): config.DENOISERS,
        ("training", "learning"): config.LEARNING,
        ("training", "optimizer"): config.OPTIMIZERS,
        ("training", "precision"): config.PRECISIONS,
        ("training", "device"): config.DEVICES,
        ("training", "channels_last"): config.CHANNELS_LAST,
        ("inference", "format"): config.PREDICTION_FORMATS,
    }
    if (section, name) in fixed:
        return list(fixed[(section, name)])
    if (section, name) == ("data", "static"):
        from engine.data.static import STATIC_FIELDS

        return list(STATIC_FIELDS)
    if (section, name) == ("data", "normalisation"):
        return registry.NORMALISATIONS.names()
    return None


def option_fields() -> list[tuple[str, dataclasses.Field]]:
    """Every configuration field the generated form holds, in the dataclasses' order."""
    out = []
    for section, cls in _sections().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (section, f.name) not in OWN_FIELDS:
                f.type = hints.get(f.name, f.type)
                out.append((section, f))
    return out


def option_sections() -> set[str]:
    return {section for section, _ in option_fields()}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _parameter(section: str, f: dataclasses.Field) -> param.Parameter:
    """A param for one dataclass field: its type and default decide the kind of widget."""
    default = _default(f)
    label = f"{section}.{f.name}"
    doc = f"{label} (engine.config.{_sections()[section].__name__})"
    optional = type(None) in typing.get_args(f.type)
    accepted = choices(section, f.name)
    if isinstance(default, dict) or typing.get_origin(f.type) in (dict, typing.Mapping, collections.abc.Mapping):
        # A mapping (data.variable_map, data.units, data.levels): round-trips through YAML
        # files, not shown as a widget (precedence < 0).
        return param.Dict(default=dict(default or {}), doc=doc, label=label, precedence=-1)
    if isinstance(default, tuple) or typing.get_origin(f.type) is tuple:
        return param.ListSelector(default=list(default or ()), objects=list(accepted or default or ()), doc=doc,
                                  label=label)
    if accepted is not None or (section, f.name) in DYNAMIC:
        objects = list(accepted or [])
        if optional and None not in objects:
            objects = [None, *objects]
        if default not in objects:
            objects.append(default)
        return param.Selector(default=default, objects=objects, doc=doc, label=label)
    if isinstance(default, bool):
        return param.Boolean(default=default, doc=doc, label=label)
    if isinstance(default, int) or f.type in (int, "int", int | None):
        # allow_None: an emptied field reaches validation (an error beside it), never a silent restore.
        return param.Integer(default=default, allow_None=True, doc=doc, label=label)
    if isinstance(default, float) or f.type in (float, "float", float | None):
        return param.Number(default=default, allow_None=True, doc=doc, label=label)
    return param.String(default=default, allow_None=optional, doc=doc, label=label)


def _build_class() -> type:
    params = {f"{section}_{f.name}": _parameter(section, f) for section, f in option_fields()}
    params["version"] = param.Integer(default=0, precedence=-1, doc="Bumped after set_choices (views re-render).")
    cls = param.parameterized_class("ExperimentOptions", params, bases=(_OptionsBase,))
    cls.__doc__ = _OptionsBase.__doc__
    cls.__module__ = __name__
    return cls


class _OptionsBase(param.Parameterized):
    """Every :class:`engine.config.ExperimentConfig` field that :class:`app.state.AppState`
    does not hold itself, one parameter ``<section>_<field>`` each (generated; see the module).
    """

    def section_values(self, section: str) -> dict[str, Any]:
        """This form's fields of one configuration section, as ``{field: value}``."""
        out = {}
        prefix = f"{section}_"
        for name in self.param:
            if name.startswith(prefix) and name != "version":
                value = getattr(self, name)
                out[name[len(prefix):]] = tuple(value) if isinstance(value, list) else value
        return out

    def set_from_config(self, config) -> None:
        """Take every field this form holds from an :class:`engine.config.ExperimentConfig`."""
        with param.parameterized.batch_call_watchers(self):
            for section, f in option_fields():
                name = f"{section}_{f.name}"
                value = getattr(getattr(config, section), f.name)
                p = self.param[name]
                if isinstance(p, param.Dict):
                    value = dict(value or {})
                elif isinstance(p, param.ListSelector):
                    value = list(value or ())
                    p.objects = list(dict.fromkeys([*p.objects, *value]))
                elif isinstance(p, param.Selector) and value not in p.objects:
                    p.objects = [*p.objects, value]
                setattr(self, name, value)

    def set_choices(self, section: str, name: str, objects: list, keep_none: bool = True) -> None:
        """Give a run-time choice list (catalogue entries, variables, runs) to a field."""
        key = f"{section}_{name}"
        p = self.param[key]
        objects = list(objects)
        if isinstance(p, param.ListSelector):
            current = [v for v in getattr(self, key) if v in objects]
            p.objects = objects
            setattr(self, key, current)
        else:
            if keep_none and None not in objects:
                objects = [None, *objects]
            current = getattr(self, key)
            p.objects = objects
            if current not in objects:
                setattr(self, key, objects[0] if objects else None)
        self.version += 1


ExperimentOptions = _build_class()
