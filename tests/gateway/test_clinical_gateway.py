"""Clinical integration against the real stack (Ray Serve + Triton on loopback): FHIR R4 and HL7 v2 over HTTP
and gRPC, MLLP delivery to a real loopback listener, Idempotency-Key, version pins, bad input, the audit line,
the committed OpenAPI document and the SDK.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from pathlib import Path

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from support.gateway import API_KEY, face_track, wav_bytes

from preprocess_service import fhir, hl7v2
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.sdk import Client, ScoreError

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RECORDED = "2026-05-01T10:15:00Z"


@functools.cache
def media(seed: int = 3) -> tuple[bytes, bytes]:
    return wav_bytes(3.0, freq=400.0 + seed), face_track(3.0, seed=seed).to_npz_bytes()


def form(seed: int = 3, **fields: str) -> tuple[dict, dict]:
    wav, npz = media(seed)
    data = {"age_group": "neonate", "subject_ref": "Patient/p-17", "recorded_at": RECORDED, **fields}
    return {"audio": ("cry.wav", wav), "landmarks": ("face.npz", npz)}, data


def post(stack, seed: int = 3, headers: dict | None = None, params: dict | None = None, **fields):
    files, data = form(seed, **fields)
    hdrs = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": uuid.uuid4().hex, **(headers or {})}
    return requests.post(
        f"{stack.http_url}/v1/score", files=files, data=data, headers=hdrs, params=params, timeout=120
    )


def sdk_request(seed: int = 3, **fields) -> ScoreRequest:
    wav, npz = media(seed)
    return ScoreRequest(
        audio=MediaPart(data=wav, filename="cry.wav"),
        landmarks=MediaPart(data=npz, filename="face.npz"),
        age_group="neonate",
        **{"subject_ref": "Patient/p-17", "recorded_at": RECORDED, **fields},
    )


def clip_digest(seed: int = 3) -> str:
    h = hashlib.sha256()
    for name, data in zip(("audio", "landmarks"), media(seed), strict=True):
        h.update(f"{name}:{hashlib.sha256(data).hexdigest()}\n".encode())
    return h.hexdigest()


def served_versions(stack) -> dict[str, str]:
    rows = requests.get(
        f"{stack.http_url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ).json()["models"]
    return {r["name"]: r["version"] for r in rows if r["state"] == "READY"}


class TestFhir:
    def test_http_observation_carries_every_field(self, gateway_stack):
        rid = f"ehr_{uuid.uuid4().hex[:12]}"  # '_' is a valid request id and not a valid FHIR id (was a 500)
        headers = {"Accept": "application/fhir+json", "X-Request-ID": rid}
        reply = post(gateway_stack, headers=headers, encounter_ref="Encounter/e-3")
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == fhir.CONTENT_TYPE
        Observation.model_validate_json(reply.text)
        obs = reply.json()
        assert obs["status"] == "preliminary" and obs["meta"]["security"][0]["code"] == "AIAST"
        assert obs["code"]["coding"][0]["system"] == fhir.DEFAULT_CONFIG.code_system
        assert obs["effectiveDateTime"] == RECORDED and obs["subject"]["reference"] == "Patient/p-17"
        assert obs["identifier"][0]["value"] == rid and obs["id"] == fhir.resource_id(rid) != rid
        assert obs["derivedFrom"][0]["identifier"]["value"] == clip_digest()
        (device,) = obs["contained"]
        versions = {v["component"]["value"]: v["value"] for v in device["version"]}
        assert versions == served_versions(gateway_stack)  # the ensemble and all four parts
        assert any(c["code"]["coding"][0]["code"] == "nips-equivalent-estimate" for c in obs["component"])

    def test_grpc_bundle_with_provenance(self, gateway_stack):
        client = Client(gateway_stack.grpc_target, api_key=API_KEY, grpc=True)
        try:
            result = client.score(sdk_request(), fmt="fhir-bundle")
        finally:
            client.close()
        assert result.content_type == fhir.CONTENT_TYPE and result.score is not None
        Bundle.model_validate_json(result.document)
        types = [e["resource"]["resourceType"] for e in result.fhir()["entry"]]
        assert sorted(types) == ["Device", "Observation", "Provenance"]


class TestHl7:
    def test_http_er7_parses_and_validates(self, gateway_stack):
        reply = post(gateway_stack, headers={"Accept": hl7v2.MEDIA_TYPE})
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith(hl7v2.MEDIA_TYPE)
        message = hl7v2.parse(reply.text)
        assert message.msh.msh_9.value == "ORU^R01^ORU_R01"

    def test_delivery_is_acked_by_the_loopback_engine_and_a_reject_is_reported(
        self, gateway_stack, mllp_engine
    ):
        before = len(mllp_engine.received)
        reply = post(gateway_stack, deliver="hl7v2")
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-hl7-delivery"] == "AA after 1 attempt(s)"
        assert len(mllp_engine.received) == before + 1
        hl7v2.parse(mllp_engine.received[-1])  # what the engine got is a valid ORU^R01
        rejected = post(gateway_stack, deliver="hl7v2", subject_ref="Patient/nack-1")
        assert rejected.status_code == 200 and rejected.headers["x-hl7-delivery"].startswith("AR after 1 ")

    def test_a_failed_delivery_is_sent_again_by_a_retry_with_the_same_key(self, gateway_stack, mllp_engine):
        """The retry replayed the failure: the ORU^R01 never reached the chart under that key."""
        key, rid = uuid.uuid4().hex, uuid.uuid4().hex
        headers = {"Idempotency-Key": key}
        first = post(gateway_stack, headers=headers, deliver="hl7v2", subject_ref="Patient/down-1")
        assert first.status_code == 200 and first.headers["x-hl7-delivery"].startswith("UNREACHABLE after 2 ")
        again = post(gateway_stack, headers={**headers, "X-Request-ID": rid}, deliver="hl7v2",
                     subject_ref="Patient/down-1")  # fmt: skip
        assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
        assert again.headers["x-hl7-delivery"] == "AA after 1 attempt(s)" and again.json() == first.json()
        sent = [m for m in mllp_engine.received if f"|{first.json()['request_id']}|" in m]
        assert len(sent) == 3 and len(set(sent)) == 1  # the same message: 2 tries, then the retry's
        assert json.loads(_audit_lines(gateway_stack, [rid])[rid][0])["redelivered"] is True


class TestIdempotencyAndPins:
    def test_http_same_key_same_answer_no_second_observation(self, gateway_stack):
        key = uuid.uuid4().hex
        first = post(
            gateway_stack, seed=5, headers={"Idempotency-Key": key, "Accept": "application/fhir+json"}
        )
        again = post(
            gateway_stack, seed=5, headers={"Idempotency-Key": key, "Accept": "application/fhir+json"}
        )
        assert first.status_code == again.status_code == 200
        assert (
            again.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in first.headers
        )
        assert again.json() == first.json()  # the same Observation (id, identifier, values), not a new one
        other = post(gateway_stack, seed=6, headers={"Idempotency-Key": key})
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]

    def test_grpc_same_key_replays(self, gateway_stack):
        client = Client(gateway_stack.grpc_target, api_key=API_KEY, grpc=True)
        try:
            key = uuid.uuid4().hex
            first = client.score(sdk_request(seed=7), idempotency_key=key)
            again = client.score(sdk_request(seed=7), idempotency_key=key)
        finally:
            client.close()
        assert not first.replayed and again.replayed
        assert again.score.request_id == first.score.request_id and again.score.score == first.score.score

    def test_pins_are_honoured_and_unknown_versions_are_404(self, gateway_stack):
        served = served_versions(gateway_stack)
        ok = post(gateway_stack, model_versions=f"avpenet={served['avpenet']},fusion={served['fusion']}")
        assert ok.status_code == 200, ok.text
        assert ok.json()["model_versions"] == served
        missing = post(gateway_stack, model_versions="fusion=99")
        assert missing.status_code == 404 and "fusion version 99" in missing.json()["detail"]
        client = Client(gateway_stack.grpc_target, api_key=API_KEY, grpc=True)
        try:
            pinned = client.score(sdk_request(model_versions={"fusion": served["fusion"]}))
            assert pinned.score.model_versions == served
            with pytest.raises(ScoreError) as info:
                client.score(sdk_request(model_versions={"avpenet": "42"}))
        finally:
            client.close()
        assert info.value.status == "NOT_FOUND" and "avpenet version 42" in info.value.detail


class TestBadInput:
    @pytest.mark.parametrize(
        ("fields", "headers", "status", "named"),
        [
            ({"subject_ref": "John Smith 1970-01-01"}, {}, 422, "subject_ref"),
            ({"recorded_at": "yesterday"}, {}, 422, "recorded_at"),
            ({"recorded_at": "2099-01-01T00:00:00Z"}, {}, 422, "future"),
            ({"model_versions": "fusion"}, {}, 422, "model_versions"),
            ({}, {"Accept": "text/csv"}, 406, "text/csv"),
        ],
    )
    def test_http_names_the_field_and_reason(self, gateway_stack, fields, headers, status, named):
        reply = post(gateway_stack, headers=headers, **fields)
        assert reply.status_code == status, reply.text
        assert named in reply.json()["detail"]
        assert "John Smith" not in reply.text

    def test_grpc_bad_recording_time_is_invalid_argument(self, gateway_stack):
        client = Client(gateway_stack.grpc_target, api_key=API_KEY, grpc=True, retries=0)
        try:
            with pytest.raises(ScoreError) as info:
                client.score(sdk_request(recorded_at="2026-13-40"))
        finally:
            client.close()
        assert info.value.status == "INVALID_ARGUMENT" and "recorded_at" in info.value.detail


def test_one_audit_line_per_request_without_phi(gateway_stack):
    rid = uuid.uuid4().hex
    reply = post(gateway_stack, headers={"X-Request-ID": rid}, subject_ref="Patient/audit-canary-991")
    assert reply.status_code == 200
    bad = post(gateway_stack, headers={"X-Request-ID": rid + "b", "Accept": "image/png"})
    assert bad.status_code == 406
    models = requests.get(
        f"{gateway_stack.http_url}/v1/models",
        headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": rid + "m"},
        timeout=30,
    )
    assert models.status_code == 200
    lines = _audit_lines(gateway_stack, (rid, rid + "b", rid + "m"))
    assert [len(lines[r]) for r in (rid, rid + "b", rid + "m")] == [1, 1, 1]
    assert json.loads(lines[rid + "m"][0])["route"] == "/v1/models"
    ok, refused = json.loads(lines[rid][0]), json.loads(lines[rid + "b"][0])
    assert ok["outcome"] == "200" and refused["outcome"] == "406"
    assert ok["clip_sha256"] == clip_digest() and ok["model_versions"] == served_versions(gateway_stack)
    assert ok["api_key_id"].startswith("key-") and API_KEY not in lines[rid][0]
    assert ok["latency_ms"] > 0 and "audit-canary-991" not in lines[rid][0]


def test_a_request_is_logged_once_by_the_replica_and_once_by_the_proxy(gateway_stack):
    """The Gateway's audit line is its record of a request: Serve's access line in the replica (written
    twice, to its log file and its stderr) is off (serve_config.yaml); the proxy's, which also records what
    it refuses before a replica sees it, stays."""
    import time

    rid = uuid.uuid4().hex
    assert post(gateway_stack, headers={"X-Request-ID": rid}).status_code == 200
    assert len(_audit_lines(gateway_stack, [rid])[rid]) == 1
    deadline = time.monotonic() + 30.0  # Ray's log files are written asynchronously
    lines = _log_lines(gateway_stack, rid)
    while not any("proxy" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.5)
        lines = _log_lines(gateway_stack, rid)
    assert any("proxy" in line and "POST /v1/score 200" in line for line in lines), lines
    assert not [line for line in lines if "avpenet_Gateway" in line], lines


def _log_lines(stack, text: str) -> list[str]:
    """Every line of Ray's log files that holds `text`."""
    found = []
    for path in Path(stack.ray_node.temp_dir).rglob("*"):
        if path.is_file() and path.suffix in (".log", ".out", ".err"):
            found += [line for line in path.read_text(errors="replace").splitlines() if text in line]
    return found


def _audit_lines(stack, rids, timeout_s: float = 30.0) -> dict[str, list[str]]:
    """Audit lines by request id from every Ray log file (replica stderr lands there, asynchronously)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, list[str]] = {rid: [] for rid in rids}
        for line in _log_lines(stack, '"event": "avpenet.request"'):
            start = line.find("{")
            rid = json.loads(line[start:]).get("request_id")
            if rid in found:
                found[rid].append(line[start:])
        if all(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_committed_openapi_is_what_the_gateway_serves(gateway_stack):
    served = requests.get(f"{gateway_stack.http_url}/openapi.json", timeout=30).json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served == committed, "regenerate: python -m preprocess_service.openapi > docs/openapi.json"
    score = served["paths"]["/v1/score"]["post"]
    assert {"application/fhir+json", hl7v2.MEDIA_TYPE} <= set(score["responses"]["200"]["content"])
    assert {"404", "406", "422"} <= set(score["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in score["parameters"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_avpenet_score_prints_documents_through_the_sdk(gateway_stack, tmp_path, capsys, protocol):
    from cli.main import main

    wav, npz = media()
    (tmp_path / "cry.wav").write_bytes(wav)
    (tmp_path / "face.npz").write_bytes(npz)
    url = gateway_stack.http_url if protocol == "http" else gateway_stack.grpc_target
    argv = ["score", str(tmp_path / "cry.wav"), str(tmp_path / "face.npz"), "--together", "--url", url]
    pin = f"avpenet={served_versions(gateway_stack)['avpenet']}"
    argv += ["--api-key", API_KEY, "--age-group", "neonate", "--recorded-at", RECORDED, "--pin", pin]
    argv += ["--grpc"] if protocol == "grpc" else []
    assert main([*argv, "--format", "fhir-bundle"]) == 0
    Bundle.model_validate_json(capsys.readouterr().out)
    assert main([*argv, "--format", "hl7v2", "--subject", "Patient/p-9"]) == 0
    assert hl7v2.parse(capsys.readouterr().out).msh.msh_9.value == "ORU^R01^ORU_R01"
    assert main([*argv, "--pin", "fusion=77"]) == 1  # the last --pin wins: not served
    assert "fusion version 77" in capsys.readouterr().out
