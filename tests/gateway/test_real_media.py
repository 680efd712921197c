"""Real faces and real human vocalisations through the real gateway (Ray Serve + Triton over loopback).

The clips are built from installed packages by ``avpenet.realmedia`` (photos shipped in scikit-image and
matplotlib, voice recordings in Debian's OpenArena data; docs/DATA.md) in a few seconds, once per session.
Scores are those of the committed reference model, whose training data is synthetic: the distress-above-calm
check is the weakest useful claim (same face, same voice actor, only the sound differs), and
docs/EVALUATION.md reports the margins it passes by.
"""

from __future__ import annotations

import csv
import io

import pytest
import soundfile
from support.gateway import API_KEY

from avpenet import contract, realmedia
from avpenet.features import audio
from preprocess_service import masking
from preprocess_service.client import score_grpc, score_http
from preprocess_service.protocol import MediaPart, ScoreRequest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_clips(tmp_path_factory):
    if not realmedia.available():
        pytest.fail(realmedia._missing())  # make test installs the packages: missing is a setup error
    out = tmp_path_factory.mktemp("realmedia")
    rows = realmedia.build(out)
    return [{**r, "data": (out / r["clip"]).read_bytes()} for r in rows]


@pytest.fixture(scope="module")
def scored(gateway_stack, real_clips):
    """Every clip scored over HTTP as an adult's clip: {clip name: (row, response)}."""
    out = {}
    for row in real_clips:
        request = ScoreRequest(clip=MediaPart(filename=row["clip"], data=row["data"]), age_group="adult")
        out[row["clip"]] = (row, score_http(gateway_stack.http_url, request, api_key=API_KEY))
    return out


def test_every_real_clip_scores_and_says_what_it_used(scored):
    reasons = {"audio": masking.SILENT, "visual": masking.NO_FACE}
    for name, (row, reply) in scored.items():
        assert 0.0 <= reply.score <= 10.0 and reply.timeline, name
        expected = {row["masked"]: reasons[row["masked"]]} if row["masked"] else {}
        assert reply.masked == expected, name
        assert reply.modalities == [m for m in ("audio", "visual") if m not in expected], name
        if row["masked"] == "audio":  # the silent track is masked: the face alone decides
            assert all(w.modality_weights.audio == pytest.approx(0.0, abs=1e-6) for w in reply.timeline)


def test_grpc_carries_the_masking_reason(gateway_stack, real_clips):
    row = next(r for r in real_clips if r["masked"] == "visual")
    request = ScoreRequest(clip=MediaPart(filename=row["clip"], data=row["data"]), age_group="adult")
    reply = score_grpc(gateway_stack.grpc_target, request, api_key=API_KEY)
    assert reply.masked == {"visual": masking.NO_FACE} and reply.modalities == ["audio"]


def _pairs(scores: dict[str, tuple[dict, float]]) -> dict[tuple[str, str], dict[str, float]]:
    """{(face, voice): {"distress": score, "calm": score}} over the clips that differ only in their sound."""
    pairs: dict[tuple[str, str], dict[str, float]] = {}
    for row, score in scores.values():
        if row["face"] and row["voice"] and row["kind"] in ("distress", "calm"):
            pairs.setdefault((row["face"], row["voice"]), {})[row["kind"]] = score
    assert len(pairs) == len(realmedia.VOICES)
    return pairs


def _wav(mp4: bytes) -> bytes:
    """The clip's sound track as a 16 kHz WAV (decoded by the gateway's own audio reader)."""
    buf = io.BytesIO()
    soundfile.write(buf, audio.load_audio(mp4), contract.SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_distress_scores_above_calm_of_the_same_voice_and_face(gateway_stack, real_clips, scored):
    """Per pair, the sound alone orders distress above calm (margins 0.5-2.2 points, docs/EVALUATION.md);
    with the face fused in, distress stays above calm on average over the pairs (the smallest fused margin is
    0.33 points, 0.21 with fusion 20, 0.06 with fusion 18, 0.12 with fusion 16 and 0.01 with an earlier model:
    a retrain can shrink it, so it is not asserted per pair)."""
    by_audio = {}
    for row in real_clips:
        if row["face"] and row["voice"] and row["kind"] in ("distress", "calm"):
            sound = MediaPart(filename="a.wav", data=_wav(row["data"]))
            request = ScoreRequest(audio=sound, age_group="adult")
            by_audio[row["clip"]] = (row, score_http(gateway_stack.http_url, request, api_key=API_KEY).score)
    for key, s in _pairs(by_audio).items():
        assert s["distress"] > s["calm"], f"{key} audio only: distress {s['distress']:.2f} <= {s['calm']:.2f}"
    fused = _pairs({name: (row, reply.score) for name, (row, reply) in scored.items()})
    mean = {kind: sum(s[kind] for s in fused.values()) / len(fused) for kind in ("distress", "calm")}
    assert mean["distress"] > mean["calm"], fused


def test_clips_csv_lists_every_clip(tmp_path):
    rows = realmedia.build(tmp_path, seconds=1.0)
    with open(tmp_path / "clips.csv", newline="") as fh:
        listed = [r["clip"] for r in csv.DictReader(fh)]
    assert listed == [r["clip"] for r in rows] and all((tmp_path / c).stat().st_size > 1000 for c in listed)
