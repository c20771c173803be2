"""One small registry used by models, losses, metrics, normalisers and launchers.

Every pluggable family in finescale (backbones, upsamplers, losses, metrics, launchers,
normalisations) is a :class:`Registry`. Registering is a decorator; looking up an unknown
name raises an error that lists the registered names, so a user who mistypes a backbone
learns the list of backbones.

Example
-------
>>> LOSSES = Registry("loss")
>>> @LOSSES.register("mae")
... def mae(pred, target, mask): ...
>>> LOSSES.names()
['mae']
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered. Subclasses both KeyError and ValueError so that
    callers catching either see it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of objects (classes, functions) of one kind.

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages ("backbone", "loss", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; ``info`` is free metadata
        (e.g. a one-line description for the dashboard)."""

        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._info[name] = dict(info)
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}"
            ) from None

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._info[name])

    def names(self) -> list[str]:
        return sorted(self._items)

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise the same error as :meth:`get`."""
        self.get(name)
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


# The registries of the engine. They live here (the bottom layer) so that the configuration
# can validate names without importing the families; each family registers itself on import
# and :func:`load_plugins` imports them all.
BACKBONES: Registry = Registry("backbone")
UPSAMPLERS: Registry = Registry("upsampling")
BASELINES: Registry = Registry("baseline")
LOSSES: Registry = Registry("loss")
METRICS: Registry = Registry("metric")
NORMALISATIONS: Registry = Registry("normalisation")
LAUNCHERS: Registry = Registry("launcher")

_PLUGIN_MODULES = (
    "engine.models",
    "engine.training.losses",
    "engine.data.normalise",
    "engine.evaluation.metrics",
    "engine.inference.baselines",
    "engine.launch",
)


def load_plugins() -> None:
    """Import every module that registers into the registries above (idempotent)."""
    import importlib

    for module in _PLUGIN_MODULES:
        importlib.import_module(module)
