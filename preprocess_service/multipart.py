"""Parse a `multipart/form-data` scoring upload fully in memory into a ScoreRequest.

Starlette's form parser spools files over 1 MB to a temporary file; patient media must never touch disk, so
the body (already bounded by the upload limit) is parsed here with python-multipart's streaming parser.
"""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from avpenet.errors import UnsupportedMedia
from preprocess_service import pinning
from preprocess_service.errors import InvalidRequest
from preprocess_service.protocol import MEDIA_PARTS, MediaPart, ScoreRequest

TEXT_FIELDS = ("age_group", "subject_ref", "encounter_ref", "recorded_at", "model_versions", "deliver")
MAX_TEXT_BYTES = 256
ALLOWED = (*MEDIA_PARTS, *TEXT_FIELDS)
MAX_PARTS = len(ALLOWED)  # each field at most once: more parts cannot be a valid form
Buffer = bytes | bytearray | memoryview


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary; anything but multipart/form-data is 415."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise UnsupportedMedia(
            "send the upload as multipart/form-data (clip, audio, video or landmarks parts)"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data without a boundary")
    return boundary


class _Part:
    """A part as it is parsed: its headers, and where its bytes lie in the body (`start`:`end`), so a media
    part becomes a read-only view of the body, never a copy: the upload is held once. Bytes that do not lie
    in the body in one run (python-multipart's look-behind across writes; one write of the whole body never
    needs it) are gathered in `spill` instead."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.start = self.end = 0
        self.spill: bytearray | None = None

    def add(self, body: Buffer, data: Buffer, start: int, end: int) -> None:
        if self.spill is None and data is body and (self.start == self.end or start == self.end):
            self.start, self.end = (start if self.start == self.end else self.start), end
            return
        if self.spill is None:
            self.spill = bytearray(memoryview(body)[self.start : self.end])
        self.spill.extend(memoryview(data)[start:end])

    def data(self, body: memoryview) -> memoryview:
        return body[self.start : self.end] if self.spill is None else memoryview(bytes(self.spill))


def parse_score_form(body: Buffer, content_type: str | None, request_id: str) -> ScoreRequest:
    """ScoreRequest from a multipart body; unknown, duplicate or non-UTF-8 fields are 422. Media parts are
    views of `body`, which must not change afterwards (the gateway drops its own reference)."""
    boundary = boundary_of(content_type)
    parts: list[_Part] = []
    header_field = bytearray()
    header_value = bytearray()

    ended: list[bool] = []

    def on_part_begin() -> None:
        if len(parts) == MAX_PARTS:  # refused as it is read: a body of empty parts costs ~100x its size
            raise InvalidRequest(
                f"more than {MAX_PARTS} parts; each of {', '.join(ALLOWED)} is sent at most once"
            )
        parts.append(_Part())

    def on_end() -> None:
        ended.append(True)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].add(body, data, start, end)

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except InvalidRequest:
        raise
    except Exception as exc:  # python-multipart raises its own error types for malformed bodies
        raise InvalidRequest(f"malformed multipart body ({type(exc).__name__})") from None
    if parts and not ended:  # a body cut off mid-part would otherwise be scored as if it were whole
        raise InvalidRequest("multipart body ends before its closing boundary (upload cut off?)")

    view = memoryview(body).toreadonly()
    media, fields = _sorted_parts([(part.headers, part.data(view)) for part in parts])
    return ScoreRequest(
        **media,
        age_group=fields.get("age_group") or "unknown",
        subject_ref=fields.get("subject_ref") or None,
        encounter_ref=fields.get("encounter_ref") or None,
        recorded_at=fields.get("recorded_at") or None,
        model_versions=pinning.parse(fields.get("model_versions", "")),  # the rule gRPC's map follows
        deliver_hl7=_deliver(fields.get("deliver", "")),
        request_id=request_id,
    )


def _sorted_parts(
    parts: list[tuple[dict[bytes, bytes], memoryview]],
) -> tuple[dict[str, MediaPart], dict[str, str]]:
    """(media parts, text fields) by name; unknown, duplicate, oversized or non-UTF-8 parts are 422."""
    media: dict[str, MediaPart] = {}
    fields: dict[str, str] = {}
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        try:
            name = disposition.get(b"name", b"").decode("utf-8")
            filename = disposition.get(b"filename", b"").decode("utf-8", "replace")
        except UnicodeDecodeError:
            raise InvalidRequest("a multipart field name is not UTF-8") from None
        if name in media or name in fields:
            raise InvalidRequest(f"part {name!r} sent twice")
        if name in MEDIA_PARTS:
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            media[name] = MediaPart(data=data, filename=filename, content_type=ctype)  # a view, no copy
        elif name in TEXT_FIELDS:
            if len(data) > MAX_TEXT_BYTES:
                raise InvalidRequest(f"field {name!r} is longer than {MAX_TEXT_BYTES} bytes")
            try:
                fields[name] = bytes(data).decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InvalidRequest(f"field {name!r} is not UTF-8 text") from None
        else:
            raise InvalidRequest(f"unknown part {name[:32]!r}; expected {', '.join(ALLOWED)}")
    return media, fields


def _deliver(value: str) -> bool:
    """`deliver=hl7v2` asks the gateway to also send the ORU^R01 to its interface engine."""
    if value not in ("", "hl7v2"):
        raise InvalidRequest("deliver must be hl7v2 (send the HL7 v2 message over MLLP) or absent")
    return value == "hl7v2"
