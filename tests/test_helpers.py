"""The test helpers' own contract: a missing system dependency skips on a developer's machine and
fails under CI, where ``make test`` installs it."""

import pytest

from tests.helpers import skip_or_fail_in_ci


def test_missing_dependency_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        skip_or_fail_in_ci("chromium is missing")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing .*broken install"):
        skip_or_fail_in_ci("chromium is missing")
