"""The service runs with a read-only root filesystem and one writable tmpfs, as the images and the Kubernetes
Deployment run it (readOnlyRootFilesystem, /tmp emptyDir, HOME=TMPDIR=/tmp), and still serves predictions.

Emulated without Docker: a private mount namespace (`unshare --mount`, root only) in which every mount is
remounted read-only and a tmpfs takes the place of /tmp."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import REPO, in_ci
from tests.support.bundles import wav_bytes
from tests.support.server import free_port, running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


def test_service_serves_from_a_read_only_root(tiny_bundle: Path, tmp_path: Path):
    if not can_unshare():
        reason = "needs root and `unshare --mount` to emulate a read-only root filesystem"
        if in_ci():
            pytest.fail(f"{reason} (CI runs as root: this must not skip)")
        pytest.skip(reason)
    writable = tmp_path / "tmp"
    writable.mkdir()
    port = free_port()
    environment = {
        **os.environ,
        "HOME": str(writable),  # onnxruntime writes $HOME/.cache/Microsoft/DeveloperTools
        "TMPDIR": str(writable),
        "PYTHONDONTWRITEBYTECODE": "1",
        "ACULA_BUNDLE": str(tiny_bundle),
        "ACULA_HOST": "127.0.0.1",
        "ACULA_PORT": str(port),
        "ACULA_INTRA_OP_THREADS": "1",
    }
    command = [
        "unshare",
        "--mount",
        "bash",
        str(REPO / "tests" / "deploy" / "readonly_root.sh"),
        str(writable),
        str(tiny_bundle / "written-at-run-time"),
        sys.executable,
        "-m",
        "acula",
        "serve",
    ]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    log = tmp_path / "server.log"
    with running(command, log, ready, timeout=90, cwd=REPO, env=environment):
        files = {"file": ("recording.wav", wav_bytes(3.0), "audio/wav")}
        predicted = httpx.post(f"{url}/predict", files=files, timeout=30)
        assert predicted.status_code == 200, predicted.text
        similar = httpx.post(f"{url}/similar-reports", params={"top_k": 3}, files=files, timeout=30)
        assert similar.status_code == 200, similar.text
    assert "Read-only file system" not in log.read_text()
