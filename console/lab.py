"""The running broker lab (scripts/brokerlab.py), as `flask brokers use-lab` sees it: read from the
files the lab writes (lab.json while it runs, console-settings.json with the settings that point at it),
never by importing the script.

The lab's directory is $BROKERLAB_DIR, else the one named in <tmp>/messaging-console-lab.active (written
by `brokerlab.py start`), else <tmp>/messaging-console-lab — the same order the lab itself uses.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

ACTIVE_NAME = "messaging-console-lab.active"
DEFAULT_NAME = "messaging-console-lab"
SETTINGS_NAME = "console-settings.json"


class LabUnavailable(RuntimeError):
    """No running lab, or its lab.json says nothing the console can use."""


def lab_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of the lab this machine runs (or would run)."""
    environ = os.environ if environ is None else environ
    if environ.get("BROKERLAB_DIR"):
        return Path(environ["BROKERLAB_DIR"])
    tmp = Path(tempfile.gettempdir())
    try:
        active = Path((tmp / ACTIVE_NAME).read_text().strip())
    except OSError:
        active = None
    if active is not None and (active / "lab.json").is_file():
        return active
    return tmp / DEFAULT_NAME


def read_lab(directory: Path | None = None) -> dict[str, Any]:
    """The lab.json of the running lab (or of the lab in `directory`)."""
    file = (directory or lab_dir()) / "lab.json"
    try:
        data = json.loads(file.read_text())
    except OSError:
        raise LabUnavailable(f"The broker lab is not running ({file} is missing): run "
                             f"`make brokers`.") from None
    except ValueError as exc:
        raise LabUnavailable(f"{file} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise LabUnavailable(f"{file} does not describe a broker lab.")
    return data


def lab_settings(directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The settings (protocol → field → value) that point the console at the running lab's plain
    listeners, from the console-settings.json the lab writes next to its lab.json."""
    directory = directory or lab_dir()
    read_lab(directory)
    file = directory / SETTINGS_NAME
    try:
        settings = json.loads(file.read_text())
    except OSError:
        raise LabUnavailable(f"The running lab has no {file} (it was started by an older "
                             f"scripts/brokerlab.py): run `make brokers` again.") from None
    except ValueError as exc:
        raise LabUnavailable(f"{file} is not valid JSON: {exc}.") from None
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise LabUnavailable(f"{file} does not hold settings per protocol.")
    return settings
