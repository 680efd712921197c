"""Corpus cases as bytes on the wire: a hand-built multipart body and a hand-encoded protobuf message.

Both are encoded here rather than by `requests` / `scoring_pb2` so the corpus can send what well-behaved
clients never would: non-UTF-8 text, duplicate or unknown parts, and messages that do not parse.
"""

from __future__ import annotations

import functools

from corpus.cases import Case, Upload

BOUNDARY = "avpenet-corpus-boundary-6b1d"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"
# avpenet.v1.ScoreRequest / MediaFile field numbers (proto/avpenet/v1/scoring.proto).
REQUEST_FIELDS = {
    "clip": 1, "audio": 2, "video": 3, "landmarks": 4,
    "age_group": 5, "subject_ref": 6, "encounter_ref": 7, "request_id": 8, "recorded_at": 9,
}  # fmt: skip
UNKNOWN_FIELD = 15  # a field number ScoreRequest does not define (proto3 parsers keep it as unknown)
MEDIA_DATA, MEDIA_FILENAME = 1, 2


def http_request(case: Case) -> tuple[bytes, str]:
    """(body, Content-Type) of the case's POST /v1/score."""
    up = case.upload
    if up.http_body is not None:
        return up.http_body, up.http_content_type or ""
    out = bytearray()
    for name, value in up.fields:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value + b"\r\n"
    for name, filename, data in up.files:
        out += f"--{BOUNDARY}\r\n".encode()
        out += b'Content-Disposition: form-data; name="' + name.encode() + b'"; filename="'
        out += filename.encode("utf-8") + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        out += data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={BOUNDARY}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload  # wire type 2: length-delimited


def grpc_message(case: Case) -> bytes:
    """The serialized avpenet.v1.ScoreRequest of the case (raw bytes: it need not be a valid message)."""
    up = case.upload
    if up.grpc_raw is not None:
        return up.grpc_raw
    out = bytearray()
    for name, filename, data in up.files:
        media = _field(MEDIA_DATA, data) + _field(MEDIA_FILENAME, filename.encode("utf-8"))
        out += _field(REQUEST_FIELDS.get(name, UNKNOWN_FIELD), media)
    for name, value in up.fields:
        out += _field(REQUEST_FIELDS.get(name, UNKNOWN_FIELD), value)
    return bytes(out)


@functools.cache
def valid_clip(
    age_group: bytes = b"adult", request_id: str = "", seconds: float = 5.0
) -> tuple[bytes, bytes]:
    """A valid audio + landmarks request: a multipart body (Content-Type CTYPE) and protobuf bytes."""
    from support.gateway import face_track, wav_bytes

    from avpenet.v1 import scoring_pb2

    wav, npz = wav_bytes(seconds, freq=510.0), face_track(seconds, seed=4).to_npz_bytes()
    upload = Upload(
        files=(("audio", "a.wav", wav), ("landmarks", "f.npz", npz)), fields=(("age_group", age_group),)
    )
    case = Case("v", "v", 200, "OK", lambda: upload)
    message = scoring_pb2.ScoreRequest.FromString(grpc_message(case))
    message.request_id = request_id
    return http_request(case)[0], message.SerializeToString()
