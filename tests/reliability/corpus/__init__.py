"""The bad-input corpus: hostile and broken uploads, each with its documented HTTP status
and gRPC code.

`build(limits)` returns the cases sized against the gateway's limits; `http_request(case)` and
`grpc_message(case)` turn one into bytes on the wire. docs/RELIABILITY.md lists every case.
"""

from corpus.cases import MARKER, SUBJECT_MARKER, Case, Upload, build
from corpus.wire import grpc_message, http_request

__all__ = ["MARKER", "SUBJECT_MARKER", "Case", "Upload", "build", "grpc_message", "http_request"]
