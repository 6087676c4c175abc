"""What a service is served when it fetches or watches its configuration: the one place that turns a
registered service into its document, its ETag and the records of the read, for the plain fetch, a
watch held on a thread and the watches answered together by the asynchronous server
(console/serving.py). A roll-out plan that decides which version a service is served hooks here."""
from __future__ import annotations

from typing import Any

from .. import audit as audit_log
from ..messaging.effective import Snapshot
from ..models import ExtensionService
from . import documents, plans
from . import status as rollout


def tag_of(row: ExtensionService, own: bool) -> str:
    """The ETag `row`'s watcher holds: the service's own token sees the revealed document's ETag,
    anyone else the masked one's."""
    return (row.config_etag or "") + ("" if own else documents.MASKED_SUFFIX)


def document(snapshot: Snapshot, row: ExtensionService, own: bool) -> tuple[str, dict[str, Any]]:
    """The ETag and body `row` is served under `snapshot` (the document itself is built once per
    group of services sharing it, see documents._shared). With the service's own token the row's
    ETag follows what this process serves (its environment may differ from the writer's)."""
    snapshot, _ = plans.snapshot_for(row, snapshot, row.config_version)  # a roll-out may hold it back
    content = documents.content(snapshot, row, reveal=own)
    if own:
        tag = documents.etag_for(snapshot, row)
        if tag != row.config_etag:
            row.config_etag = tag
    else:
        tag = tag_of(row, own)
    return tag, {"service": row.name, "version": row.config_version, "etag": tag, **content}


def record(row: ExtensionService, body: dict[str, Any], *, actor: str, remote: str | None,
           watched: bool) -> None:
    """Note that `row` received `body` with its secrets (the caller commits): the fetch, and the
    secret read in the audit log — a watch audits each version once, a plain fetch every time."""
    first_time = row.fetched_etag != row.config_etag
    rollout.record_fetch(row, remote)
    if not watched or first_time:
        entry = audit_log.audit(
            "read_config", "applied", actor=actor, origin="api", protocols=list(body["brokers"]),
            summary=f"Service {row.name} read its configuration v{row.config_version} "
                    f"(secrets included) from {remote}")
        entry.remote = remote
