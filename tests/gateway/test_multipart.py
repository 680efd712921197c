"""Multipart uploads parsed in memory: media and fields, wrong content type, unknown fields."""

from __future__ import annotations

import pytest
from urllib3 import encode_multipart_formdata

from avpenet.errors import UnsupportedMedia
from preprocess_service.errors import (
    InvalidRequest,
)
from preprocess_service.multipart import parse_score_form


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

    def test_parts_beyond_the_form_are_refused_while_the_body_is_read(self, monkeypatch):
        from preprocess_service import multipart

        part = b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n\r\n'
        seen = []  # how many parts the parser had begun when it refused
        real = multipart.MultipartParser

        def counting(boundary, callbacks):
            begin = callbacks["on_part_begin"]
            callbacks["on_part_begin"] = lambda: (seen.append(1), begin())
            return real(boundary, callbacks)

        monkeypatch.setattr(multipart, "MultipartParser", counting)
        with pytest.raises(InvalidRequest, match=f"more than {multipart.MAX_PARTS} parts"):
            parse_score_form(part * 100_000 + b"--b--\r\n", "multipart/form-data; boundary=b", "r")
        assert len(seen) == multipart.MAX_PARTS + 1  # not 100,000 parts collected before the first check
