"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bundles import tiny_bundle  # noqa: F401  (session-scoped tiny but real model bundle)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder, ``<repo root>/../shared/data`` (never copied into the repo); skip when absent."""
    root = REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}: place the shared data folder beside the repository")
    return root
