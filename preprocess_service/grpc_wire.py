"""How the gRPC proxy hands `avpenet.v1.Scoring` requests to the gateway: as the raw bytes of the message.

The generated `add_ScoringServicer_to_server` makes Ray Serve's proxy parse each message itself; a malformed
message then fails inside grpcio before any of our code runs and the caller gets UNKNOWN ("Exception
deserializing request!"), which tells an integrator nothing. Registered with this function instead (named in
serve_config.yaml's `grpc_servicer_functions`), the proxy forwards the bytes and the gateway parses them
(`parse`): malformed protobuf becomes INVALID_ARGUMENT with a reason, and is counted like any other refusal.

The size of a message is bounded before it is read by the proxy's own gRPC server option: Ray Serve reads
`RAY_SERVE_GRPC_MAX_MESSAGE_SIZE` (bytes; default 2 GiB) into `grpc.max_receive_message_length`, so that
variable must be set in the environment of the Ray processes (LocalStack does it; so must the k8s pods).

A Score message carries the uploads (`MediaFile.data`), and protobuf's parse copies each into the parsed
message. `parse_views` holds each upload once instead, as HTTP does (multipart.py): it walks the message's
framing, takes each media field's payload as a read-only view into the bytes the proxy forwarded, and gives
protobuf a copy of the message without those payloads to parse (so every other field, unknown fields and
refusals stay protobuf's). Protobuf merges a singular submessage given twice and keeps the last payload, and
so does the walk. Framing the walk does not take whole (a group, a truncated or overlong varint, a length past
the end, a media field's tag or length not as protobuf writes them) goes to protobuf's parse of the whole
message, which refuses it as before, or accepts it and holds the payloads (as before, not as views).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from preprocess_service.errors import InvalidRequest

SERVICE = "avpenet.v1.Scoring"
MAX_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
# Protobuf framing around the media parts (field tags, lengths, text fields): well under this.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
M = TypeVar("M", bound=Message)
# The wire types the walk takes; groups (3, 4) it leaves to protobuf.
VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
MAX_LEN = (1 << 31) - 1  # protobuf's own bound on a length-delimited field
# Fields the walk reads before it hands the message to protobuf's parse instead. A Score message has about 20
# (its text fields, the media and their names, a few version pins); the walk is Python, about 2 us a field
# against protobuf's C, so 50 MiB of empty fields (26 million) would hold the event loop for a minute.
MAX_WALKED_FIELDS = 256


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
    return _parsed(message_type, bytes(data))  # the proxy forwards bytes: bytes() of bytes is no copy


def parse_views(message_type: type[M], data: Any, fields: Iterable[str]) -> tuple[M, dict[str, memoryview]]:
    """`data` as a `message_type` whose submessage `fields` (singular, each with a `bytes data`) are parsed
    without their `data`, and beside it each one's `data` as a read-only view into `data` (no copy); a field
    whose message gave no `data` has no view. InvalidRequest when malformed, as `parse`. Framing the walk
    leaves to protobuf (the module's doc) is parsed whole: the views are then {}, the message has the data.
    """
    if isinstance(data, message_type) or not isinstance(data, bytes | bytearray | memoryview):
        return parse(message_type, data), {}
    raw = memoryview(data)
    if not raw.c_contiguous:
        return parse(message_type, bytes(raw)), {}
    try:
        small, views = _without_payloads(
            raw.toreadonly().cast("B"), _payload_numbers(message_type, tuple(fields))
        )
    except _Unwalkable:
        return _parsed(message_type, bytes(data)), {}
    return _parsed(message_type, small), views


def _parsed(message_type: type[M], data: bytes) -> M:
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidRequest(
            f"malformed {message_type.DESCRIPTOR.full_name} protobuf ({type(exc).__name__}); "
            "serialize the request with the avpenet.v1 schema"
        ) from None
    return message


@functools.cache  # the schema never changes: read once, not on every Score call
def _payload_numbers(message_type: type[Message], fields: tuple[str, ...]) -> dict[int, tuple[str, int]]:
    """Field number -> (name, its message's `data` field number), checked against the schema: a repeated
    field or a `data` that is not singular bytes would parse otherwise than the walk assumes."""
    numbers = {}
    for name in fields:
        field = message_type.DESCRIPTOR.fields_by_name[name]
        payload = field.message_type.fields_by_name.get("data") if field.message_type else None
        if field.is_repeated or payload is None or payload.is_repeated or payload.type != payload.TYPE_BYTES:
            raise TypeError(f"{name} is not a singular message with a singular `bytes data`")
        numbers[field.number] = (name, payload.number)
    return numbers


class _Unwalkable(Exception):
    """Framing the walk leaves to protobuf's own parse."""


def _varint(raw: memoryview, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` (at most 10 bytes, under 2**64, before `end`) and the position after it."""
    value = shift = 0
    while pos < end and shift < 64:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            if value >> 64:
                break
            return value, pos
        shift += 7
    raise _Unwalkable


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(
    raw: memoryview, pos: int, end: int, budget: list[int]
) -> Iterator[tuple[int, int, int, int, int]]:
    """Each field of `raw[pos:end]`: (number, wire type, its start, its value's start, its end); `budget`
    holds the fields the walk may still read (MAX_WALKED_FIELDS)."""
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Unwalkable  # not a Score message a client makes: protobuf parses it in C
        tag, value = _varint(raw, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            stop = _varint(raw, value, end)[1]
        elif wire == LEN:
            size, value = _varint(raw, value, end)
            stop = value + size
        elif wire in (FIXED64, FIXED32):
            stop = value + (8 if wire == FIXED64 else 4)
        else:
            raise _Unwalkable  # a group (its end is found by walking it), or no wire type at all
        if stop > end:
            raise _Unwalkable
        yield number, wire, pos, value, stop
        pos = stop


def _check_header(raw: memoryview, number: int, start: int, value: int, end: int) -> None:
    """The tag and length of the length-delimited field `raw[start:end]` must be as protobuf writes them:
    the walk rewrites or drops them, so protobuf's own bounds on them (a tag of 5 bytes at most, a length
    under 2**31) would go unchecked."""
    header = _encode_varint(number << 3 | LEN) + _encode_varint(end - value)
    if end - value > MAX_LEN or raw[start:value] != header:
        raise _Unwalkable


def _without_payloads(
    raw: memoryview, media: dict[int, tuple[str, int]]
) -> tuple[bytes, dict[str, memoryview]]:
    """`raw` less the payload of each of the `media` fields (as `_payload_numbers` gives them), each
    occurrence's length written anew, and the payloads as views (a later one replaces an earlier, as
    protobuf's merge does)."""
    small, views, copied, budget = bytearray(), {}, 0, [MAX_WALKED_FIELDS]
    for number, wire, start, value, end in _fields(raw, 0, len(raw), budget):
        if wire != LEN or number not in media:
            continue  # copied as it is, with the run it is in
        _check_header(raw, number, start, value, end)
        name, payload = media[number]
        inner, kept = bytearray(), value
        for inner_number, inner_wire, inner_start, data, inner_end in _fields(raw, value, end, budget):
            if inner_number == payload and inner_wire == LEN:
                _check_header(raw, payload, inner_start, data, inner_end)
                inner += raw[kept:inner_start]
                kept = inner_end
                views[name] = raw[data:inner_end]
        inner += raw[kept:end]
        small += raw[copied:start]
        small += _encode_varint(number << 3 | LEN) + _encode_varint(len(inner))
        small += inner
        copied = end
    small += raw[copied:]
    return bytes(small), views
