"""Unit tests of the audit line: one JSON line, the fields an auditor needs, nothing identifying a patient."""

from __future__ import annotations

import json

from preprocess_service import audit


def test_one_json_line_with_the_fields_and_no_key(caplog):
    record = audit.AuditRecord(route="/v1/score", protocol="http", request_id="req-1")
    record.api_key_id = audit.key_id("secret-key-123")
    record.clip_sha256 = "ab" * 32
    record.model_versions = {"avpenet": "1"}
    audit.setup()  # as the gateway runs it: its own handler, not propagating to the root logger
    # pytest hooks caplog onto loggers that were non-propagating when the test began, so whether it is on the
    # audit logger already depends on which test set it up first: hook it on here if not, exactly once.
    hooked = caplog.handler in audit.log.handlers
    if not hooked:
        audit.log.addHandler(caplog.handler)
    try:
        line = record.emit(200)
    finally:
        if not hooked:
            audit.log.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.name == audit.LOGGER] == [line]
    data = json.loads(line)
    assert {"api_key_id", "request_id", "clip_sha256", "model_versions", "outcome", "latency_ms"} <= set(data)
    assert data["outcome"] == "200" and data["api_key_id"].startswith("key-")
    assert "secret-key-123" not in line
    assert audit.key_id("secret-key-123") == data["api_key_id"] and audit.key_id(None) == "none"
