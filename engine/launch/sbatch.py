"""What may reach a SLURM batch script, and from where.

A run configuration is data: it may come from a form, an upload or another user. Nothing in it
is ever written to a batch script as shell. Two sources feed the script:

- **The run configuration** (``launch.partition``, ``account``, ``qos``, ``time``, resources and
  ``launch.extra``): only the sbatch options in :data:`OPTIONS` are accepted in ``launch.extra``,
  each with a validated value (a pattern, a number range or a fixed set). Anything else --
  ``setup``, ``teardown``, ``srun_args``, an unknown option, a value with a newline or a shell
  character -- is refused with a message naming it and the accepted options.
- **The site launcher configuration**, an administrator's YAML file on the server:
  ``$FINESCALE_SITE_CONFIG`` if set, else ``/etc/finescale/launcher.yaml``. It alone may hold
  shell lines (``setup``, e.g. ``module load cuda``; ``teardown``), extra ``srun_args`` and
  sbatch options forced for every job (``sbatch: {reservation: course}``). The file must not be
  writable by group or others.

Example site file::

    setup:
      - module load cuda/12.1
      - source /opt/finescale/env/bin/activate
    srun_args: ["--cpu-bind=cores"]
    sbatch:
      reservation: course

Every value written to the script is checked for newlines and NUL bytes here and passed through
:func:`shlex.quote` by submitit's script writer (sbatch strips the quotes when it reads
``#SBATCH`` lines); ``tests/engine/test_sbatch.py`` renders scripts to hold both to that.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from engine.config import SITE_ONLY_LAUNCH_KEYS, ConfigError

SITE_CONFIG_ENV = "FINESCALE_SITE_CONFIG"
DEFAULT_SITE_CONFIG = Path("/etc/finescale/launcher.yaml")
#: Keys of the site file; all optional.
SITE_KEYS = ("setup", "teardown", "srun_args", "sbatch")
#: Options only the site file may set (they are shell, or change how srun runs the job).
SITE_ONLY = SITE_ONLY_LAUNCH_KEYS

_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_HOSTLIST = re.compile(r"[A-Za-z0-9_.,\[\]-]{1,256}")
_FEATURES = re.compile(r"[A-Za-z0-9_.,&|:\[\]()*-]{1,256}")
_GRES = re.compile(r"[A-Za-z0-9_.,:()-]{1,256}")
_MEM = re.compile(r"\d{1,9}[KMGT]?")
_EMAIL = re.compile(r"[A-Za-z0-9_.+-]{1,64}@[A-Za-z0-9.-]{1,190}")
_DEPENDENCY = re.compile(r"(singleton|(after|afterany|afterok|afternotok|aftercorr|afterburstbuffer)(:\d+(\+\d+)?)+)"
                         r"([,?](singleton|(after|afterany|afterok|afternotok|aftercorr)(:\d+(\+\d+)?)+))*")
_COMMENT = re.compile(r"[A-Za-z0-9 _.,:=+@/()%#-]{0,200}")
MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT",
              "TIME_LIMIT", "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")


def _pattern(regex: re.Pattern, what: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(f"launch.extra.{key}={value!r} is not valid; expected {what}")
        text = str(value)
        if not regex.fullmatch(text):
            raise ConfigError(f"launch.extra.{key}={text!r} is not valid; expected {what} "
                              f"(characters allowed: {regex.pattern})")
        return text
    return check


def _integer(low: int, high: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, str) and value.isdigit()):
            raise ConfigError(f"launch.extra.{key}={value!r} is not valid; expected an integer from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise ConfigError(f"launch.extra.{key}={value!r} is not valid; expected an integer from {low} to {high}")
        return number
    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"launch.extra.{key}={value!r} is not valid; expected true or false")
    return value


def _mail_type(key: str, value: Any) -> str:
    items = str(value).split(",") if isinstance(value, str) else [None]
    if not all(item in MAIL_TYPES for item in items):
        raise ConfigError(f"launch.extra.{key}={value!r} is not valid; accepted: a comma-separated list of "
                          f"{', '.join(MAIL_TYPES)}")
    return str(value)


#: sbatch options a run configuration may set in ``launch.extra``: name -> value check. The
#: names are submitit's (``-`` -> ``_``); ``--mail-type`` and ``mail_type`` both work.
OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "constraint": _pattern(_FEATURES, "a node feature expression such as 'a100&ib'"),
    "exclude": _pattern(_HOSTLIST, "a host list such as 'node[01-04],gpu7'"),
    "nodelist": _pattern(_HOSTLIST, "a host list such as 'node[01-04],gpu7'"),
    "comment": _pattern(_COMMENT, "one line of at most 200 letters, digits, spaces and _.,:=+@/()%#-"),
    "mail_type": _mail_type,
    "mail_user": _pattern(_EMAIL, "an e-mail address"),
    "dependency": _pattern(_DEPENDENCY, "a dependency such as 'afterok:1234' or 'singleton'"),
    "exclusive": _boolean,
    "wckey": _pattern(_NAME, "a name of letters, digits and _.+-"),
    "reservation": _pattern(_NAME, "a reservation name of letters, digits and _.+-"),
    "licenses": _pattern(_GRES, "licenses such as 'matlab:1'"),
    "gres": _pattern(_GRES, "generic resources such as 'gpu:a100:2'"),
    "mem_per_gpu": _pattern(_MEM, "a memory size such as '16G' or '16000'"),
    "mem_per_cpu": _pattern(_MEM, "a memory size such as '4G' or '4000'"),
    "cpus_per_gpu": _integer(1, 1024),
    "gpus_per_task": _integer(1, 64),
    "signal_delay_s": _integer(10, 3600),
    "max_num_timeout": _integer(0, 100),
}
#: Options that go to the submitit executor rather than to sbatch.
EXECUTOR_OPTIONS = ("max_num_timeout",)
#: Options submitit knows by name; the rest of OPTIONS go through ``additional_parameters``.
SUBMITIT_OPTIONS = ("constraint", "exclude", "nodelist", "comment", "mail_type", "mail_user", "dependency",
                    "exclusive", "wckey", "gres", "mem_per_gpu", "mem_per_cpu", "cpus_per_gpu", "gpus_per_task",
                    "signal_delay_s")


def normalise_key(key: Any) -> str:
    return str(key).lstrip("-").replace("-", "_")


def check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``launch.extra`` of a run configuration; return it with normalised keys.

    Raises
    ------
    engine.config.ConfigError
        For a key outside :data:`OPTIONS` (``setup`` and the other site-only keys say where they
        belong) or a value its check refuses.
    """
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"launch.extra={extra!r} is not valid; expected a mapping of sbatch options")
    out: dict[str, Any] = {}
    for key, value in extra.items():
        norm = normalise_key(key)
        if norm in SITE_ONLY:
            raise ConfigError(
                f"launch.extra.{key} is not accepted in a run configuration: shell setup and srun arguments "
                f"come only from the site launcher configuration on the server ({site_config_path()}, set by "
                f"${SITE_CONFIG_ENV}); accepted in launch.extra: {', '.join(OPTIONS)}")
        if norm not in OPTIONS:
            raise ConfigError(f"launch.extra.{key} is not an accepted sbatch option; accepted: {', '.join(OPTIONS)} "
                              "(partition, account, qos, time and resources have their own launch fields)")
        _no_control(f"launch.extra.{key}", value)
        out[norm] = OPTIONS[norm](norm, value)
    return out


def _no_control(where: str, value: Any) -> None:
    if isinstance(value, str) and any(ch in value for ch in "\n\r\0"):
        raise ConfigError(f"{where}={value!r} is not valid: it holds a newline or NUL character, which would "
                          "break out of its line in the batch script")


def site_config_path() -> Path:
    return Path(os.environ.get(SITE_CONFIG_ENV) or DEFAULT_SITE_CONFIG)


def load_site_config(path: str | Path | None = None) -> dict[str, Any]:
    """The site launcher configuration (see the module docstring); ``{}`` when the file does not
    exist. Raises :class:`ConfigError` for a file others may write, bad YAML or unknown keys."""
    path = Path(path) if path is not None else site_config_path()
    if not path.exists():
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"site launcher configuration {str(path)!r} is writable by group or others "
                          f"(mode {stat.filemode(mode)}); it holds shell lines for every job: chmod go-w it")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"site launcher configuration {str(path)!r}{where} is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, Mapping) or set(raw) - set(SITE_KEYS):
        raise ConfigError(f"site launcher configuration {str(path)!r}: unknown keys "
                          f"{sorted(set(raw) - set(SITE_KEYS)) if isinstance(raw, Mapping) else raw!r}; "
                          f"accepted: {', '.join(SITE_KEYS)}")
    site: dict[str, Any] = {}
    for key in ("setup", "teardown", "srun_args"):
        lines = raw.get(key) or []
        if isinstance(lines, str):
            lines = [lines]
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise ConfigError(f"site launcher configuration {str(path)!r}: {key} must be a list of strings")
        for line in lines:
            _no_control(f"{path}: {key}", line)
        if lines:
            site[key] = list(lines)
    if raw.get("sbatch"):
        forced = raw["sbatch"]
        if not isinstance(forced, Mapping):
            raise ConfigError(f"site launcher configuration {str(path)!r}: sbatch must be a mapping of options")
        for key, value in forced.items():
            if not _NAME.fullmatch(normalise_key(key)):
                raise ConfigError(f"site launcher configuration {str(path)!r}: sbatch option {key!r} is not a name")
            _no_control(f"{path}: sbatch.{key}", str(value))
        site["sbatch"] = {normalise_key(k): str(v) for k, v in forced.items()}
    return site


def check_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Check every value headed for the script for newlines and NUL bytes (recursively).

    submitit's script writer passes every ``#SBATCH`` value through :func:`shlex.quote` (sbatch
    strips the quotes again), which does not protect against a newline; ``setup`` and
    ``teardown`` (site lines, shell by design) are checked line by line."""
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            for line in value:
                _no_control(f"{key}", str(line))
        elif isinstance(value, Mapping):
            check_parameters(dict(value))
        else:
            _no_control(f"sbatch option {key}", str(value))
    return params


def check_launch(lch) -> dict[str, Any]:
    """Validate the SLURM-bound fields of a :class:`~engine.config.LaunchConfig` (names of
    partition, account and QoS, ``extra``); return the checked ``extra``."""
    for key in ("partition", "account", "qos"):
        value = getattr(lch, key)
        if value is not None:
            _no_control(f"launch.{key}", value)
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise ConfigError(f"launch.{key}={value!r} is not valid; expected a SLURM name of letters, "
                                  "digits and _.+- (at most 64)")
    return check_extra(lch.extra)
