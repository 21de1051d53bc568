"""The service image's package: built from the Docker build context, it has no ``acula.training``, and its
torch-free commands work from it alone.

No Docker engine runs here, so the test does what the image's build stage does with the same files: it copies
the build context (the .dockerignore allow-list), builds the wheel, and runs ``acula`` from that wheel with
nothing of the checkout on the path (``python -S``: no .pth file, hence no editable install).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.deploy.test_dockerfiles import dockerignore_allows
from tests.deploy.tools import REPO
from tests.support.bundles import wav_bytes


def _build_context(target: Path) -> None:
    for path in subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines():
        if dockerignore_allows(path) and (REPO / path).is_file():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, target / path)


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image")
    context, wheels, site = root / "context", root / "wheels", root / "site"
    context.mkdir()
    _build_context(context)
    assert not (context / "training").exists(), "the build context must not hold training/"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(context)], check=True, timeout=600)
    (wheel,) = wheels.glob("acula-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(n.startswith("acula/service/") for n in names)
    assert not any(n.startswith("acula/training/") for n in names), "the service wheel carries training"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    return site


def _python(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -S ARGS`` in the wheel's folder, with the venv's libraries but not the checkout."""
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONPATH": path}
    command = [sys.executable, "-S", *args]
    return subprocess.run(command, cwd=site, env=env, capture_output=True, text=True, timeout=300)


def _acula(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _python(site, "-m", "acula", *args)


@pytest.mark.slow
def test_service_wheel_has_the_service_commands_only(wheel_site: Path) -> None:
    check = _acula(wheel_site, "--version")
    assert check.returncode == 0, check.stderr
    listing = _acula(wheel_site, "--help")
    assert listing.returncode == 0, listing.stderr
    commands = set(re.findall(r"^│ (\w+) ", listing.stdout, flags=re.M))  # rows of the Commands box
    assert commands == {"serve", "embed", "predict", "audio"}, commands
    where = _acula(wheel_site, "audio", "--help")
    assert where.returncode == 0, where.stderr


@pytest.mark.slow
def test_service_wheel_predicts_without_training_or_torch(wheel_site: Path, tiny_bundle: Path) -> None:
    recording = wheel_site.parent / "recording.wav"
    recording.write_bytes(wav_bytes(3.0))
    inspected = _acula(wheel_site, "audio", "inspect", str(recording))
    assert inspected.returncode == 0, inspected.stderr
    answer = _acula(wheel_site, "predict", "--bundle", str(tiny_bundle), str(recording), "--json")
    assert answer.returncode == 0, answer.stderr
    assert '"model"' in answer.stdout
    code = (
        "import importlib.util, sys, acula, acula.service.cli, acula.service.app\n"
        "assert acula.__file__.startswith(sys.argv[1]), acula.__file__\n"
        "assert 'torch' not in sys.modules and importlib.util.find_spec('acula.training') is None\n"
    )
    result = _python(wheel_site, "-c", code, str(wheel_site))
    assert result.returncode == 0, result.stderr
