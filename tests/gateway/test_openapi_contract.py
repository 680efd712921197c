"""The OpenAPI document says what the HTTP routes do: the Bearer key they read, the `X-Request-ID` they take,
the headers they answer with and the 408 a slow upload gets. None of these were declared, so a client
generated from docs/openapi.json sent no key, and never read the HL7 delivery outcome. Built without the
stack (test_clinical_gateway.py compares the committed document with the one the running gateway serves)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from preprocess_service import http_routes, openapi
from preprocess_service.errors import SlowUpload, Unauthenticated

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi.document()


def test_the_committed_document_is_the_generated_one(document):
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == document, "regenerate: python -m preprocess_service.openapi > docs/openapi.json"


def test_the_keyed_routes_declare_the_bearer_scheme_and_the_request_id(document):
    scheme = document["components"]["securitySchemes"][openapi.BEARER]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, method in ((openapi.SCORE_ROUTE, "post"), (openapi.MODELS_ROUTE, "get")):
        operation = document["paths"][path][method]
        assert operation["security"] == [{openapi.BEARER: []}], path
        request_id = [p for p in operation["parameters"] if p["name"] == "X-Request-ID"]
        assert request_id and request_id[0]["in"] == "header", path
        assert str(Unauthenticated.http_status) in operation["responses"]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert "security" not in document["paths"]["/healthz"]["get"]  # probes carry no key


def test_the_score_answer_headers_and_the_slow_upload_are_declared(document):
    responses = document["paths"][openapi.SCORE_ROUTE]["post"]["responses"]
    headers = responses["200"]["headers"]
    source = inspect.getsource(http_routes.score)
    for name in ("X-HL7-Delivery", "Idempotent-Replayed"):
        assert name in headers and f'headers["{name}"]' in source, name  # the names the route sets
    assert str(SlowUpload.http_status) == "408" and "408" in responses
    assert responses["408"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    # Ray Serve's proxy answers a request past its timeout 408 in text/plain (`Request <id> timed out after
    # 0.01s.`): documented beside the JSON, so a strict client generated from the document accepts it
    plain = responses["408"]["content"]["text/plain"]["schema"]
    assert plain["type"] == "string" and "timed out after" in plain["example"]
    assert "Retry-After" in responses["503"]["headers"] and "Retry-After" in responses["429"]["headers"]
