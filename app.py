"""WSGI entry point: `flask --app app …` and `gunicorn app:app`. A wrong CONSOLE_* variable stops
start-up with one line naming it.

Start-up creates a few hundred thousand objects (modules, classes, the URL map, the ORM mappers) that
live as long as the process. The cyclic garbage collector is off while they are made and they are
then frozen (gc.freeze: the pattern the gc documentation gives for forking servers), so no
collection walks them again — not during start-up, not in every later full collection, and not at
exit. A CLI command starts and ends about 40 % sooner (bench/startup.py)."""
import gc
import sys

gc.disable()
try:
    from console import create_app
    from console.config import ConfigError

    try:
        app = create_app()
    except ConfigError as exc:
        print(f"Messaging Console: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
finally:
    gc.freeze()
    gc.enable()
