"""Input errors an integrator can act on, each tied to the HTTP status and gRPC code the gateway answers with.

Decoders and feature code raise these; the gateway maps them without guessing. Messages must never contain
media bytes or patient identifiers: say what was wrong and what to send instead.
"""

from __future__ import annotations


class InputError(ValueError):
    """A request the service cannot score as sent (HTTP 4xx)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"  # name of a grpc.StatusCode member


class TooLarge(InputError):
    """Upload, duration, resolution or frame count beyond the configured limits (413)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMedia(InputError):
    """A container or codec the service does not decode (415)."""

    http_status = 415
    grpc_code = "INVALID_ARGUMENT"


class UndecodableMedia(InputError):
    """A supported type whose content cannot be decoded: truncated, corrupt, NaN landmarks (422)."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class NothingToScore(InputError):
    """Decodable input with neither usable audio nor a usable face (422)."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class FaceModelError(RuntimeError):
    """The face model file is missing, not the one pinned by its digest, or one MediaPipe cannot open: the
    operator's to fix, never the request's (not an InputError). The CLI prints it as one line (user_errors);
    the gateway's replicas fail to start on it (deployments.warm_up)."""
