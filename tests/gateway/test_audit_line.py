"""Unit tests of the audit line: one JSON line, the fields an auditor needs, nothing identifying a patient."""

from __future__ import annotations

import json

from support.asgi import score_request

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


def test_a_caller_gone_is_499_audited_and_not_a_server_fault(caplog):
    """A disconnect mid-upload was a 500 'internal error' (refusal reason InternalError), and a request Serve
    cancelled because its caller left wrote no audit line at all."""
    import asyncio

    import pytest

    from preprocess_service import http_routes
    from preprocess_service.service import ScoringService
    from preprocess_service.settings import GatewaySettings

    settings = GatewaySettings.load({"triton_url": "127.0.0.1:1", "grpc_enabled": False}, {})

    async def run() -> tuple[int, list[dict]]:
        service = ScoringService(settings)
        try:
            gone = score_request([{"type": "http.request", "body": b"--XX\r\n", "more_body": True},
                                  {"type": "http.disconnect"}])  # fmt: skip
            status = (await http_routes.score(service, gone)).status_code
            stuck = asyncio.create_task(http_routes.score(service, score_request([])))  # the body never comes
            await asyncio.sleep(0.2)
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            reasons = {s.labels["reason"] for s in service.metrics.refusals.collect()[0].samples}
            assert "ClientGone" in reasons and "InternalError" not in reasons
        finally:
            await service.close()
        return status, [json.loads(r.getMessage()) for r in caplog.records if r.name == audit.log.name]

    with caplog.at_level("INFO", logger=audit.log.name):
        status, lines = asyncio.run(run())
    assert status == 499 and [line["outcome"] for line in lines] == ["499", "499"]
