"""The request path opens a clip's container once: its sound and its picture come from one demux pass."""

from __future__ import annotations

from support.gateway import mp4_bytes
from support.opens import count_opens

from avpenet import contract
from preprocess_service.extract import extract
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.settings import Limits


def test_a_clip_upload_is_opened_and_its_sample_tables_walked_once(monkeypatch):
    data = mp4_bytes(3.0)  # H.264 + AAC, both tracks
    counts = count_opens(monkeypatch)
    extracted = extract(ScoreRequest(clip=MediaPart(data=data, filename="bed.mp4")), Limits())
    assert counts == {"av.open": 1, "sample tables": 1}
    assert extracted.n_windows == 1 and "audio" in extracted.modalities
    assert extracted.inputs[contract.AUDIO_PRESENT.name].all()
