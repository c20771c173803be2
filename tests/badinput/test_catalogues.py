"""Bad catalogue files: each refused with a message naming the file, the entry and the field."""

from __future__ import annotations

import os

import pytest

from engine.data.catalog import list_entries
from tests.badinput.conftest import Case, land, params

GOOD_ENTRY = """  hr:
    driver: netcdf
    args: {urlpath: "{{ CATALOG_DIR }}/hr.nc"}
    metadata: {role: highres, pairs_with: [lr], variables: {t2m: {units: K}}}
  lr:
    driver: netcdf
    args: {urlpath: "{{ CATALOG_DIR }}/lr.nc"}
    metadata: {role: lowres, pairs_with: [hr]}
"""


def catalogue(text: str | bytes, name: str = "cat.yaml"):
    def run(env):
        path = env.data / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return list_entries(path)
    return run


def entry(body: str):
    """A catalogue with the good entries and one more, ``bad``, whose YAML body is ``body``."""
    return catalogue("sources:\n" + GOOD_ENTRY + "  bad:\n" + "".join(f"    {ln}\n" for ln in body.splitlines()))


def msg(id, run, *words):
    return Case(id, "message", run, tuple(words))


CASES = [
    msg("etc-passwd", lambda env: list_entries("/etc/passwd"), "'/etc/passwd'", "not an intake catalogue", "sources"),
    msg("random-bytes", catalogue(os.urandom(64) + b"\xff\xfe"), "cat.yaml", "not UTF-8"),
    msg("empty-file", catalogue(""), "cat.yaml", "not an intake catalogue"),
    msg("yaml-list", catalogue("- a\n- b\n"), "not an intake catalogue", "list"),
    msg("no-sources", catalogue("metadata: {version: 1}\n"), "not an intake catalogue", "'metadata'"),
    msg("sources-empty", catalogue("sources: {}\n"), "non-empty 'sources'"),
    msg("yaml-syntax", catalogue("sources:\n  a: {driver: netcdf\n"), "cat.yaml", "line 3", "not valid YAML"),
    msg("entry-not-mapping", catalogue("sources:\n" + GOOD_ENTRY + "  bad: netcdf\n"),
        "entry 'bad'", "is not a mapping"),
    msg("no-driver", entry("args: {urlpath: x.nc}"), "entry 'bad'", "has no driver", "netcdf"),
    msg("unknown-driver", entry("driver: grib9\nargs: {urlpath: x.nc}"), "entry 'bad'", "driver 'grib9'", "accepted:", "zarr"),
    msg("no-args", entry("driver: netcdf"), "entry 'bad'", "no args.urlpath"),
    msg("no-urlpath", entry("driver: netcdf\nargs: {chunks: {}}"), "entry 'bad'", "no args.urlpath"),
    msg("urlpath-number", entry("driver: netcdf\nargs: {urlpath: 5}"), "entry 'bad'", "args.urlpath=5"),
    msg("urlpath-empty", entry("driver: netcdf\nargs: {urlpath: ''}"), "entry 'bad'", "args.urlpath=''"),
    msg("role-lowress", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {role: lowress}"),
        "entry 'bad'", "role 'lowress'", "highres, lowres, static, predictor"),
    msg("role-number", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {role: 1}"), "role 1", "highres"),
    msg("pairs-with-missing", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {pairs_with: [gcm]}"),
        "entry 'bad'", "pairs_with names 'gcm'", "accepted: bad, hr, lr"),
    msg("pairs-with-mapping", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {pairs_with: {a: 1}}"),
        "pairs_with={'a': 1}", "list of entry names"),
    msg("metadata-list", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: [role, highres]"), "metadata must be a mapping"),
    msg("variables-number", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {variables: 3}"), "variables=3"),
    msg("fetch-without-via", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {fetch: {name: f.nc}}"), "fetch=", "'via' and 'name'"),
    msg("remote-text", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {remote: 'yes'}"), "remote='yes'", "true or false"),
    msg("generator-list", entry("driver: netcdf\nargs: {urlpath: x.nc}\nmetadata: {generator: [demo_alps]}"),
        "generator=['demo_alps']", "generator name"),
    Case("good-catalogue", "result", catalogue("sources:\n" + GOOD_ENTRY), check=lambda names: names == ["hr", "lr"]),
]


@pytest.mark.parametrize("case", params(CASES))
def test_catalogue(case, env):
    land(case, env)


@pytest.mark.parametrize("target, words", [("/etc/passwd", "not an intake catalogue"), ("/nonexistent.yaml", "does not exist")])
def test_cli_catalog_exits_non_zero(env, capsys, target, words):
    from engine.cli import main

    assert main(["catalog", "--catalog", target]) == 2
    assert words in capsys.readouterr().err
