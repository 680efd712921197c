"""grpc_wire.parse_views: a Score message's media payloads are views into the bytes the proxy forwarded, and
everything else is exactly what protobuf's own parse of those bytes gives (or the same refusal).

Protobuf's parse copied every `MediaFile.data` (and `ScoreRequest.from_proto` copied it again), so a gRPC
upload was held three times in the gateway. Each generated message here is parsed both ways and compared."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from avpenet.v1 import scoring_pb2 as pb
from preprocess_service import grpc_wire
from preprocess_service.errors import InvalidRequest
from preprocess_service.protocol import MEDIA_PARTS, ScoreRequest

NUMBERS = {name: pb.ScoreRequest.DESCRIPTOR.fields_by_name[name].number for name in MEDIA_PARTS}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _unknown(rng: random.Random) -> bytes:
    """One field no schema here knows (numbers 20-40), of any wire type the walk reads."""
    number, wire = rng.randint(20, 40), rng.choice((0, 1, 2, 5))
    value = {0: _varint(rng.getrandbits(64)), 1: rng.randbytes(8), 5: rng.randbytes(4)}
    if wire == 2:
        return _len_field(number, rng.randbytes(rng.randint(0, 9)))
    return _varint(number << 3 | wire) + value[wire]


def _media_file(rng: random.Random) -> bytes:
    """A MediaFile's bytes: its fields in any order, any given twice or not at all, data empty or not,
    unknown fields, and a `data` of the wrong wire type (which protobuf keeps as an unknown field)."""
    fields = []
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(("data", "data", "empty", "filename", "type", "unknown", "wrong"))
        if kind in ("data", "empty"):
            fields.append(
                _len_field(1, rng.randbytes(rng.choice((1, 7, 130, 70_000))) if kind == "data" else b"")
            )
        elif kind in ("filename", "type"):
            fields.append(_len_field(2 if kind == "filename" else 3, f"f{rng.randint(0, 99)}.wav".encode()))
        elif kind == "unknown":
            fields.append(_unknown(rng))
        else:
            fields.append(_varint(1 << 3) + _varint(rng.randint(0, 300)))
    return b"".join(fields)


def _message(rng: random.Random) -> bytes:
    """A ScoreRequest's bytes: media fields present or absent, in any order, some given twice (protobuf
    merges them), with the scalar fields, maps, unknown fields and media fields of the wrong wire type."""
    fields = []
    for _ in range(rng.randint(0, 8)):
        kind = rng.choice(("media", "media", "media", "scalars", "unknown", "wrong"))
        if kind == "media":
            fields.append(_len_field(NUMBERS[rng.choice(MEDIA_PARTS)], _media_file(rng)))
        elif kind == "scalars":
            scalars = pb.ScoreRequest(age_group=rng.choice(("adult", "")), request_id=f"r{rng.randint(0, 9)}")
            scalars.model_versions[rng.choice(("fusion", "avpenet"))] = str(rng.randint(1, 3))
            scalars.deliver_hl7, scalars.format = rng.random() < 0.5, rng.randint(0, 3)
            fields.append(scalars.SerializeToString())
        elif kind == "unknown":
            fields.append(_unknown(rng))
        else:
            fields.append(_varint(NUMBERS[rng.choice(MEDIA_PARTS)] << 3) + _varint(rng.randint(0, 9)))
    return b"".join(fields)


def _outcome(parse, raw: bytes):
    try:
        return parse(raw)
    except InvalidRequest as exc:
        return f"InvalidRequest: {exc}"


def _by_protobuf(raw: bytes):
    return _outcome(lambda data: grpc_wire.parse(pb.ScoreRequest, data), raw)


def _by_views(raw: bytes):
    """parse_views' answer, its views checked and put back into the message as protobuf would hold them."""
    got = _outcome(lambda data: grpc_wire.parse_views(pb.ScoreRequest, data, MEDIA_PARTS), raw)
    if isinstance(got, str):
        return got
    message, views = got
    for name, view in views.items():
        assert message.HasField(name) and getattr(message, name).data == b"", name  # not held twice
        assert isinstance(view, memoryview) and view.readonly and view.obj is raw, name
        getattr(message, name).data = bytes(view)
    return message


def _same(raw: bytes) -> None:
    expected, got = _by_protobuf(raw), _by_views(raw)
    assert got == expected, raw[:200]
    if isinstance(expected, str):
        return
    assert got.SerializeToString() == expected.SerializeToString()  # unknown fields included, in order
    for name in MEDIA_PARTS:  # and as the service reads them
        part, want = ScoreRequest.from_proto(got).parts().get(name), getattr(expected, name)
        if expected.HasField(name):
            assert (bytes(part.data), part.filename, part.content_type) == (
                want.data,
                want.filename,
                want.content_type,
            )
        else:
            assert part is None


@pytest.mark.parametrize("seed", range(8))
def test_parts_are_what_protobuf_parses_for_generated_messages(seed):
    rng = random.Random(seed)
    for _ in range(150):
        raw = _message(rng)
        _same(raw)
        message, views = grpc_wire.parse_views(pb.ScoreRequest, raw, MEDIA_PARTS)
        held = {name for name in MEDIA_PARTS if getattr(_by_protobuf(raw), name).data}
        assert held <= views.keys() and message.ByteSize() < len(raw) - sum(map(len, views.values())) + 64


@pytest.mark.parametrize("seed", range(4))
def test_damaged_messages_are_refused_or_read_as_protobuf_reads_them(seed):
    """Cut short anywhere, or a byte changed: protobuf's verdict, never a crash or another part."""
    rng = random.Random(100 + seed)
    refused = 0
    for _ in range(100):
        raw = bytearray(_message(rng) or b"\x0a\x00")
        if rng.random() < 0.5:
            del raw[rng.randrange(len(raw)) :]
        else:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        _same(bytes(raw))
        refused += isinstance(_by_protobuf(bytes(raw)), str)
    assert refused > 10  # the damage reached the framing, not only the payloads


CLIP = _len_field(1, _len_field(1, b"abc") + _len_field(2, b"a.wav"))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a",  # a tag and no length
        b"\x0a\x05\x0a\x01",  # a length past the end
        CLIP[:-1],  # the clip's length past the end
        b"\x0a\x03\x0a\x05a",  # the data's length past its MediaFile's end
        b"\x0a" + b"\xff" * 10 + b"\x01",  # a length of 11 bytes
        b"\x0a\xff\xff\xff\xff\x0f",  # a length of 2**32 - 1
        b"\x0b\x08\x01",  # a group with no end
        b"\x0c",  # a group's end with no start
        b"\x0e\x00",  # wire type 6
        b"\x00\x01",  # field 0
        b"\x0a\x02\x00\x01",  # field 0 inside a MediaFile
        b"\x0a\x02\x12\xff" + CLIP,  # a filename whose length runs past its MediaFile
        b"\x0a\x03\x12\x01\xff",  # a filename that is not UTF-8
        CLIP + b"\x17abc",
        b"\x12\xff\xff\xff\x0f",
        b'{"audio": "AAAA"}',
    ],
)
def test_malformed_framing_is_refused_as_protobuf_refuses_it(raw):
    with pytest.raises(InvalidRequest, match="malformed avpenet.v1.ScoreRequest protobuf") as refused:
        grpc_wire.parse_views(pb.ScoreRequest, raw, MEDIA_PARTS)
    assert str(refused.value) == _by_protobuf(raw).removeprefix("InvalidRequest: ")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02",  # a length of 2**64 (upb reads 0)
        b"\x8a\x00\x05\x0a\x03abc",  # the clip's tag written in two bytes
        b"\x0a\x86\x00\x0a\x03abc",  # its length written in two bytes
        b"\x0a\x06\x8a\x00\x03abc",  # the data's tag in two bytes
        b"\x0a\x06\x0a\x83\x00abc",  # the data's length in two bytes
        b"\x0a\x0a\x8a\x80\x80\x80\x80\x00\x03abc",  # the data's tag in six bytes (protobuf refuses it)
        b"\x0a\x0a\x0a\x83\x80\x80\x80\x80\x00abc",  # its length in six bytes (protobuf takes it)
        CLIP + b"\xab\x01\x08\x01\xac\x01",  # an unknown group (field 21)
        b"\x0a\x04\x0b\x08\x01\x0c",  # a group inside the MediaFile (field 1, as `data` is)
    ],
)
def test_framing_the_walk_does_not_take_is_protobufs_to_read(raw):
    """Protobuf takes these or refuses them by rules the walk need not copy: it reads them whole."""
    _same(raw)
    got = _outcome(lambda data: grpc_wire.parse_views(pb.ScoreRequest, data, MEDIA_PARTS), raw)
    assert isinstance(got, str) or got[1] == {}


def test_a_media_field_given_twice_is_merged_as_protobuf_merges_it():
    first = _len_field(1, _len_field(1, b"first") + _len_field(2, b"a.wav"))
    second = _len_field(1, _len_field(3, b"audio/wav"))
    emptied = _len_field(1, _len_field(1, b""))
    message, views = grpc_wire.parse_views(pb.ScoreRequest, first + second, MEDIA_PARTS)
    assert (bytes(views["clip"]), message.clip.filename, message.clip.content_type) == (
        b"first",
        "a.wav",
        "audio/wav",
    )
    message, views = grpc_wire.parse_views(pb.ScoreRequest, first + emptied + second, MEDIA_PARTS)
    assert bytes(views["clip"]) == b"" and message.clip.filename == "a.wav"
    for raw in (first + second, first + emptied, second + first, emptied + emptied):
        _same(raw)


def test_the_payloads_are_views_into_the_message_not_copies():
    audio, video = bytes(range(256)) * (32 << 10), b"\x00" * (8 << 20)  # 8 MiB each
    raw = pb.ScoreRequest(
        audio=pb.MediaFile(data=audio, filename="a.wav"), video=pb.MediaFile(data=video), age_group="adult"
    ).SerializeToString()
    tracemalloc.start()
    try:
        message, views = grpc_wire.parse_views(pb.ScoreRequest, raw, MEDIA_PARTS)
        request = ScoreRequest.from_proto(message, "r", views)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10, f"{peak} bytes allocated to parse a {len(raw)}-byte message"
    for name, data in (("audio", audio), ("video", video)):
        part = getattr(request, name)
        assert part.data is views[name] and part.data.obj is raw and part.data == data
        with pytest.raises(TypeError):
            part.data[0] = 1  # read-only
    assert message.ByteSize() < 64 and message.audio.filename == "a.wav"  # protobuf holds no media
    assert request.parts().keys() == {"audio", "video"} and request.age_group == "adult"


def test_a_parsed_message_or_other_buffers_are_taken_too():
    message = pb.ScoreRequest(clip=pb.MediaFile(data=b"abc"))
    assert grpc_wire.parse_views(pb.ScoreRequest, message, MEDIA_PARTS) == (message, {})
    for buffer in (bytearray(message.SerializeToString()), memoryview(message.SerializeToString())):
        got, views = grpc_wire.parse_views(pb.ScoreRequest, buffer, MEDIA_PARTS)
        assert got == pb.ScoreRequest(clip=pb.MediaFile()) and bytes(views["clip"]) == b"abc"
        assert views["clip"].readonly
    with pytest.raises(InvalidRequest, match="expected a serialized"):
        grpc_wire.parse_views(pb.ScoreRequest, "text", MEDIA_PARTS)
    with pytest.raises(TypeError, match="singular"):
        grpc_wire.parse_views(pb.ScoreResponse, b"", ["timeline"])  # repeated, and no `data`


def test_a_message_of_many_fields_is_left_to_protobufs_parse(monkeypatch):
    """The walk is Python: a message of millions of empty fields (50 MiB, before the key is checked) held a
    replica's event loop for a minute. Past MAX_WALKED_FIELDS the walk stops and protobuf parses it in C."""
    walked = []
    real = grpc_wire._fields

    def counted(*args):
        for field in real(*args):
            walked.append(field)
            yield field

    monkeypatch.setattr(grpc_wire, "_fields", counted)
    many = _len_field(1, b"") * 100_000 + _len_field(2, _len_field(1, b"sound"))  # empty clips, then audio
    message, views = grpc_wire.parse_views(pb.ScoreRequest, many, MEDIA_PARTS)
    assert len(walked) <= grpc_wire.MAX_WALKED_FIELDS  # then protobuf's parse, which keeps the data
    assert views == {} and message.audio.data == b"sound" and message.HasField("clip")
    _same(many)
    usual = pb.ScoreRequest(audio=pb.MediaFile(data=b"x", filename="a.wav"), model_versions={"avpenet": "1"})
    assert (
        bytes(grpc_wire.parse_views(pb.ScoreRequest, usual.SerializeToString(), MEDIA_PARTS)[1]["audio"])
        == b"x"
    )


def test_a_buffer_that_is_not_contiguous_is_parsed_too():
    raw = pb.ScoreRequest(clip=pb.MediaFile(data=b"abc")).SerializeToString()
    spread = memoryview(bytes(b for c in raw for b in (c, 0)))[::2]  # every other byte: raw, not contiguous
    message, views = grpc_wire.parse_views(pb.ScoreRequest, spread, MEDIA_PARTS)
    assert message.clip.data == b"abc" and views == {}
