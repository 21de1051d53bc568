"""Helpers for the deployment tests: find the Debian tools and render the project's configs for loopback (real
processes are run by :func:`tests.support.server.running`).

The configs are the files under ``docker/`` themselves; rendering only changes what must differ on a test
machine (addresses, ports, file paths, intervals), the same way the nginx image's envsubst step or an
operator's edit would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
NGINX_TEMPLATE = DOCKER / "nginx" / "templates" / "acula.conf.template"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
ALERT_RULES = DOCKER / "prometheus" / "alerts.yml"
INSTALL_HINT = "run `bash scripts/ci_system_deps.sh` (as root) to install it from Debian's packages"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Path of ``name``; skip the test when it is missing, but fail under CI=true: CI cannot pass silently."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # nginx lives in /usr/sbin
    if path:
        return path
    reason = f"{name} not found: {INSTALL_HINT}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the deployment tests must run, not skip)")
    pytest.skip(reason)


def render_template(text: str, values: dict[str, str]) -> str:
    """What the nginx image's envsubst does: replace ``${NAME}`` for the names given, leave the rest."""
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    leftover = sorted(set(re.findall(r"\$\{((?:ACULA|GATEWAY)_\w+)\}", text)))
    if leftover:
        raise ValueError(f"template variables without a value: {leftover}")
    return text


def write_nginx_config(work: Path, upstream: str, listen: str, cert_dir: Path, max_body: str = "50m") -> Path:
    """A main nginx.conf in ``work`` (pid, logs and temp files there too) that includes the rendered gateway
    config inside ``http {}``, as the nginx image's own nginx.conf includes conf.d/*.conf."""
    conf_d = work / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    rendered = render_template(
        NGINX_TEMPLATE.read_text(),
        {
            "ACULA_UPSTREAM": upstream,
            "GATEWAY_LISTEN": listen,
            "GATEWAY_CERT_DIR": str(cert_dir),
            "GATEWAY_MAX_BODY": max_body,
        },
    )
    (conf_d / "acula.conf").write_text(rendered)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp_paths = "\n".join(f"    {kind}_temp_path {work / kind};" for kind in kinds)
    # As root, workers would run as `nobody`, who cannot enter pytest's 0700 temp folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = work / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\n"
        "daemon off;\n"
        f"pid {work / 'nginx.pid'};\n"
        f"error_log {work / 'error.log'} info;\n"
        "events { worker_connections 128; }\n"
        "http {\n"
        f"    access_log {work / 'access.log'};\n"
        "    default_type application/octet-stream;\n"
        f"{temp_paths}\n"
        f"    include {conf_d}/*.conf;\n"
        "}\n"
    )
    return main


def nginx_command(nginx: str, main_conf: Path, *extra: str) -> list[str]:
    # -e: the error log before the config is read would otherwise be /var/log/nginx/error.log.
    work = main_conf.parent
    return [nginx, "-p", str(work), "-e", str(work / "error.log"), "-c", str(main_conf), *extra]


def render_prometheus_config(work: Path, service: str, listen: str, interval: str = "1s") -> Path:
    """The project's prometheus.yml with the acula job pointed at one loopback service instead of DNS
    discovery, the rule file by absolute path, and short intervals so a test sees scrapes within seconds."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    acula = jobs["acula"]
    acula.pop("dns_sd_configs")
    acula["static_configs"] = [{"targets": [service]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [listen]}]
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def make_dev_certs(out_dir: Path) -> Path:
    """The project's own dev-certificate script, into ``out_dir``."""
    require_binary("openssl")
    subprocess.run(
        ["bash", str(DOCKER / "nginx" / "make-dev-certs.sh"), str(out_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out_dir
