"""docker/prometheus: the scrape config and alert rules pass `promtool check`, and the alert rules pass
their unit tests (`promtool test rules`: synthetic series in, expected alerts out)."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.tools import ALERT_RULES, PROMETHEUS_CONFIG, render_prometheus_config, require_binary


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_project_config_and_rules_pass_promtool_check():
    # promtool resolves rule_files relative to the config file and checks them too.
    config = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", str(ALERT_RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 7 rules found" in rules.stdout


def test_alert_rules_unit_tests_pass():
    result = promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS_CONFIG.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_can_fail(tmp_path):
    # Control: the same tests against rules with a loosened threshold must fail.
    rules = ALERT_RULES.read_text().replace("> 0.05", "> 0.5")
    (tmp_path / "alerts.yml").write_text(rules)
    (tmp_path / "alerts.test.yml").write_text((PROMETHEUS_CONFIG.parent / "alerts.test.yml").read_text())
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "AculaHighErrorRate" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    rules = yaml.safe_load(ALERT_RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS_CONFIG.parent / "alerts.test.yml").read_text())
    tested = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert alerts == tested, f"alerts without a firing test: {sorted(alerts - tested)}"


def test_rendered_loopback_config_passes_promtool(tmp_path):
    path = render_prometheus_config(tmp_path, "127.0.0.1:18000", "127.0.0.1:19090")
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_use_metric_names_the_service_exports():
    # Anti-drift: a renamed metric in service/metrics.py would silently disable an alert.
    from acula.service.metrics import Metrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "info": ["_info"]}
    exported = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }
    used = set(re.findall(r"\bacula_[a-z_]+", ALERT_RULES.read_text()))
    assert used, "no acula metric in the alert rules"
    assert used <= exported, f"not exported by the service: {sorted(used - exported)}"
