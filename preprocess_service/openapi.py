"""The public HTTP API's description: its routes and what the generated OpenAPI document says about them.

Kept apart from the handlers so that clients (the load tests, the CLI) can name a route without importing
FastAPI or Ray, and so the document a hospital integrator reads is in one place.
"""

from __future__ import annotations

from typing import Any

from preprocess_service import fhir
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
                            "description": "WAV/FLAC/OGG/MP3 (with video/landmarks or alone)",
                        },
                        "video": {**_MEDIA, "description": "video without usable sound"},
                        "landmarks": {**_MEDIA, "description": "face-track .npz (privacy mode)"},
                        "age_group": {"type": "string", "enum": ["neonate", "adult", "unknown"]},
                        "subject_ref": {"type": "string", "example": "Patient/123"},
                        "encounter_ref": {"type": "string", "example": "Encounter/456"},
                    },
                }
            }
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 413, 415, 422, 429, 503, 504)
}
SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ScoreResponse, "content": {fhir.MEDIA_TYPE: {}}},
    **ERRORS,
}
