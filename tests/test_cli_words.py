"""The CLI words what it prints like the pages, not as Python values (issue 18 item 8): a service
whose new adapters get no protocol reads "no protocol", never "-> None"."""
from __future__ import annotations

import re
from pathlib import Path

from flask import Flask

from console.adapters import service as registry
from console.settings import service


def test_config_import_dry_run_names_no_protocol_in_words(app: Flask, runner, tmp_path: Path) -> None:
    with app.app_context():
        assert service.apply_changes("mqtt", {"enabled": True}, "seed", confirm=True).errors == {}
        registry.register_service("edge", ["mqtt"])
    path = tmp_path / "off.yaml"
    path.write_text("brokers:\n  mqtt:\n    enabled: false\n", encoding="utf-8")
    result = runner.invoke(args=["config", "import", "--dry-run", str(path)])
    assert "new adapters of edge will use no protocol instead of mqtt" in result.output, result.output
    assert "None" not in result.output and "False" not in result.output and "True" not in result.output


def test_brokers_list_words_switches_on_and_off(app: Flask, runner) -> None:
    with app.app_context():
        assert service.apply_changes("mqtt", {"enabled": True, "tls": True}, "seed", confirm=True).errors == {}
    text = runner.invoke(args=["brokers", "list"]).output
    assert "True" not in text and "False" not in text and "None" not in text, text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert " on " in lines["clean_session"] and " on " in lines["tls_verify_hostname"]
    mqtt = text[text.index("MQTT (enabled)"):text.index("NATS (")]
    assert re.search(r"\n  tls +on +\[saved\]", mqtt) and re.search(r"\n  enabled +on +\[saved\]", mqtt)
    kafka = text[text.index("Kafka (disabled)"):text.index("MQTT (")]
    assert re.search(r"\n  tls +off +\[default\]", kafka)
