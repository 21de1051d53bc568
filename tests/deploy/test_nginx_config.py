"""docker/nginx: the gateway template renders (every variable has a value) and `nginx -t` accepts it."""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.tools import (
    NGINX_TEMPLATE,
    make_dev_certs,
    nginx_command,
    render_template,
    require_binary,
    write_nginx_config,
)


def test_template_needs_every_variable():
    with pytest.raises(ValueError, match="GATEWAY_MAX_BODY"):
        render_template(
            NGINX_TEMPLATE.read_text(),
            {"ACULA_UPSTREAM": "a:1", "GATEWAY_LISTEN": "1", "GATEWAY_CERT_DIR": "/c"},
        )


def test_nginx_accepts_the_rendered_gateway_config(tmp_path):
    nginx = require_binary("nginx")
    certs = make_dev_certs(tmp_path / "certs")
    main = write_nginx_config(tmp_path / "nginx", "127.0.0.1:18000", "127.0.0.1:18443", certs)
    result = subprocess.run(nginx_command(nginx, main, "-t"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_rejects_a_broken_config(tmp_path):
    # Control: `nginx -t` really parses the file (here: a certificate that does not exist).
    nginx = require_binary("nginx")
    main = write_nginx_config(tmp_path / "nginx", "127.0.0.1:18000", "127.0.0.1:18443", tmp_path / "none")
    result = subprocess.run(nginx_command(nginx, main, "-t"), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
