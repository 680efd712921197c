"""The gateway's request and response types: JSON/proto round trips, the clip aggregate, validation.

No Ray and no Triton here: fast checks of what the end-to-end tests (test_gateway.py) rely on.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.responses import make_response, window_outputs

from avpenet import contract
from preprocess_service.errors import (
    InvalidRequest,
    status_of,
)
from preprocess_service.extract import Extracted
from preprocess_service.protocol import MediaPart, ScoreRequest, ScoreResponse, new_request_id
from preprocess_service.responses import build_response
from preprocess_service.triton_client import InferOutput


class TestScoreResponse:
    def test_json_proto_round_trip_is_exact(self):
        resp, _ = make_response(5)
        back = ScoreResponse.from_proto(resp.to_proto())
        assert back == resp
        assert back.to_json() == resp.to_json()

    def test_a_request_without_an_age_group_is_told_the_age_read_from_its_clip(self):
        resp, out = make_response(5, age_group="unknown")
        p = out[contract.ADULT_PROBABILITY.name].reshape(-1)
        assert resp.age_read is not None
        assert resp.age_read.adult_probability == pytest.approx(float(p.mean()), abs=1e-4)
        assert resp.age_read.group == ("adult" if p.mean() >= 0.5 else "neonate")
        assert ScoreResponse.from_proto(resp.to_proto()) == resp  # gRPC carries it too
        assert make_response(5)[0].age_read is None  # an age group was sent, and the clip may be of it

        def answered(outputs: dict) -> ScoreResponse:
            request = ScoreRequest(audio=MediaPart(data=b"x"))
            extracted = Extracted(inputs={}, duration_s=7.0, modalities=["audio", "visual"])
            return build_response(request, extracted, InferOutput(outputs, "1"), {}, {}, "avpenet")

        older = {k: v for k, v in out.items() if k != contract.ADULT_PROBABILITY.name}  # fusion before 16
        unread = {**out, contract.ADULT_PROBABILITY.name: np.full_like(p[:, None], contract.NOT_READ)}
        assert answered(older).age_read is None and answered(unread).age_read is None
        faceless = {**out, contract.MODALITY_WEIGHTS.name: out[contract.MODALITY_WEIGHTS.name].copy()}
        faceless[contract.MODALITY_WEIGHTS.name][0] = 0  # a window with neither modality is not read
        assert answered(faceless).age_read.adult_probability == pytest.approx(float(p[1:].mean()), abs=1e-4)
        empty = {**out, contract.MODALITY_WEIGHTS.name: np.zeros_like(out[contract.MODALITY_WEIGHTS.name])}
        assert answered(empty).age_read is None  # silence and no face: nothing was read

    @pytest.mark.parametrize(
        ("named", "p", "reported"),
        [
            ("neonate", 0.96, True),  # P(neonate) 0.04: surely not a newborn
            ("neonate", 0.94, False),  # P(neonate) 0.06: not sure enough to question the request
            ("adult", 0.04, True),
            ("adult", 0.06, False),
            ("adult", 0.97, False),  # it agrees
        ],
    )
    def test_a_named_age_group_the_clip_surely_contradicts_is_questioned(self, named, p, reported):
        """A mistyped age group conditions the estimate (and, for neonates, its NIPS scale): the answer says
        so when the clip reads as the other group with P(the named one) below AGE_CONTRADICTED_BELOW."""
        out = window_outputs(4)
        out[contract.ADULT_PROBABILITY.name][:] = p
        request = ScoreRequest(audio=MediaPart(data=b"x"), age_group=named)
        extracted = Extracted(inputs={}, duration_s=6.0, modalities=["audio", "visual"])
        resp = build_response(request, extracted, InferOutput(out, "1"), {}, {}, "avpenet")
        if not reported:
            assert resp.age_read is None
            return
        other = "adult" if named == "neonate" else "neonate"
        assert resp.age_read.group == other and resp.age_read.contradicts_age_group
        assert resp.age_read.adult_probability == pytest.approx(p, abs=1e-4)
        assert ScoreResponse.from_proto(resp.to_proto()) == resp  # gRPC carries the flag too
        unknown = build_response(
            ScoreRequest(audio=MediaPart(data=b"x")), extracted, InferOutput(out, "1"), {}, {}, "avpenet"
        )
        assert not unknown.age_read.contradicts_age_group  # nothing was named to contradict

    def test_the_flag_agrees_with_the_probability_shown(self):
        """An integrator who checks P(the named group) < 0.05 on the value shown gets the gateway's answer."""
        from preprocess_service.protocol import AgeRead

        for p in (0.95004, 0.95, 0.94996):
            read = AgeRead.of(p, "neonate")
            assert read.adult_probability == 0.95 and not read.contradicts_age_group
        assert AgeRead.of(0.95006, "neonate").contradicts_age_group  # shown 0.9501: P(neonate) 0.0499

    @pytest.mark.parametrize(
        ("p", "group", "shown"), [(0.499996, "adult", 0.5), (0.49994, "neonate", 0.4999)]
    )
    def test_the_group_read_agrees_with_the_probability_shown(self, p, group, shown):
        from preprocess_service.protocol import AgeRead

        assert AgeRead.of(p) == AgeRead(group=group, adult_probability=shown)

    def test_clip_aggregate_is_the_shared_aggregation(self):
        from avpenet.aggregate import aggregate_windows

        resp, out = make_response(6)
        names = (contract.SCORE, contract.LOG_VARIANCE, contract.CLASS_PROBS, contract.MODALITY_WEIGHTS)
        expected = aggregate_windows(*(out[t.name] for t in names))
        assert resp.score == pytest.approx(expected[contract.SCORE.name], abs=1e-9)
        assert [resp.interval_90.low, resp.interval_90.high] == pytest.approx(
            list(expected[contract.INTERVAL.name]), abs=1e-4
        )
        assert resp.level == contract.level_of(resp.score)
        assert len(resp.timeline) == 6
        assert [w.start_s for w in resp.timeline] == [i * contract.HOP_SECONDS for i in range(6)]
        assert resp.timeline[2].score == pytest.approx(float(out[contract.SCORE.name][2, 0]))
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
            {"audio": MediaPart(data=b"a"), "subject_ref": "Encounter/9"},  # would become PID-3, a patient id
            {"audio": MediaPart(data=b"a"), "subject_ref": "Group/ward-7"},
            {"audio": MediaPart(data=b"a"), "subject_ref": "Patient/1", "encounter_ref": "Patient/1"},
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
