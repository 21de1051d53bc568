"""The deploy tests' own rules: a missing tool skips them on a laptop but fails them under CI=true, and the
dependency script is a quick no-op once the tools are there."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.deploy.tools import REPO, require_binary

MISSING = "acula-no-such-tool"


def test_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="ci_system_deps.sh"):
        require_binary(MISSING)


def test_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run, not skip"):
        require_binary(MISSING)


def test_system_deps_script_is_a_fast_no_op_when_tools_are_present():
    for tool in ("nginx", "prometheus", "promtool", "docker-compose", "openssl"):
        require_binary(tool)
    if not all(shutil.which(tool) for tool in ("nginx", "prometheus", "promtool", "docker-compose")):
        pytest.skip("nginx is outside PATH (/usr/sbin): the script would reinstall")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "ci_system_deps.sh")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and time.monotonic() - started < 5
