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

_MEDIA = {"type": "string", "format": "binary"}
SCORE_OPENAPI: dict[str, Any] = {
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
                            "example": "avpenet=1,fusion=1",
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
            "send it at most once: twice is 400",
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
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 404, 406, 413, 415, 422, 429, 503, 504)
}
SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ScoreResponse,
        "content": {
            fhir.MEDIA_TYPE: {"schema": {"type": "object", "description": "FHIR R4 Observation or Bundle"}},
            hl7v2.MEDIA_TYPE: {"schema": {"type": "string", "description": "HL7 v2.6 ORU^R01 (ER7)"}},
        },
    },
    400: {"model": ErrorResponse},  # x-request-timeout-seconds sent more than once
    **ERRORS,
}


def document() -> dict[str, Any]:
    """The OpenAPI document the gateway serves at /openapi.json (docs/openapi.json is this, committed)."""
    from preprocess_service.deployments import api

    return api.openapi()


if __name__ == "__main__":  # python -m preprocess_service.openapi > docs/openapi.json
    import json

    print(json.dumps(document(), indent=2, sort_keys=True))
