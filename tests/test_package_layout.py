"""One import name (``acula``), a torch-free service side, and the CLI's plugin boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_everything_installs_under_acula_and_nothing_else(tmp_path: Path) -> None:
    # From outside the repository, so the checkout itself is not on sys.path.
    code = (
        "import importlib.util, acula, acula.service, acula.training\n"
        "assert importlib.util.find_spec('service') is None, 'a top-level service package is installed'\n"
        "assert importlib.util.find_spec('training') is None, 'a top-level training package is installed'\n"
        "print(acula.__version__)\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--help"],
        ["embed", "--help"],
        ["predict", "--help"],
        ["audio", "inspect", "--help"],
    ],
)
def test_service_commands_import_neither_torch_nor_the_training_package(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from acula.service.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('acula.training'))\n"
        "assert not loaded, loaded\n"
    )
    result = _python(code, REPO)
    assert result.returncode == 0, result.stderr + result.stdout


def test_service_modules_import_without_torch() -> None:
    code = (
        "import sys, acula, acula.service.app, acula.service.model, acula.service.cli\n"
        "assert 'torch' not in sys.modules and 'acula.training' not in sys.modules\n"
    )
    result = _python(code, REPO)
    assert result.returncode == 0, result.stderr


def test_root_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acula", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in (
        "serve",
        "embed",
        "predict",
        "audio",
        "data",
        "reports",
        "train",
        "bench",
        "export",
        "pipeline",
    ):
        assert command in result.stdout, f"{command} missing from acula --help"


def test_a_missing_plugin_package_means_its_commands_are_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service image's wheel has no acula.training: its entry point must be skipped, not crash."""
    import acula.service.cli as cli

    class Entry:
        name, module = "ghost", "acula.ghost.cli"

        def load(self) -> None:
            raise ModuleNotFoundError("No module named 'acula.ghost'", name="acula.ghost")

    monkeypatch.setattr(cli, "_plugins_missing", None)
    monkeypatch.setattr(cli, "entry_points", lambda group: [Entry()])
    assert cli.load_plugins() == ["ghost"]


def test_the_python_api_embeds_and_predicts_as_the_cli_does(tiny_bundle: Path, tmp_path: Path) -> None:
    """``acula.load`` is the API the README shows; ``acula embed`` writes the same vector."""
    import numpy as np
    from typer.testing import CliRunner

    import acula
    from acula.service.cli import full_app
    from tests.support.bundles import write_wav

    recording = write_wav(tmp_path / "recording.wav", 5.0)
    model = acula.load(tiny_bundle, provider="cpu")
    assert isinstance(model, acula.AculaModel)
    embedded = model.embed(recording)
    assert embedded.model.digest == f"sha256:{model.manifest.manifest_sha256}"
    assert len(embedded.embedding) == model.manifest.encoder.embedding.shape[-1]
    assert np.isclose(np.linalg.norm(embedded.joint), 1.0, atol=1e-5)
    answer = model.predict(recording.read_bytes())  # bytes or a path, alike
    assert answer.model == embedded.model and answer.input.duration_s == embedded.input.duration_s

    out = tmp_path / "rows.npy"
    result = CliRunner().invoke(
        full_app(), ["embed", str(recording), "--bundle", str(tiny_bundle), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert np.allclose(np.load(out)[0], embedded.embedding, atol=1e-6)
