"""`avpenet score --grpc` stops a run the gateway cannot answer, as over HTTP: grpcio's own deadline came back
as DEADLINE_EXCEEDED and a name that does not resolve as UNAVAILABLE, neither in the stop list (UNREACHABLE,
TIMEOUT), so a hung gateway cost each remaining clip its retries (4 x 120 s and backoff)."""

from __future__ import annotations

from preprocess_service.client import stops
from preprocess_service.errors import ERROR_KEY
from preprocess_service.sdk_errors import Retryable, grpc_error


def _status(name: str, details: str, trailing: dict[str, str]) -> tuple[str, bool]:
    raised = grpc_error(name, details, trailing)
    error = raised.error if isinstance(raised, Retryable) else raised
    return error.status, stops(error)


def test_the_clients_own_deadline_is_a_timeout_that_stops_the_run():
    assert _status("DEADLINE_EXCEEDED", "Deadline Exceeded", {}) == ("TIMEOUT", True)
    assert isinstance(grpc_error("DEADLINE_EXCEEDED", "Deadline Exceeded", {}), Retryable)  # retried first


def test_the_gateways_own_deadline_refusal_keeps_its_code_and_the_run_goes_on():
    trailing = {"x-request-id": "r-1", ERROR_KEY: "BudgetSpent"}
    assert _status("DEADLINE_EXCEEDED", "the request's time budget is spent", trailing) == (
        "DEADLINE_EXCEEDED",
        False,
    )


def test_a_host_that_does_not_resolve_is_unreachable_as_one_that_refuses():
    resolving = (
        "errors resolving no-such-host.invalid:9090: [field:hostname lookup error: Domain name not found]"
    )
    assert _status("UNAVAILABLE", resolving, {}) == ("UNREACHABLE", True)
    assert _status("UNAVAILABLE", "failed to connect to all addresses", {}) == ("UNREACHABLE", True)
    assert _status("UNAVAILABLE", "Triton is restarting", {"x-request-id": "r"}) == ("UNAVAILABLE", False)
