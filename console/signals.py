"""What the change pipeline announces, so that it never imports the parts that act on a change
(blinker, as Flask's own signals). Senders pass the application; receivers connect in their
package's `init_app`.

- `version_written`: a new configuration is written in the open transaction (kwargs `snapshot`,
  the Snapshot of the new configuration, and `version`, its id or None for the environment at
  start-up). Receivers add what must be committed with it — the outbox's callbacks — and do no
  network I/O: the configuration's write lock is held.
- `version_committed`: that transaction committed (same kwargs). Receivers wake what acts on it:
  the delivery worker, the check scheduler, the watches.
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

version_written = _signals.signal("version-written")
version_committed = _signals.signal("version-committed")

# roll-outs in waves (console.delivery.waves), sent after their commit with kwarg `rollout`, the
# roll-out's document: the held services now get the new version (released) or keep theirs (halted)
rollout_released = _signals.signal("rollout-released")
rollout_halted = _signals.signal("rollout-halted")
