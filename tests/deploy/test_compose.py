"""docker-compose.yml (and the GPU override) validated by Debian's docker-compose 1.29, which parses and
checks a compose file against the compose specification without a Docker engine, then read back for the
properties the deployment relies on."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from acula.service.settings import Settings
from tests.deploy.tools import REPO, require_binary

BASE = REPO / "docker-compose.yml"
GPU = REPO / "docker-compose.gpu.yml"


def compose_config(*files: str) -> dict:
    binary = require_binary("docker-compose")
    command = [binary, "--project-directory", str(REPO)]
    for name in files:
        command += ["-f", str(REPO / name)]
    check = subprocess.run([*command, "config", "-q"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    resolved = subprocess.run([*command, "config"], capture_output=True, text=True, timeout=60, check=True)
    return yaml.safe_load(resolved.stdout)


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode), from the short ("src:target:ro") or the long syntax."""
    result = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            result[target] = (source, mode[0] if mode else "rw")
        else:
            result[volume["target"]] = (volume["source"], "ro" if volume.get("read_only") else "rw")
    return result


@pytest.fixture(scope="module")
def cpu() -> dict:
    return compose_config("docker-compose.yml")


@pytest.fixture(scope="module")
def gpu() -> dict:
    return compose_config("docker-compose.yml", "docker-compose.gpu.yml")


def test_an_invalid_compose_file_is_rejected(tmp_path):
    # Control: the validation above would catch a broken file (unknown key in a service).
    broken = yaml.safe_load(BASE.read_text())
    broken["services"]["acula"]["restart_policy_typo"] = "always"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [require_binary("docker-compose"), "-f", str(path), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


def test_service_is_locked_down_and_reads_bundles_from_a_volume(cpu):
    acula = cpu["services"]["acula"]
    assert acula["build"]["dockerfile"] == "docker/Dockerfile"
    assert acula["read_only"] is True and "/tmp" in acula["tmpfs"]
    assert acula["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in acula["security_opt"]
    assert "ports" not in acula, "the service must be reachable only through the gateway"
    assert mounts(acula)["/models"] == (str(REPO / "models"), "ro")
    assert acula["environment"]["ACULA_BUNDLE"].startswith("/models/")
    assert acula["environment"]["ACULA_ROOT_PATH"] == "/acula"
    assert "healthcheck.py" in " ".join(acula["healthcheck"]["test"])


def test_every_service_variable_is_a_real_setting(cpu, gpu):
    fields = {f"ACULA_{name.upper()}" for name in Settings.model_fields}
    for config in (cpu, gpu):
        unknown = set(config["services"]["acula"]["environment"]) - fields
        assert not unknown, f"not settings of service/settings.py: {sorted(unknown)}"


def test_gateway_and_prometheus_use_the_project_files(cpu):
    gateway = cpu["services"]["gateway"]
    template = str(REPO / "docker" / "nginx" / "templates" / "acula.conf.template")
    assert mounts(gateway)["/etc/nginx/templates/default.conf.template"] == (template, "ro")
    assert gateway["depends_on"]["acula"]["condition"] == "service_healthy"
    assert gateway["environment"]["ACULA_UPSTREAM"] == "acula:8000"
    prometheus = cpu["services"]["prometheus"]
    assert mounts(prometheus)["/etc/prometheus"] == (str(REPO / "docker" / "prometheus"), "ro")
    assert all(str(port).startswith("127.0.0.1:") for port in prometheus["ports"]), "UI has no auth"
    assert cpu["networks"]["backend"]["internal"] is True


def test_gpu_override_selects_the_cuda_image_and_a_gpu(gpu):
    acula = gpu["services"]["acula"]
    assert acula["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert acula["environment"]["ACULA_PROVIDER"] == "cuda"
    devices = acula["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # The override changes only what it must: the lock-down of the base file still applies.
    assert acula["read_only"] is True and acula["cap_drop"] == ["ALL"]


def nginx_size(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].lower() in units else int(value)


def test_settings_parse_and_the_gateway_cap_fits_the_service(cpu):
    environment = cpu["services"]["acula"]["environment"]
    settings = Settings(**{key.removeprefix("ACULA_").lower(): value for key, value in environment.items()})
    assert settings.root_path == "/acula" and settings.api_keys == []
    gateway_cap = nginx_size(cpu["services"]["gateway"]["environment"]["GATEWAY_MAX_BODY"])
    # The gateway refuses first; a body it lets through is never refused again by the service for size.
    assert gateway_cap <= settings.max_upload_bytes
    stop = cpu["services"]["acula"]["stop_grace_period"]
    assert stop.endswith("s") and int(stop[:-1]) > settings.drain_delay_s + settings.graceful_shutdown_s
