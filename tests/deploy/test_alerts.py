"""deploy/prometheus/alerts.yml: `promtool check rules` accepts it, `promtool test rules` passes the
series written for each alert (tests/deploy/alerts.test.yml), every alert has a summary, a page and a
test in which it fires, and every console metric a rule reads is one /metrics exports."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
TESTS = Path(__file__).with_name("alerts.test.yml")


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: make system-deps installs the Debian package prometheus"
    return found


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    # README: promtool check rules deploy/prometheus/alerts.yml
    done = subprocess.run([promtool(), "check", "rules", "deploy/prometheus/alerts.yml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    # README: promtool test rules tests/deploy/alerts.test.yml
    done = subprocess.run([promtool(), "test", "rules", "tests/deploy/alerts.test.yml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The unit tests can fail: one changed expected summary is a failure."""
    broken = TESTS.read_text().replace("rabbitmq node r2:5672 down for 5 minutes",
                                       "rabbitmq node r2:5672 down")
    copy = tmp_path / "alerts.test.yml"
    copy.write_text(broken.replace("../../deploy/prometheus/alerts.yml", str(RULES)))
    done = subprocess.run([promtool(), "test", "rules", copy.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_every_alert_has_a_summary_a_page_and_a_test_where_it_fires() -> None:
    fired = {case["alertname"] for test in yaml.safe_load(TESTS.read_text())["tests"]
             for case in test["alert_rule_test"] if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in yaml.safe_load(TESTS.read_text())["tests"]
             for case in test["alert_rule_test"] if not case.get("exp_alerts")}
    for rule in rules():
        assert rule["annotations"]["summary"] and rule["annotations"]["page"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["alert"] in fired, f"{rule['alert']} never fires in alerts.test.yml"
        assert rule["alert"] in quiet, f"{rule['alert']} has no case where it stays quiet"


def test_every_metric_the_rules_read_is_exported(client) -> None:
    exported = set(re.findall(r"^# TYPE (\w+) ", client.get("/metrics").get_data(as_text=True),
                              re.M))
    read = {name for rule in rules() for name in re.findall(r"\bmessaging_\w+", rule["expr"])}
    assert read and read <= exported, read - exported
