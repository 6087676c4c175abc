"""WSGI entry point: `flask --app app …` and `gunicorn app:app`. A wrong CONSOLE_* variable stops
start-up with one line naming it."""
import sys

from console import create_app
from console.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"Messaging Console: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
