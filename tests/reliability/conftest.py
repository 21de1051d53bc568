"""Fixtures for the reliability tests: real seed files and one live server shared by the HTTP fuzzers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.mutations import GENERATED, seed_files
from tests.support.server import LiveServer, serve_checked


@pytest.fixture(scope="session")
def seeds(shared_data: Path) -> dict[str, bytes]:
    """Real recordings cut to a second, in every format (see ``mutations.seed_files``)."""
    files = seed_files(shared_data)
    assert len(files) >= 8, f"too few readable seed recordings under {shared_data}: {sorted(files)}"
    return files


@pytest.fixture(scope="module")
def live(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``acula serve`` on loopback for the whole module; asserts at the end that it never logged a 500."""
    with serve_checked(tiny_bundle, tmp_path_factory.mktemp("live")) as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many generated inputs the fuzzers sent this session (decoder, HTTP, schemathesis)."""
    if GENERATED:
        families = ", ".join(f"{name} {count}" for name, count in sorted(GENERATED.items()))
        terminalreporter.write_line(f"reliability: {sum(GENERATED.values())} generated inputs ({families})")
