import pytest

from engine.registry import Registry, UnknownNameError, load_plugins


def test_registry_lists_names_in_errors():
    reg = Registry("widget")
    reg.register("b")(object)
    reg.register("a", description="first")(int)
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    assert reg.info("a") == {"description": "first"}
    with pytest.raises(UnknownNameError, match="unknown widget 'c'; registered widgets: a, b"):
        reg.get("c")
    with pytest.raises(KeyError):  # also a KeyError for dict-like callers
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(float)


def test_plugins_fill_every_registry():
    from engine import registry

    load_plugins()
    for reg in (registry.BACKBONES, registry.UPSAMPLERS, registry.BASELINES, registry.LOSSES,
                registry.NORMALISATIONS, registry.LAUNCHERS, registry.METRICS):
        assert len(reg) > 0, reg.kind
    assert {"nearest", "bilinear", "bicubic"} <= set(registry.BASELINES.names())
