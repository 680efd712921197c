"""How the gRPC proxy hands `avpenet.v1.Scoring` requests to the gateway: as the raw bytes of the message.

The generated `add_ScoringServicer_to_server` makes Ray Serve's proxy parse each message itself; a malformed
message then fails inside grpcio before any of our code runs and the caller gets UNKNOWN ("Exception
deserializing request!"), which tells an integrator nothing. Registered with this function instead (named in
serve_config.yaml's `grpc_servicer_functions`), the proxy forwards the bytes and the gateway parses them
(`parse`): malformed protobuf becomes INVALID_ARGUMENT with a reason, and is counted like any other refusal.

The size of a message is bounded before it is read by the proxy's own gRPC server option: Ray Serve reads
`RAY_SERVE_GRPC_MAX_MESSAGE_SIZE` (bytes; default 2 GiB) into `grpc.max_receive_message_length`, so that
variable must be set in the environment of the Ray processes (LocalStack does it; so must the k8s pods).
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from preprocess_service.errors import InvalidRequest

SERVICE = "avpenet.v1.Scoring"
MAX_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
# Protobuf framing around the media parts (field tags, lengths, text fields): well under this.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
M = TypeVar("M", bound=Message)


def max_message_bytes(max_upload_bytes: int) -> int:
    """The gRPC proxy's receive limit for a gateway whose upload limit is `max_upload_bytes`."""
    return max_upload_bytes + MESSAGE_OVERHEAD_BYTES


def add_ScoringServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 (grpc's naming)
    """The generated registration, but requests are passed on unparsed (request_deserializer=None)."""
    from avpenet.v1 import scoring_pb2 as pb

    handlers = {
        "Score": grpc.unary_unary_rpc_method_handler(
            servicer.Score, request_deserializer=None, response_serializer=pb.ScoreResponse.SerializeToString
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            servicer.ListModels,
            request_deserializer=None,
            response_serializer=pb.ListModelsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(SERVICE, handlers)


def parse(message_type: type[M], data: Any) -> M:
    """`data` as a `message_type` (already-parsed messages pass through); InvalidRequest when malformed."""
    if isinstance(data, message_type):
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidRequest(f"expected a serialized {message_type.DESCRIPTOR.full_name}")
    message = message_type()
    try:
        message.ParseFromString(bytes(data))  # the proxy forwards bytes: bytes() of bytes is no copy
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidRequest(
            f"malformed {message_type.DESCRIPTOR.full_name} protobuf ({type(exc).__name__}); "
            "serialize the request with the avpenet.v1 schema"
        ) from None
    return message
