"""The gateway holds each upload once: a media part is a read-only view into the request body (it was
copied twice, into a bytearray as parsed and then into bytes), and that view decodes, hashes and crosses to
the FeatureExtractor (pickled) like bytes. Peaks are Python allocations (tracemalloc), deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import pickle
import tracemalloc
from types import SimpleNamespace

import numpy as np
from google.protobuf.message import Message
from support.gateway import face_track, mp4_bytes, wav_bytes

from avpenet.features import audio
from avpenet.features.track import FaceTrack
from avpenet.v1 import scoring_pb2
from preprocess_service.errors import InvalidRequest
from preprocess_service.grpc_methods import GrpcMethods
from preprocess_service.http_routes import read_body
from preprocess_service.multipart import _Part, parse_score_form
from preprocess_service.protocol import MediaPart
from preprocess_service.settings import Limits

SIZE = 16 << 20
BOUNDARY = b"upload-copies"
CTYPE = "multipart/form-data; boundary=upload-copies"


def _form(**parts: bytes) -> bytes:
    body = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="f"\r\n\r\n%s\r\n'
        % (BOUNDARY, name.encode(), data)
        for name, data in parts.items()
    )
    age = b'--%s\r\nContent-Disposition: form-data; name="age_group"\r\n\r\nadult\r\n' % BOUNDARY
    return body + age + b"--%s--\r\n" % BOUNDARY


class _Request:
    """A Starlette-like request whose body arrives in 64 KiB chunks, as the proxy hands it on."""

    headers: dict[str, str] = {}

    async def stream(self):
        chunk = bytes(64 << 10)
        for _ in range(SIZE // len(chunk)):
            yield chunk


def test_the_body_is_returned_as_read_not_copied_into_bytes():
    async def read() -> tuple[bytearray, int]:  # measured inside the loop: asyncio.run's teardown is not ours
        tracemalloc.start()
        try:
            body = await read_body(_Request(), Limits(max_upload_bytes=2 * SIZE))
            return body, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    body, peak = asyncio.run(read())
    assert len(body) == SIZE and not any(body[:: 1 << 16])
    assert peak < 1.4 * SIZE, f"peak {peak / SIZE:.2f}x the body"  # was 2.11x: bytes(body) at the end


def test_a_media_part_is_a_view_of_the_body_not_a_copy():
    body = _form(clip=b"\x00\x00\x00\x18ftypisom" + bytes(SIZE))
    tracemalloc.start()
    try:
        request = parse_score_form(body, CTYPE, "r")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    data = request.clip.data
    assert isinstance(data, memoryview) and data.obj is body and data.readonly
    assert data == b"\x00\x00\x00\x18ftypisom" + bytes(SIZE) and request.age_group == "adult"
    assert peak < 0.05 * SIZE, f"peak {peak / SIZE:.2f}x the part"  # was 2.0x


def test_parts_parsed_as_views_decode_and_hash_as_their_bytes():
    wav, npz = wav_bytes(3.0), face_track(3.0).to_npz_bytes()
    request = parse_score_form(bytearray(_form(audio=wav, landmarks=npz)), CTYPE, "r")
    assert isinstance(request.audio.data, memoryview)
    assert request.audio.sha256 == hashlib.sha256(wav).hexdigest()
    assert np.array_equal(audio.load_audio(request.audio.data), audio.load_audio(wav))
    track = FaceTrack.load_npz(request.landmarks.data)
    assert np.array_equal(track.landmarks, FaceTrack.load_npz(npz).landmarks)
    assert request.to_proto().audio.data == wav  # protobuf takes bytes, not the view


def test_a_view_pickles_as_its_bytes_out_of_band_where_the_protocol_allows():
    """Ray pickles a video request to the FeatureExtractor (protocol 5, out-of-band buffers)."""
    clip = mp4_bytes(2.0)
    body = b"head" + clip + b"tail"
    part = MediaPart(data=memoryview(body).toreadonly()[4:-4], filename="c.mp4", content_type="video/mp4")
    for protocol in (2, 4, 5):
        again = pickle.loads(pickle.dumps(part, protocol=protocol))
        assert type(again.data) is bytes and again == part and again.filename == "c.mp4"
    buffers: list[pickle.PickleBuffer] = []
    wire = pickle.dumps(part, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(wire) < 1000  # the bytes travel beside the pickle, not inside it
    again = pickle.loads(wire, buffers=buffers)
    assert isinstance(again.data, memoryview) and again.data == clip and again.content_type == "video/mp4"
    plain = MediaPart(data=clip)
    assert pickle.loads(pickle.dumps(plain, protocol=5)).data == clip


def test_bytes_that_do_not_lie_in_the_body_in_one_run_are_gathered():
    """python-multipart's look-behind (across writes) hands a part's bytes from its own buffer."""
    body = b"0123456789abcdef"
    part = _Part()
    part.add(body, body, 2, 5)
    part.add(body, body, 5, 8)
    assert part.spill is None and part.data(memoryview(body)) == b"234567"
    part.add(body, b"\r\n--", 0, 2)
    part.add(body, body, 8, 10)
    assert part.data(memoryview(body)) == b"234567\r\n89"


class _Scoring:
    """What Score asks of its ScoringService; `answer` notes what Score's frame holds while it scores."""

    def __init__(self) -> None:
        self.settings = SimpleNamespace(budget=lambda: None)
        self.clinical = SimpleNamespace(answer=self.answer)
        self.record = self.refused = self.authenticate = lambda *args: None
        self.held: list[str] = []

    @contextlib.contextmanager
    def admit(self):
        yield None

    async def answer(self, fn, parsed, **kwargs):
        caller = inspect.currentframe().f_back  # Score, waiting for this answer
        assert caller.f_code.co_name == "Score" and parsed.audio.data == b"RIFF" + bytes(1000)
        self.held = [name for name, value in caller.f_locals.items() if isinstance(value, Message)]
        self.parsed = parsed
        raise InvalidRequest("stop here: only what Score holds while scoring is looked at")


class _Context:
    def invocation_metadata(self):
        return [("authorization", "Bearer k")]

    def set_code(self, code) -> None:
        self.code = code.name

    def set_details(self, details: str) -> None:
        pass

    def set_trailing_metadata(self, trailing) -> None:
        pass


def test_a_grpc_score_lets_the_parsed_message_go_before_scoring():
    """Score kept the parsed message, protobuf's own copy of every part (upb copies on parse), while the
    request was scored beside the ScoreRequest's copy: a gRPC upload was held once more than it needs."""
    message = scoring_pb2.ScoreRequest(
        age_group="adult", audio=scoring_pb2.MediaFile(data=b"RIFF" + bytes(1000))
    )
    methods, context = GrpcMethods(), _Context()
    methods.service = _Scoring()
    asyncio.run(methods.Score(message.SerializeToString(), context))
    assert context.code == "INVALID_ARGUMENT"  # it got as far as scoring
    assert methods.service.held == [], f"Score held {methods.service.held} while scoring"


def test_a_grpc_scores_parts_are_views_into_the_message_the_proxy_forwarded():
    """Protobuf's parse copied each part out of the message and `ScoreRequest.from_proto` copied it again:
    3x the upload at its peak. The parts are now read where they lie, as HTTP's are."""
    wav = b"RIFF" + bytes(1000)
    raw = scoring_pb2.ScoreRequest(
        age_group="adult", audio=scoring_pb2.MediaFile(data=wav, filename="a.wav")
    ).SerializeToString()
    methods, context = GrpcMethods(), _Context()
    methods.service = _Scoring()
    asyncio.run(methods.Score(raw, context))
    part = methods.service.parsed.audio
    assert isinstance(part.data, memoryview) and part.data.obj is raw and part.data.readonly
    assert (part.data, part.filename, part.sha256) == (wav, "a.wav", hashlib.sha256(wav).hexdigest())
