"""The public HTTP API's description: its routes and what the generated OpenAPI document says about them.

Kept apart from the handlers so that clients (the load tests, the CLI) can name a route without importing
FastAPI or Ray, and so the document a hospital integrator reads is in one place.
"""

from __future__ import annotations

from typing import Any

from avpenet import contract
from preprocess_service import fhir, hl7v2
from preprocess_service.protocol import ErrorResponse, ScoreResponse

SCORE_ROUTE = "/v1/score"
MODELS_ROUTE = "/v1/models"

API_INFO: dict[str, str] = {
    "title": "AVPENet Serve",
    "version": "1",
    "description": (
        "Pain (0-10) of non-verbal patients from 3 s windows of non-speech sound and face. Scores are model "
        "estimates for clinical decision support, not diagnoses. Send `Authorization: Bearer <key>`."
    ),
}

BEARER = "bearerAuth"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key of the deployment (AVPENET_API_KEYS / AVPENET_API_KEYS_FILE): "
        "`Authorization: Bearer <key>`; missing or not accepted is 401 (no keys configured: not checked)",
    }
}
SECURED: list[dict[str, list[str]]] = [{BEARER: []}]  # the routes that read the key: score and models
REQUEST_ID: dict[str, Any] = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "description": "the request's id, echoed in the answer, the audit line and (scoring) the Observation "
    "identifier and MSH-10; one that does not match is replaced by a fresh id: send the same valid id "
    "with every retry",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds before a retry"}}
_MEDIA = {"type": "string", "format": "binary"}
SCORE_OPENAPI: dict[str, Any] = {
    "security": SECURED,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "clip": {**_MEDIA, "description": "MP4/MOV/WebM/MKV video with its audio track"},
                        "audio": {
                            **_MEDIA,
                            "description": "WAV/FLAC/OGG/AIFF/CAF/W64/MP3/AAC/AMR "
                            "(with video/landmarks or alone)",
                        },
                        "video": {**_MEDIA, "description": "video without usable sound"},
                        "landmarks": {**_MEDIA, "description": "face-track .npz (privacy mode)"},
                        "age_group": {"type": "string", "enum": list(contract.AGE_GROUPS)},
                        "subject_ref": {
                            "type": "string",
                            "example": "Patient/123",
                            "description": "FHIR reference Type/id; echoed into FHIR/HL7 only, never logged",
                        },
                        "encounter_ref": {"type": "string", "example": "Encounter/456"},
                        "recorded_at": {
                            "type": "string",
                            "format": "date-time",
                            "example": "2026-05-01T10:15:00Z",
                            "description": "when the clip was recorded (ISO 8601 with a zone, not in the "
                            "future): the FHIR effective time. Absent: the scoring time, labelled",
                        },
                        "model_versions": {
                            "type": "string",
                            "example": "avpenet=1",
                            "description": "version pins (ensemble or parts); 404 if not served",
                        },
                        "deliver": {
                            "type": "string",
                            "enum": ["hl7v2"],
                            "description": "also send the ORU^R01 to the interface engine (MLLP); needs "
                            "subject_ref (PID-3), else 422",
                        },
                    },
                }
            }
        },
    },
    "parameters": [
        REQUEST_ID,
        {
            "name": "Accept",
            "in": "header",
            "required": False,
            "schema": {
                "type": "string",
                "enum": ["application/json", "application/fhir+json", "x-application/hl7-v2+er7"],
            },
            "description": "answer format; anything else is 406, as is FHIR with a fhirVersion "
            "other than 4.0",
        },
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 255},
            "description": "a retry with the same key and request gets the first answer",
        },
        {
            "name": "x-request-timeout-seconds",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "example": "30"},
            "description": "seconds Ray Serve's proxy and the gateway give this request (0: no limit); "
            "at least 1 (less is 400 TimeoutTooShort: the gateway keeps min(3 s, a quarter of it) to answer "
            "before the proxy cuts the request, and the rest would be too little to score); "
            "send it at most once: twice is 400 DuplicateHeader",
        },
        {
            "name": "fhir",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["observation", "bundle"]},
            "description": "with FHIR: a transaction Bundle (Observation, Device, Provenance); any other "
            "value is 422 whatever the Accept",
        },
    ],
}
MODELS_OPENAPI: dict[str, Any] = {"security": SECURED, "parameters": [REQUEST_ID]}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string", "example": "Bearer"}}},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, **({"headers": _ERROR_HEADERS[code]} if code in _ERROR_HEADERS else {})}
    for code in (401, 404, 406, 413, 415, 422, 429, 503, 504)
}
PROXY_408_EXAMPLE = "Request 6c8f0a1e-6a2b-4f57-9f3c-1d2e3f4a5b6c timed out after 3.0s."
SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ScoreResponse,
        "content": {
            fhir.MEDIA_TYPE: {"schema": {"type": "object", "description": "FHIR R4 Observation or Bundle"}},
            hl7v2.MEDIA_TYPE: {"schema": {"type": "string", "description": "HL7 v2.6 ORU^R01 (ER7)"}},
        },
        "headers": {
            "X-HL7-Delivery": {
                "schema": {"type": "string", "example": "AA after 1 attempt(s)"},
                "description": "with deliver=hl7v2: the MLLP delivery's outcome, one ASCII line, e.g. "
                "`AR after 1 attempt(s): <reason>`; the UTF-8 bytes of every character beyond printable "
                "ASCII, and of `%` and `+`, are percent-encoded (RFC 3986): `Pr%C3%BCfung` is `Prüfung`. "
                "The JSON body does not carry it",
            },
            "Idempotent-Replayed": {
                "schema": {"type": "string", "enum": ["true"]},
                "description": "the first answer stored under this Idempotency-Key: not scored again",
            },
        },
    },
    400: {"model": ErrorResponse},  # x-request-timeout-seconds sent more than once, or below 1 s
    408: {
        "model": ErrorResponse,
        "description": "the gateway's JSON (SlowUpload): the upload arrived slower than the minimum rate; or "
        "Ray Serve's proxy, in text/plain and not JSON, when the request outlasted its request_timeout_s "
        "(or x-request-timeout-seconds) before the gateway answered: `Request <id> timed out after <n>s.`",
        "content": {"text/plain": {"schema": {"type": "string", "example": PROXY_408_EXAMPLE}}},
    },
    **ERRORS,
}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """What FastAPI's generator does not write from the routes: the Bearer scheme the routes' `security`
    names (deployments.py calls it on the document it serves, so docs/openapi.json has it too)."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    return document


def document() -> dict[str, Any]:
    """The OpenAPI document the gateway serves at /openapi.json (docs/openapi.json is this, committed)."""
    from preprocess_service.deployments import api

    return api.openapi()


if __name__ == "__main__":  # python -m preprocess_service.openapi > docs/openapi.json
    import json

    print(json.dumps(document(), indent=2, sort_keys=True))
