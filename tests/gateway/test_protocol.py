"""Unit tests of the gateway's protocol types, multipart parsing, FHIR, auth, settings and Triton retries.

No Ray and no Triton here: fast checks of everything the end-to-end tests (test_gateway.py) rely on.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from urllib3 import encode_multipart_formdata

from avpenet import contract
from avpenet.errors import TooLarge, UnsupportedMedia
from preprocess_service import fhir
from preprocess_service.auth import ApiKeys, bearer_token
from preprocess_service.errors import (
    InvalidRequest,
    Overloaded,
    TritonTimeout,
    TritonUnavailable,
    Unauthenticated,
    status_of,
)
from preprocess_service.extract import Extracted
from preprocess_service.limits import InFlightLimiter
from preprocess_service.multipart import parse_score_form
from preprocess_service.protocol import MediaPart, ScoreRequest, ScoreResponse, new_request_id
from preprocess_service.service import build_response
from preprocess_service.settings import GatewaySettings, is_loopback
from preprocess_service.triton_client import InferOutput, TritonClient

HANG_GUARD_S = 120.0  # far beyond any deadline these tests configure; reaching it means a hang


def window_outputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ensemble outputs of n windows built the way the fusion builds them (interval from the calibrated
    log-variance)."""
    from avpenet.aggregate import Z_INTERVAL

    rng = np.random.default_rng(seed)
    score = rng.uniform(1, 9, (n, 1)).astype(np.float32)
    logvar = rng.uniform(-2, 0, (n, 1)).astype(np.float32)
    half = Z_INTERVAL * np.exp(logvar / 2)
    interval = np.clip(np.concatenate([score - half, score + half], 1), 0, 10).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    audio_w = rng.uniform(0.2, 0.8, (n, 1)).astype(np.float32)
    return {
        contract.SCORE.name: score,
        contract.CLASS_PROBS.name: probs,
        contract.LOG_VARIANCE.name: logvar,
        contract.INTERVAL.name: interval,
        contract.MODALITY_WEIGHTS.name: np.concatenate([audio_w, 1 - audio_w], 1),
    }


def make_response(n: int = 4, **request_fields) -> tuple[ScoreResponse, dict[str, np.ndarray]]:
    out = window_outputs(n)
    request = ScoreRequest(audio=MediaPart(data=b"x"), age_group="neonate", **request_fields)
    extracted = Extracted(inputs={}, duration_s=n + 2.0, modalities=["audio", "visual"])
    timings = {"decode": 1.0, "features": 2.0, "triton": 3.0, "total": 7.0}
    versions = {"avpenet": "1", "fusion": "2"}
    resp = build_response(request, extracted, InferOutput(out, "1"), versions, timings, "avpenet")
    return resp, out


class TestScoreResponse:
    def test_json_proto_round_trip_is_exact(self):
        resp, _ = make_response(5)
        back = ScoreResponse.from_proto(resp.to_proto())
        assert back == resp
        assert back.to_json() == resp.to_json()

    def test_clip_aggregate_is_the_shared_aggregation(self):
        from avpenet.aggregate import aggregate_windows

        resp, out = make_response(6)
        expected = aggregate_windows(
            out["score"], out["log_variance"], out["class_probs"], out["modality_weights"]
        )
        assert resp.score == pytest.approx(expected["score"], abs=1e-9)
        assert [resp.interval_90.low, resp.interval_90.high] == pytest.approx(
            list(expected["interval_90"]), abs=1e-4
        )
        assert resp.level == contract.level_of(resp.score)
        assert len(resp.timeline) == 6
        assert [w.start_s for w in resp.timeline] == [i * contract.HOP_SECONDS for i in range(6)]
        assert resp.timeline[2].score == pytest.approx(float(out["score"][2, 0]))
        assert sum(resp.class_probs.values()) == pytest.approx(1.0, abs=1e-5)

    def test_clip_interval_comes_from_the_calibrated_spread_even_when_windows_are_clipped(self):
        out = window_outputs(3)
        out[contract.LOG_VARIANCE.name][:] = np.log(0.09)  # sigma 0.3: half width 0.49
        out[contract.INTERVAL.name][:] = [0.0, 10.0]  # what the windows report is not re-read
        request = ScoreRequest(audio=MediaPart(data=b"x"))
        extracted = Extracted(inputs={}, duration_s=5.0, modalities=["audio"])
        resp = build_response(request, extracted, InferOutput(out, "1"), {}, {}, "avpenet")
        assert resp.interval_90.high - resp.interval_90.low == pytest.approx(2 * 1.6448536 * 0.3, abs=1e-4)


class TestScoreRequest:
    def test_proto_round_trip(self):
        req = ScoreRequest(
            audio=MediaPart(data=b"RIFF", filename="a.wav"),
            landmarks=MediaPart(data=b"PK", filename="f.npz"),
            age_group="adult",
            subject_ref="Patient/1",
        )
        back = ScoreRequest.from_proto(req.to_proto())
        assert back == req

    @pytest.mark.parametrize(
        "fields",
        [
            {},
            {"clip": MediaPart(data=b"a"), "audio": MediaPart(data=b"b")},
            {"video": MediaPart(data=b"a"), "landmarks": MediaPart(data=b"b")},
            {"audio": MediaPart(data=b"")},
            {"audio": MediaPart(data=b"a"), "age_group": "toddler"},
            {"audio": MediaPart(data=b"a"), "subject_ref": "John Smith"},
        ],
    )
    def test_bad_combinations_are_422(self, fields):
        with pytest.raises(InvalidRequest) as info:
            ScoreRequest(**fields).validate_combination()
        assert status_of(info.value) == (422, "INVALID_ARGUMENT")

    def test_request_ids_are_safe_to_echo(self):
        assert new_request_id("abc-123") == "abc-123"
        assert new_request_id("bad id\n") != "bad id\n"
        assert len(new_request_id(None)) == 32


class TestMultipart:
    def test_parses_media_and_fields_in_memory(self):
        body, ctype = encode_multipart_formdata(
            {"audio": ("a.wav", b"RIFF....WAVE"), "age_group": "neonate", "encounter_ref": "Encounter/9"}
        )
        req = parse_score_form(body, ctype, "rid1")
        assert req.audio.data == b"RIFF....WAVE" and req.audio.filename == "a.wav"
        assert (req.age_group, req.encounter_ref, req.request_id) == ("neonate", "Encounter/9", "rid1")

    def test_wrong_content_type_is_415(self):
        with pytest.raises(UnsupportedMedia):
            parse_score_form(b"{}", "application/json", "r")

    @pytest.mark.parametrize(
        "fields",
        [{"surprise": ("x.bin", b"1")}, {"age_group": b"\xff\xfe"}],
    )
    def test_unknown_or_non_utf8_fields_are_422(self, fields):
        body, ctype = encode_multipart_formdata(fields)
        with pytest.raises(InvalidRequest):
            parse_score_form(body, ctype, "r")


class TestFhir:
    def test_observation_validates_and_says_model_estimate(self):
        from fhir.resources.R4B.observation import Observation

        resp, _ = make_response(3)
        text = fhir.render(resp, fhir.Context(subject_ref="Patient/p1", encounter_ref="Encounter/e1"))
        again = Observation.model_validate_json(text)  # re-parse what we send
        assert again.code.coding[0].system == fhir.DEFAULT_CONFIG.code_system  # a local code, not LOINC
        assert float(again.valueQuantity.value) == pytest.approx(round(resp.score, 2))
        assert again.interpretation[0].coding[1].code == f"level-{resp.level}"
        assert "model" in again.method.text.lower() and again.device.reference.startswith("#avpenet-")
        assert again.subject.reference == "Patient/p1" and again.encounter.reference == "Encounter/e1"
        assert again.status == "preliminary"


class TestAuth:
    def test_constant_time_check_accepts_only_known_keys(self):
        keys = ApiKeys(["alpha", "beta"])
        assert keys.check("alpha") and keys.check("beta")
        assert not keys.check("alph") and not keys.check("") and not keys.check(None)
        with pytest.raises(Unauthenticated):
            keys.require(None)
        with pytest.raises(Unauthenticated):
            keys.require("gamma")
        assert status_of(Unauthenticated("x")) == (401, "UNAUTHENTICATED")

    def test_key_file_revocation_without_restart(self, tmp_path, monkeypatch):
        import preprocess_service.auth as auth

        monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
        path = tmp_path / "keys"
        path.write_text("# ward 3\nk1\nk2  # nurse station\n")
        keys = ApiKeys(key_file=path)
        assert keys.check("k1") and keys.check("k2")
        path.write_text("k2\n")
        import os

        os.utime(path, (1, 1))  # a different mtime even within the filesystem's resolution
        assert not keys.check("k1") and keys.check("k2")

    def test_bearer_parsing(self):
        assert bearer_token("Bearer abc") == "abc"
        assert bearer_token("bearer  abc ") == "abc"
        assert bearer_token("Basic abc") is None and bearer_token(None) is None


class TestSettings:
    def test_env_overrides_config_args(self):
        s = GatewaySettings.load(
            {"triton_url": "a:1", "limits": {"max_in_flight": 3}},
            {"AVPENET_TRITON_URL": "b:2", "AVPENET_MAX_UPLOAD_BYTES": "10", "AVPENET_API_KEYS": "k1, k2"},
        )
        assert s.triton_url == "b:2" and s.limits.max_upload_bytes == 10 and s.limits.max_in_flight == 3
        assert s.api_keys == ("k1", "k2")

    def test_unknown_keys_fail(self):
        with pytest.raises(ValueError):
            GatewaySettings.load({"tritonurl": "x"}, {})

    def test_keys_required_when_exposed(self):
        from preprocess_service.service import ScoringService

        assert not GatewaySettings.load({"grpc_enabled": False}, {}).auth_required
        assert GatewaySettings.load({"grpc_enabled": False, "bind_host": "0.0.0.0"}, {}).auth_required
        assert GatewaySettings.load({}, {}).auth_required  # Ray's gRPC proxy binds all interfaces
        with pytest.raises(ValueError, match="API keys are required"):
            ScoringService(GatewaySettings.load({"bind_host": "10.0.0.5"}, {}))
        assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
        assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.org")


class TestLimits:
    def test_in_flight_limit_refuses_fast(self):
        limiter = InFlightLimiter(2, retry_after_s=3)
        with limiter.admit(), limiter.admit():
            with pytest.raises(Overloaded) as info, limiter.admit():
                pass
            assert info.value.retry_after_s == 3 and status_of(info.value) == (429, "RESOURCE_EXHAUSTED")
        assert limiter.in_flight == 0
        assert status_of(TooLarge("x")) == (413, "RESOURCE_EXHAUSTED")


class TestTritonClient:
    def _unavailable(self):
        from tritonclient.utils import InferenceServerException

        return InferenceServerException("down", status="StatusCode.UNAVAILABLE")

    def test_retries_unavailable_with_backoff_then_succeeds(self):
        client = TritonClient("127.0.0.1:1", retries=3, backoff_s=0.01, timeout_s=5)
        calls = []

        async def flaky(remaining):
            calls.append(remaining)
            if len(calls) < 3:
                raise self._unavailable()
            return "ok"

        assert asyncio.run(client._call(flaky)) == "ok"
        assert len(calls) == 3 and calls[0] > calls[2]  # the deadline shrinks across attempts

    def test_gives_up_with_503_after_retries(self):
        client = TritonClient("127.0.0.1:1", retries=2, backoff_s=0.01, timeout_s=5)
        calls = []

        async def down(remaining):
            calls.append(1)
            raise self._unavailable()

        with pytest.raises(TritonUnavailable) as info:
            asyncio.run(client._call(down))
        assert len(calls) == 3 and status_of(info.value)[0] == 503 and info.value.retry_after_s >= 1

    def test_unreachable_server_fails_not_hangs(self, refused_port):
        async def go():
            client = TritonClient(f"127.0.0.1:{refused_port}", retries=2, backoff_s=0.05, timeout_s=3)
            try:
                await client.infer(
                    {s.name: np.zeros((1, *s.shape), s.numpy_dtype) for s in contract.ENSEMBLE.inputs}
                )
            finally:
                await client.close()

        # A hang guard, not a speed check: the deadline's arithmetic is tested above without a clock.
        with pytest.raises((TritonUnavailable, TritonTimeout)):
            asyncio.run(asyncio.wait_for(go(), HANG_GUARD_S))
