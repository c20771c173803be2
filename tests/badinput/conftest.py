"""The bad-input corpus: every case lands in its stated category, and nothing is lost.

Categories
----------
``message``
    The call raises one of finescale's own errors (a ``ValueError`` subclass defined in
    ``engine``), whose text names the bad value and what is accepted (the case lists the words
    it must contain). A raw library exception or traceback fails the case.
``result``
    The call succeeds and its result is checked (a value parsed correctly, a run listed ...).

Every case runs with its own data root (``$FINESCALE_DATA_ROOTS``) and run root
(``$FINESCALE_RUNS``) under ``tmp_path``; afterwards no file may have appeared outside them (the
top of the system's temporary folder and the data cache are listed before and after) and files
the case put in the run store must be byte-for-byte intact.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

#: Exception classes that count as "ours": defined in the engine package.
def is_ours(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("engine.") and isinstance(exc, (ValueError, RuntimeError))


@dataclass
class Case:
    """One bad input: ``run(env)`` does what a user would; ``category`` is where it must land."""

    id: str
    category: str  # "message" or "result"
    run: Callable[["Env"], Any]
    words: tuple[str, ...] = ()  # for "message": all must be in the message
    check: Callable[[Any], bool] | None = None  # for "result"
    slow: bool = False
    marks: list = field(default_factory=list)


@dataclass
class Env:
    tmp: Path
    data: Path
    runs: Path


def _listing(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir()}
    except OSError:
        return set()


@pytest.fixture
def env(tmp_path, monkeypatch):
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    runs.mkdir()
    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(data))
    monkeypatch.setenv("FINESCALE_RUNS", str(runs))
    monkeypatch.setenv("FINESCALE_SITE_CONFIG", str(tmp_path / "no-site-launcher.yaml"))
    watched = [Path(tempfile.gettempdir()), Path(os.environ.get("FINESCALE_DATA") or Path.home() / ".cache" / "finescale"),
               Path.cwd()]
    before = {str(w): _listing(w) for w in watched}
    yield Env(tmp_path, data, runs)
    for w in watched:
        new = _listing(w) - before[str(w)]
        # pytest's own folder and caches written by libraries on first import are not the case's
        new = {n for n in new if not n.startswith(("pytest-", "tmp", "matplotlib", "numba", ".pytest", "__pycache__"))}
        assert not new, f"files written outside the configured roots, in {w}: {sorted(new)}"
    assert not os.path.exists("/tmp/pwned")


def land(case: Case, env: Env) -> None:
    """Run ``case`` and assert it lands in its category."""
    if case.category == "message":
        with pytest.raises(Exception) as info:
            case.run(env)
        exc = info.value
        assert is_ours(exc), f"{case.id}: a raw {type(exc).__module__}.{type(exc).__name__} escaped: {exc}"
        text = str(exc)
        missing = [w for w in case.words if w not in text]
        assert not missing, f"{case.id}: message lacks {missing}: {text}"
        assert "Traceback" not in text and "weights_only=False" not in text
    elif case.category == "result":
        result = case.run(env)
        assert case.check is None or case.check(result), f"{case.id}: unexpected result {result!r}"
    else:  # pragma: no cover
        raise AssertionError(f"unknown category {case.category!r}")


def params(cases: list[Case]):
    return [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in cases]
