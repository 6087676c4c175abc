"""`python -m console_agent` = `console-agent`."""
import sys

from .cli import main

sys.exit(main())
