"""The SDK's `POST /v1/score` body, streamed: an upload may be hundreds of MB (a 600-s video under a raised
`max_upload_bytes`) and a client on a small VM should hold it once. requests' `files=` renders the whole
multipart body into one more copy first; requests-toolbelt's MultipartEncoder is read by requests in blocks,
with a Content-Length, straight from the parts' bytes (a bytes part is wrapped without a copy; a file object
with `getvalue`, such as io.BytesIO, would be copied). Measured in docs/INTEGRATION.md.

A 307/308 asks for the same POST, body and all, elsewhere. requests drops the API key when the redirect
leaves the host, but would still send the patient's recording there, in clear text after https -> http: the
body follows only where requests keeps the key (`redirect_refusal`), else the SDK refuses with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

from requests_toolbelt import MultipartEncoder

from preprocess_service.protocol import ScoreRequest
from preprocess_service.sdk_errors import ScoreError

DEFAULT_PORTS = {"http": 80, "https": 443}


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


def redirect_refusal(source: str, target: str) -> str:
    """Why an upload to `source` may not be resent to `target` ("" when it may): only the same scheme, host
    and port, or an ingress's upgrade from http to https on the same host (ports 80 -> 443, where requests
    keeps the API key; elsewhere the gateway would refuse the resend unauthenticated after reading it)."""
    old, new = urlsplit(source), urlsplit(target)
    try:
        old_port = old.port or DEFAULT_PORTS.get(old.scheme)
        new_port = new.port or DEFAULT_PORTS.get(new.scheme)
    except ValueError:
        return "its port is not a number"
    if new.scheme not in DEFAULT_PORTS:
        return f"{new.scheme or 'no'} scheme, not http or https"
    if old.hostname != new.hostname:
        return f"another host ({new.hostname}, not {old.hostname})"
    if (old.scheme, new.scheme) == ("https", "http"):
        return "it leaves TLS (https -> http): the recording would go in clear text"
    if (old.scheme, new.scheme) == ("http", "https") and (old_port, new_port) != (80, 443):
        return (
            f"http port {old_port} to https port {new_port}: only http 80 to https 443 keeps the API key "
            "(requests drops it elsewhere)"
        )
    if old.scheme == new.scheme and old_port != new_port:
        return f"another port ({new_port}, not {old_port})"
    return ""


def resend_on_redirect(request: ScoreRequest, body: MultipartEncoder) -> Callable[..., None]:
    """requests' response hook for an upload of `request` as `body`: requests resends a 307/308's body as it
    is, and this one is spent, so the hook builds it again, where `redirect_refusal` allows; elsewhere it
    raises ScoreError REDIRECT_REFUSED before anything is sent to the target."""

    def rewind(reply, **_) -> None:
        location = reply.headers.get("location")
        if reply.status_code not in (307, 308) or not location:
            return
        target = urljoin(reply.url, location)
        if why := redirect_refusal(reply.url, target):
            detail = f"HTTP {reply.status_code} to {target} not followed, the upload not sent there: {why}"
            raise ScoreError("REDIRECT_REFUSED", f"{detail}; send it to the gateway's own URL")
        reply.request.body = multipart_form(request, body.boundary_value)

    return rewind
