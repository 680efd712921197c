"""One audit line per request, as JSON on the `avpenet.audit` logger, to the replica's stderr: the container
log in the RayService's pods and the output of `avpenet serve` (ray_node.SERVICE_LOG_ENV), a file in Ray's
temp dir in the tests, the demo and the bench (where the tests read it).

Fields: event time, route, protocol, request id, API key id (a SHA-256 prefix of the key, never the key),
clip digest (SHA-256 of the uploaded parts), model versions that produced the answer, outcome (HTTP status or
gRPC code), format, whether it was an idempotent replay (and whether that replay sent its HL7 message again,
the first delivery having failed for a reason that may pass), and latency. Never: media, file names, subject
or encounter references, recording times or scores, so the audit trail carries no PHI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

LOGGER = "avpenet.audit"
log = logging.getLogger(LOGGER)


def setup() -> None:
    """Give the audit logger its own stderr handler once per process (Ray does not configure ours)."""
    if not any(getattr(h, "_avpenet_audit", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._avpenet_audit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def key_id(token: str | None) -> str:
    """Which API key was used, without the key: its SHA-256 prefix (the same digest auth.py compares)."""
    if not token:
        return "none"
    return "key-" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@dataclass
class AuditRecord:
    route: str
    protocol: str
    request_id: str
    api_key_id: str = "none"
    clip_sha256: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)
    format: str = "json"
    replayed: bool = False
    redelivered: bool = False  # a replay that sent the stored answer's HL7 message again (clinical.py)
    started: float = field(default_factory=time.perf_counter, repr=False)

    def emit(self, outcome: int | str) -> str:
        """Write the line (once per request, whatever the outcome) and return it."""
        data = asdict(self)
        data.pop("started")
        data = {
            "event": "avpenet.request",
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            **data,
            "outcome": str(outcome),
            "latency_ms": round((time.perf_counter() - self.started) * 1000.0, 1),
        }
        line = json.dumps(data, sort_keys=True)
        log.info(line)
        return line
