"""What a diagnosis is: ordered steps (dns → tcp → tls → handshake → auth → operation), each with
status, time and detail, and one cause code with a summary and a fix (format fixed by CONTRACT.md)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

STEPS = ("dns", "tcp", "tls", "handshake", "auth", "operation")
STATUSES = ("pending", "running", "ok", "failed", "skipped", "not_applicable")


@dataclass
class Step:
    """One step of a diagnosis."""

    name: str
    status: str = "pending"
    ms: float | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.ms is not None:
            out["ms"] = round(self.ms, 1)
        if self.detail:
            out["detail"] = self.detail
        if self.data:
            out["data"] = self.data
        return out


@dataclass
class Diagnosis:
    """The outcome of a step-wise diagnosis of one protocol."""

    protocol: str
    ok: bool = False
    cause: str = "unknown"
    summary: str = ""
    fix: str = ""
    steps: list[Step] = field(default_factory=lambda: [Step(n) for n in STEPS])
    target: str = ""
    certificates: list[dict[str, Any]] = field(default_factory=list)   # presented by the broker
    nodes: list[dict[str, Any]] = field(default_factory=list)          # one entry per node
    warnings: list[dict[str, Any]] = field(default_factory=list)       # node_unreachable per failed node
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol, "ok": self.ok, "cause": self.cause,
            "summary": self.summary, "fix": self.fix,
            "steps": [s.as_dict() for s in self.steps],
            "target": self.target, "certificates": self.certificates,
            "nodes": self.nodes, "warnings": self.warnings,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


StepCallback = Callable[[Diagnosis], None]
