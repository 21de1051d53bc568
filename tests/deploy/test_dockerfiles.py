"""The Dockerfiles install exactly what `make setup-service` installs, copy only what the build context has,
and follow the image rules (non-root, read-only-root friendly, HEALTHCHECK on /readyz, one worker).

No Docker engine runs here: these tests read the files the way `docker build` would (continuation lines,
.dockerignore) and compare them with the Makefile, so the three cannot drift apart."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.tools import REPO

CPU = REPO / "docker" / "Dockerfile"
GPU = REPO / "docker" / "Dockerfile.gpu"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with backslash continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stage(path: Path, name: str) -> list[tuple[str, str]]:
    """The instructions of the stage ``FROM ... AS name``."""
    out: list[tuple[str, str]] | None = None
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            if out is not None:
                break
            if rest.lower().endswith(f" as {name}"):
                out = []
        elif out is not None:
            out.append((keyword, rest))
    assert out is not None, f"no stage {name} in {path.name}"
    return out


def makefile_setup_service() -> list[str]:
    """The `setup-service` recipe with $(PIP) and $(VENV) expanded, as argv."""
    text = (REPO / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+)\s*:?=\s*(.*)$", text, flags=re.M))
    recipe = re.search(r"^setup-service:.*\n\t(.+)$", text, flags=re.M)
    assert recipe, "Makefile has no setup-service recipe"
    line = recipe.group(1)
    for _ in range(3):  # variables refer to variables: $(PIP) contains $(VENV)
        line = re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], line)
    return shlex.split(line)


def pip_install(argv: list[str]) -> list[str]:
    """Normalise a pip line: the pip binary by name only, and no -e (an image installs a wheel)."""
    assert Path(argv[0]).name == "pip", argv
    return ["pip", *[arg for arg in argv[1:] if arg not in ("-e", "--editable")]]


def dockerfile_pip(path: Path) -> list[str]:
    runs = [shlex.split(rest) for keyword, rest in stage(path, "build") if keyword == "RUN"]
    pips = [argv for argv in runs if argv and argv[0] == "pip" and argv[1:2] == ["install"]]
    assert len(pips) == 1, f"{path.name}: expected one `pip install` in the build stage, found {pips}"
    return pip_install(pips[0])


def test_cpu_image_installs_what_make_setup_service_installs():
    assert dockerfile_pip(CPU) == pip_install(makefile_setup_service())


def test_gpu_image_installs_the_same_with_the_gpu_extra():
    expected = [arg.replace(".[service]", ".[gpu]") for arg in pip_install(makefile_setup_service())]
    assert dockerfile_pip(GPU) == expected
    # The gpu extra swaps onnxruntime for onnxruntime-gpu and must not pull the CPU build back in.
    pyproject = (REPO / "pyproject.toml").read_text()
    gpu_extra = re.search(r"^gpu = \[(.*)\]$", pyproject, flags=re.M)
    assert gpu_extra and "onnxruntime-gpu" in gpu_extra.group(1)
    assert '"onnxruntime==' not in gpu_extra.group(1)


def test_deployment_guide_quotes_the_same_pip_line():
    line = shlex.join(pip_install(makefile_setup_service()))
    assert line in (REPO / "docs" / "DEPLOYMENT.md").read_text(), line


def test_the_comparison_notices_a_difference(tmp_path):
    # Control: a Dockerfile that dropped the constraints would not pass the test above.
    drifted = tmp_path / "Dockerfile"
    drifted.write_text(CPU.read_text().replace(" -c constraints.txt", ""))
    assert dockerfile_pip(drifted) != pip_install(makefile_setup_service())


def dockerignore_allows(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a folder pattern covers its files."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "*")
        parts = Path(relative).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    for keyword, rest in instructions(dockerfile):
        if keyword != "COPY" or rest.startswith("--from="):
            continue
        for source in shlex.split(rest)[:-1]:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such path"
            assert dockerignore_allows(source), f"{dockerfile.name}: .dockerignore excludes {source}"
    # And the context keeps out what must never reach an image.
    for private in (".venv/bin/python", "models/acula-default/manifest.json", "docker/nginx/certs/tls.key"):
        assert not dockerignore_allows(private), private


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_runtime_stage_follows_the_image_rules(dockerfile):
    runtime = stage(dockerfile, "runtime")
    text = "\n".join(f"{keyword} {rest}" for keyword, rest in runtime)
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as root"
    assert re.search(r"HOME=/tmp\b", text) and re.search(r"TMPDIR=/tmp\b", text)
    assert "PYTHONDONTWRITEBYTECODE=1" in text, "a read-only root must not see .pyc writes"
    assert "ACULA_BUNDLE=/models/acula-default" in text
    health = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert health and "healthcheck.py" in health[0]
    assert "/readyz" in (REPO / "docker" / "healthcheck.py").read_text()
    assert "curl" not in text and "wget" not in text
    cmd = [rest for keyword, rest in runtime if keyword == "CMD"][-1]
    assert cmd == '["acula", "serve"]', "exec form, one worker (acula serve runs one uvicorn worker)"
    assert not any("torch" in rest for _, rest in instructions(dockerfile)), "the image is torch-free"
    provider = "cuda" if dockerfile == GPU else "cpu"
    assert f"ACULA_PROVIDER={provider}" in text
