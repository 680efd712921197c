"""End to end: real Ray Serve (serve_config.yaml) + real Triton over loopback, HTTP and gRPC.

One stack for the whole session (`gateway_stack` in tests/conftest.py, ~30 s to start); each test sends a
few small in-memory clips. The big hostile-input corpus and fault tests live in tests/reliability/.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
from support.gateway import API_KEY, audio_and_landmarks, av_request, mp4_bytes, post_score

from avpenet import contract
from ensemble.client import infer_inputs
from preprocess_service import telemetry
from preprocess_service.client import ScoreError, score_grpc, score_http
from preprocess_service.protocol import MediaPart, ScoreRequest

pytestmark = pytest.mark.integration


def direct_triton(triton_url: str, wav: bytes, npz: bytes, age_group: str) -> dict[str, np.ndarray]:
    """The ensemble's window outputs for the same media, computed without the gateway."""
    import tritonclient.grpc as grpcclient

    from avpenet.features import audio, windows
    from avpenet.features.track import FaceTrack

    track = FaceTrack.load_npz(npz)
    inputs = windows.model_inputs(audio.load_audio(wav), track, age_group, served=True)
    client = grpcclient.InferenceServerClient(triton_url)
    result = client.infer(contract.ENSEMBLE.name, infer_inputs(grpcclient, contract.ENSEMBLE, inputs))
    client.close()
    return {spec.name: result.as_numpy(spec.name) for spec in contract.ENSEMBLE.outputs}


class TestScoring:
    def test_http_grpc_and_direct_triton_agree(self, gateway_stack):
        request = av_request()
        http = score_http(gateway_stack.http_url, request, api_key=API_KEY)
        rpc = score_grpc(gateway_stack.grpc_target, request, api_key=API_KEY)
        wav, npz = audio_and_landmarks()
        direct = direct_triton(gateway_stack.triton.grpc_url, wav, npz, "neonate")

        n = audio_windows = len(direct[contract.SCORE.name])
        assert audio_windows == 3  # 5 s → windows at 0, 1, 2 s
        assert len(http.timeline) == len(rpc.timeline) == n
        np.testing.assert_allclose(
            [w.score for w in http.timeline], direct[contract.SCORE.name][:, 0], atol=1e-5
        )
        np.testing.assert_allclose(
            [w.score for w in rpc.timeline], [w.score for w in http.timeline], atol=1e-5
        )
        assert http.score == pytest.approx(float(direct[contract.SCORE.name].mean()), abs=1e-5)
        # Within float32 rounding, not bit for bit: Triton may batch either call with another request (the
        # watchdog's probe), and a kernel's rounding can depend on the batch size on some CPUs; 1e-5 is about
        # 10 float32 steps at these scores (8.3-8.5, 1 step = 9.5e-7), as against Triton directly above.
        assert rpc.score == pytest.approx(http.score, abs=1e-5)
        interval = (rpc.interval_90.low, rpc.interval_90.high)
        assert interval == pytest.approx((http.interval_90.low, http.interval_90.high), abs=1e-5)
        assert rpc.class_probs == pytest.approx(http.class_probs, abs=1e-5)
        assert http.level == contract.level_of(http.score) and http.modalities == ["audio", "visual"]
        assert http.interval_90.low <= http.score <= http.interval_90.high
        assert http.model_versions[contract.ENSEMBLE.name] == "1"
        assert set(http.timings_ms) == {"decode", "features", "triton", "total"}
        assert http.request_id == request.request_id  # the caller's X-Request-ID is echoed

    def test_a_request_without_an_age_is_served_as_the_reference_scores_it(self, gateway_stack):
        """No age group (the API default): the served fusion reads it from the clip, as the PyTorch reference
        that docs/EVALUATION.md measures does, not with the third embedding it had before."""
        from avpenet.features import audio, windows
        from avpenet.features.track import FaceTrack
        from avpenet.model import load_model
        from avpenet.predict import predict_windows

        request = av_request(age_group="unknown")
        served = score_http(gateway_stack.http_url, request, api_key=API_KEY)
        wav, npz = audio_and_landmarks()
        inputs = windows.model_inputs(audio.load_audio(wav), FaceTrack.load_npz(npz), "unknown")
        reference = load_model().model
        assert float(reference.fusion.infers_age) == 1.0
        predicted = predict_windows(reference, inputs)
        expected = predicted[contract.SCORE.name][:, 0]
        np.testing.assert_allclose([w.score for w in served.timeline], expected, atol=1e-4)
        read = float(predicted[contract.ADULT_PROBABILITY.name].mean())  # every window has a modality
        assert served.age_read is not None  # the answer says which age group the score was made with
        assert served.age_read.adult_probability == pytest.approx(read, abs=1e-4)
        assert served.age_read.group == ("adult" if read >= 0.5 else "neonate")
        named = score_http(gateway_stack.http_url, av_request(age_group="adult"), api_key=API_KEY)
        assert named.age_read is None  # an age group sent is the one used, and the clip agrees with it
        assert read > 1 - contract.AGE_CONTRADICTED_BELOW  # the example is surely an adult's
        mistyped = score_http(gateway_stack.http_url, av_request(age_group="neonate"), api_key=API_KEY)
        assert mistyped.age_read is not None and mistyped.age_read.contradicts_age_group
        assert mistyped.age_read.group == "adult"  # the answer questions the age group it was told
        reference.fusion.infers_age.fill_(0.0)  # what it was scored with before: the untrained embedding
        before = predict_windows(reference, inputs)[contract.SCORE.name][:, 0]
        assert np.abs(before - expected).max() > 0.01  # so the match above says which path was served

    def test_mp4_clip_with_sound_is_scored(self, gateway_stack):
        request = ScoreRequest(clip=MediaPart(data=mp4_bytes(4.0), filename="bed7.mp4"), age_group="adult")
        result = score_http(gateway_stack.http_url, request, api_key=API_KEY)
        from avpenet.features.audio import window_count

        assert result.duration_s == pytest.approx(4.0, abs=0.15)  # AAC may pad a few ms
        assert len(result.timeline) == window_count(round(result.duration_s * contract.SAMPLE_RATE))
        assert result.modalities == ["audio"]  # noise frames: no face, scored with the visual side masked
        assert result.modality_weights.audio > result.modality_weights.visual


class TestErrors:
    @pytest.mark.parametrize(
        ("case", "status"),
        [
            ("random_bytes_audio", 415),
            ("truncated_landmarks", 422),
            ("no_media_parts", 422),
            ("unknown_age_group", 422),
            ("not_multipart", 415),
            ("too_large", 413),
        ],
    )
    def test_http_status_per_error_class(self, gateway_stack, case, status):
        wav, npz = audio_and_landmarks()
        files, data, extra = None, {"age_group": "adult"}, {}
        if case == "random_bytes_audio":
            files = {"audio": ("x.wav", np.random.default_rng(0).bytes(4000))}
        elif case == "truncated_landmarks":
            files = {"landmarks": ("f.npz", npz[: len(npz) // 2])}
        elif case == "no_media_parts":
            files, data = {"age_group": (None, "adult")}, None
        elif case == "unknown_age_group":
            files, data = {"audio": ("a.wav", wav)}, {"age_group": "toddler"}
        elif case == "not_multipart":
            extra = {"json": {"audio": "AAAA"}}
            data = None
        elif case == "too_large":
            files = {"audio": ("big.wav", b"RIFF" + bytes(5 * 1024 * 1024))}  # limit in the fixture: 4 MiB
        reply = post_score(gateway_stack, files=files, data=data, **extra)
        assert reply.status_code == status, reply.text
        body = reply.json()
        assert body["detail"] and body["request_id"] == reply.headers["x-request-id"]  # Ray Serve's id
        assert "RIFF" not in reply.text  # no media bytes echoed

    def test_nothing_to_score_is_422_with_reason(self, gateway_stack):
        from support import testmedia

        silent_video = testmedia.video_bytes(testmedia.noise_frames(20), 10)  # no audio track, no face
        reply = post_score(gateway_stack, files={"video": ("v.mp4", silent_video)})
        assert reply.status_code == 422 and reply.json()["error"] == "NothingToScore"

    def test_a_clip_as_long_as_the_limit_is_scored_and_a_longer_one_refused(self, gateway_stack):
        """An MP4 of exactly `max_duration_s` (20 s in this stack): its AAC track decodes about 0.1 s longer
        (the encoder pads its last frame), which was refused 413 "audio lasts 20 s; the limit is 20 s" only
        after the whole clip had been decoded and tracked. A clip 1 s longer is still refused, up front."""
        exact = post_score(
            gateway_stack, files={"clip": ("c.mp4", mp4_bytes(20.0))}, data={"age_group": "adult"}
        )
        assert exact.status_code == 200, exact.text
        assert len(exact.json()["timeline"]) == 18  # the windows a 20-s clip is cut into: 1 + (20 - 3) / 1
        longer = post_score(
            gateway_stack, files={"clip": ("c.mp4", mp4_bytes(21.0))}, data={"age_group": "adult"}
        )
        assert longer.status_code == 413 and "the limit is 20 s" in longer.json()["detail"], longer.text

    def test_grpc_codes_match_http(self, gateway_stack):
        bad = ScoreRequest(audio=MediaPart(data=b"not audio at all" * 10), age_group="adult")
        with pytest.raises(ScoreError) as info:
            score_grpc(gateway_stack.grpc_target, bad, api_key=API_KEY)
        assert info.value.status == "INVALID_ARGUMENT" and "unsupported" in info.value.detail.lower()
        huge = ScoreRequest(audio=MediaPart(data=b"RIFF" + bytes(5 * 1024 * 1024)), age_group="adult")
        with pytest.raises(ScoreError) as info:
            score_grpc(gateway_stack.grpc_target, huge, api_key=API_KEY)
        assert info.value.status == "RESOURCE_EXHAUSTED"


class TestAuth:
    @pytest.mark.parametrize("key", [None, "wrong-key"])
    def test_http_rejects_missing_or_wrong_key(self, gateway_stack, key):
        wav, _ = audio_and_landmarks()
        reply = post_score(gateway_stack, files={"audio": ("a.wav", wav)}, key=key)
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
        models = requests.get(
            f"{gateway_stack.http_url}/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {}
        )
        assert models.status_code == 401

    @pytest.mark.parametrize("key", [None, "wrong-key"])
    def test_grpc_rejects_missing_or_wrong_key(self, gateway_stack, key):
        with pytest.raises(ScoreError) as info:
            score_grpc(gateway_stack.grpc_target, av_request(), api_key=key)
        assert info.value.status == "UNAUTHENTICATED"

    def test_probes_and_metrics_need_no_key(self, gateway_stack):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert requests.get(gateway_stack.http_url + path, timeout=10).status_code == 200, path


class TestOperations:
    def test_models_ready_and_docs(self, gateway_stack):
        url = gateway_stack.http_url
        models = requests.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        ).json()
        names = {(m["name"], m["state"]) for m in models["models"]}
        assert (
            models["ensemble"] == "avpenet" and ("avpenet", "READY") in names and ("fusion", "READY") in names
        )
        assert requests.get(f"{url}/readyz", timeout=10).json()["status"] == "ready"
        assert requests.get(f"{url}/docs", timeout=10).status_code == 200
        spec = requests.get(f"{url}/openapi.json", timeout=10).json()
        assert "multipart/form-data" in spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]

    def test_grpc_health_and_reflection(self, gateway_stack):
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        with grpc.insecure_channel(gateway_stack.grpc_target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service="avpenet.v1.Scoring"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = {s.name for a in answers for s in a.list_services_response.service}
        assert "avpenet.v1.Scoring" in services

    def test_metrics_after_traffic(self, gateway_stack):
        score_http(gateway_stack.http_url, av_request(), api_key=API_KEY)
        score_grpc(gateway_stack.grpc_target, av_request(), api_key=API_KEY)
        text = requests.get(f"{gateway_stack.http_url}/metrics", timeout=10).text
        for name in telemetry.METRIC_NAMES:
            assert f"# TYPE {name}" in text, name
        # The gateway's /metrics is per replica; one replica here sees both protocols.
        assert 'avpenet_gateway_requests_total{protocol="http",route="/v1/score",status="200"}' in text
        assert 'avpenet_gateway_requests_total{protocol="grpc",route="Score",status="OK"}' in text
        light = 'avpenet_gateway_stage_seconds_count{kind="light",protocol="grpc",stage="triton"} '
        (count,) = [float(line.removeprefix(light)) for line in text.splitlines() if line.startswith(light)]
        assert count >= 1  # the 5-s audio + landmarks request, filed under its kind
        assert 'avpenet_gateway_score_count{model_version="1"}' in text
