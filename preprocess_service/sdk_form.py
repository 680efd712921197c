"""The SDK's `POST /v1/score` body, streamed: an upload may be hundreds of MB (a 600-s video under a raised
`max_upload_bytes`) and a client on a small VM should hold it once. requests' `files=` renders the whole
multipart body into one more copy first; requests-toolbelt's MultipartEncoder is read by requests in blocks,
with a Content-Length, straight from the parts' bytes (a bytes part is wrapped without a copy; a file object
with `getvalue`, such as io.BytesIO, would be copied). Measured in docs/INTEGRATION.md.
"""

from __future__ import annotations

from typing import Any

from requests_toolbelt import MultipartEncoder

from preprocess_service.protocol import ScoreRequest


def multipart_form(request: ScoreRequest, boundary: str | None = None) -> MultipartEncoder:
    """`request` as the gateway's form: its text fields, then each media part as a file. The encoder is read
    once, so each send builds its own: a resend after a 307/308 passes the first one's `boundary`, keeping
    the Content-Type and Content-Length requests already set."""
    fields: dict[str, Any] = {"age_group": request.age_group}
    for name in ("subject_ref", "encounter_ref", "recorded_at"):
        if value := getattr(request, name):
            fields[name] = value
    if request.model_versions:
        fields["model_versions"] = ",".join(f"{k}={v}" for k, v in request.model_versions.items())
    if request.deliver_hl7:
        fields["deliver"] = "hl7v2"
    for name, part in request.parts().items():
        fields[name] = (part.filename or name, part.data, part.content_type or None)
    return MultipartEncoder(fields, boundary)
