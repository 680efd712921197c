"""What tests send to the session gateway (`gateway_stack` in tests/conftest.py): its API key, uploads
built in memory with `support.testmedia` (a WAV tone, a face-track .npz shaped like tracker output, an MP4
with sound) and the POST that carries them."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import requests

from avpenet import contract

if TYPE_CHECKING:
    from preprocess_service.protocol import ScoreRequest

API_KEY = "test-key-" + "x" * 24
# more keys of the session stack: enough to hold every stream one replica may hold at 4 per key (conftest)
STREAM_KEYS = tuple(f"stream-key-{i:02d}-" + "y" * 20 for i in range(20))


def face_track(seconds: float, seed: int = 0):
    """A FaceTrack of `seconds` at FPS: a canonical face, slightly moving, face found in every frame."""
    from importlib.resources import files

    from avpenet.features.track import FaceTrack

    rng = np.random.default_rng(seed)
    canon = np.load(files("avpenet.features") / "canonical_face.npy").astype(np.float32)[:, :2]  # x, y
    t = int(round(seconds * contract.FPS))
    xy = 0.5 + 0.15 * (canon - canon.mean(0)) / np.abs(canon).max()
    landmarks = np.zeros((t, contract.N_LANDMARKS, 3), np.float32)
    landmarks[:, :, :2] = xy[None] + rng.normal(0, 0.002, (t, contract.N_LANDMARKS, 2))
    blend = np.clip(rng.normal(0.1, 0.05, (t, contract.N_BLENDSHAPES)), 0, 1).astype(np.float32)
    pose = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
    return FaceTrack(
        landmarks=landmarks,
        blendshapes=blend,
        face_present=np.ones(t, np.bool_),
        head_pose=pose,
        image_size=np.array([640, 480], np.int32),
    )


def wav_bytes(seconds: float, freq: float = 440.0) -> bytes:
    from support import testmedia

    return testmedia.audio_bytes(
        testmedia.tone(seconds, contract.SAMPLE_RATE, freq=freq), contract.SAMPLE_RATE
    )


def mp4_bytes(seconds: float) -> bytes:
    """A small MP4 (H.264 + AAC) of a moving noise picture with a tone: decodes, has audio, no face."""
    from support import testmedia

    fps = contract.FPS
    frames = testmedia.noise_frames(int(seconds * fps), size=(160, 120))
    audio = testmedia.tone(seconds, contract.SAMPLE_RATE, freq=300.0)
    return testmedia.video_bytes(frames, fps, audio=audio)


@functools.cache
def audio_and_landmarks() -> tuple[bytes, bytes]:
    """A 5 s cry-like tone and a matching face-track .npz: the light request most gateway tests send."""
    return wav_bytes(5.0, freq=500.0), face_track(5.0, seed=1).to_npz_bytes()


def av_request(**fields) -> ScoreRequest:
    """`audio_and_landmarks` as a neonate's ScoreRequest (for the Python clients); `fields` may override."""
    from preprocess_service.protocol import MediaPart, ScoreRequest

    wav, npz = audio_and_landmarks()
    return ScoreRequest(
        audio=MediaPart(data=wav, filename="cry.wav"),
        landmarks=MediaPart(data=npz, filename="face.npz"),
        **{"age_group": "neonate", **fields},
    )


def post_score(
    stack, files=None, data=None, headers=None, key: str | None = API_KEY, **kw
) -> requests.Response:
    """POST a multipart upload to the stack's /v1/score with `key` as the bearer token (none when None)."""
    hdrs = {"Authorization": f"Bearer {key}"} if key else {}
    hdrs.update(headers or {})
    return requests.post(f"{stack.http_url}/v1/score", files=files, data=data, headers=hdrs, timeout=60, **kw)


def readiness(stack) -> tuple[int, int]:
    """(/readyz's HTTP status, gRPC health's status enum) of a gateway: what a load balancer and a gRPC
    client each see."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    http = requests.get(f"{stack.http_url}/readyz", timeout=10).status_code
    with grpc.insecure_channel(stack.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return http, reply.status


def audio_score(stack, wav: bytes, filename: str = "tone.wav") -> float:
    """An adult's score for one audio upload; anything but a 200 fails the test."""
    reply = post_score(stack, files={"audio": (filename, wav)}, data={"age_group": "adult"})
    assert reply.status_code == 200, reply.text[:300]
    return float(reply.json()["score"])


class MllpEngine:
    """A real MLLP listener on loopback standing in for the interface engine: parses every message with
    hl7apy and ACKs it (AA), except for patients whose id starts with `nack` (AR: rejected) and, for those
    whose id starts with `down`, the first two tries of each message (the connection closed unanswered: an
    engine that is down for one delivery with the gateway's one retry)."""

    def __init__(self) -> None:
        import socketserver
        import threading

        engine = self
        self.received: list[str] = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                from preprocess_service import hl7v2, mllp

                data = b""
                while not data.endswith(mllp.END):
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                text = data[1 : -len(mllp.END)].decode()
                engine.received.append(text)
                message = hl7v2.parse(text)
                pid = message.oru_r01_patient_result.oru_r01_patient.pid.pid_3.value
                if pid.startswith("down") and engine.received.count(text) <= 2:
                    return  # closed without an ACK
                code = "AR" if pid.startswith("nack") else "AA"
                self.request.sendall(mllp.frame(hl7v2.ack(message.msh.msh_10.value, code, "test reject")))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def extractor_replica(**limits):
    """The FeatureExtractor deployment's class without Serve and without its constructor (no tracing, no
    warm-up landmarker): the limits and the decoding slots its constructor would set."""
    import asyncio

    from preprocess_service import deployments
    from preprocess_service.settings import Limits

    cls = deployments.FeatureExtractor.func_or_class
    replica = cls.__new__(cls)
    replica.limits = Limits(**limits)
    replica.slots = asyncio.Semaphore(replica.limits.features_threads)
    return replica


async def budget_refusal(service, request: ScoreRequest, budget, guard_s: float) -> BaseException:
    """The BudgetSpent that `service.score` raises for `request` within `budget` (a refusal not given within
    `guard_s` fails the test instead of hanging it); the service is closed after."""
    import asyncio

    import pytest

    from preprocess_service.errors import BudgetSpent

    try:
        with pytest.raises(BudgetSpent) as caught:
            await asyncio.wait_for(service.score(request, protocol="http", budget=budget), guard_s)
    finally:
        await service.close()
    return caught.value
