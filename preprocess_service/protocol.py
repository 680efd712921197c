"""Request and response types of the scoring API, in one place, with their JSON and protobuf forms.

HTTP and gRPC build the same `ScoreRequest`, the service answers one `ScoreResponse`, and the edges convert
(`to_json` / `to_proto` / `from_proto`; FHIR in fhir.py), so both protocols carry identical numbers.

Why one module over 300 lines: the API's types are one file a client author reads whole, as KServe's
protocol types are; split, the request's and the answer's rules would be read apart.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import pickle
import re
import uuid
from typing import Any, Literal, SupportsIndex

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from avpenet import contract
from preprocess_service import pinning
from preprocess_service.errors import InvalidRequest

MEDIA_PARTS = ("clip", "audio", "video", "landmarks")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # not a FHIR id if '_' (fhir.resource_id)
REQUEST_ID_RULE = "request_id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
REF_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}/[A-Za-z0-9.-]{1,64}$")  # FHIR relative reference Type/id
AGGREGATION = (
    "mean of the overlapping 3 s windows (1 s hop) for score, class probabilities and modality weights; "
    "the 90% interval is rebuilt from the mean window variance with the model's calibrated scale "
    "(avpenet.aggregate.aggregate_windows)"
)


def utc_now() -> str:
    """Now as an ISO 8601 UTC time to the second (a FHIR instant)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_request_id(candidate: str | None = None) -> str:
    """The caller's id when it is safe to echo and log (short, plain characters), else a fresh uuid4 hex."""
    if candidate and REQUEST_ID_RE.fullmatch(candidate):  # fullmatch: `$` would let "id\n" through
        return candidate
    return uuid.uuid4().hex


class MediaPart(BaseModel):
    """One uploaded file, in memory only; the filename is a hint, never logged (it may name a patient).
    `data` may be a read-only view into the request body (multipart.py): each upload is held once."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    data: bytes | memoryview
    filename: str = ""
    content_type: str = ""

    @functools.cached_property
    def sha256(self) -> str:
        """The part's SHA-256 (hex), computed once: the log digest and the clip's identity both read it, so
        a 5 MB upload is hashed once per request, not three times."""
        return hashlib.sha256(self.data).hexdigest()

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> MediaPart:
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("sha256", None)  # a copy may carry other bytes: its digest is computed afresh
        return copy

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        """A view pickles (Ray hands a video to the FeatureExtractor) as the bytes it shows: out of band
        under protocol 5, so Ray's object store takes them without a pickled copy; inline before it."""
        if not isinstance(self.data, memoryview):
            return super().__reduce_ex__(protocol)
        data = pickle.PickleBuffer(self.data) if int(protocol) >= 5 else bytes(self.data)
        return _unpickled_part, (data, self.filename, self.content_type)


def _unpickled_part(data: Any, filename: str, content_type: str) -> MediaPart:
    """A MediaPart from `MediaPart.__reduce_ex__`; an out-of-band buffer (Ray's object store) stays a view."""
    view = data if isinstance(data, bytes) else memoryview(data).toreadonly().cast("B")
    return MediaPart(data=view, filename=filename, content_type=content_type)


class ScoreRequest(BaseModel):
    """What to score: `clip`, or `audio` and/or `video`, or `landmarks` (optionally with `audio`)."""

    model_config = ConfigDict(frozen=True)

    clip: MediaPart | None = None
    audio: MediaPart | None = None
    video: MediaPart | None = None
    landmarks: MediaPart | None = None
    age_group: str = "unknown"
    subject_ref: str | None = None
    encounter_ref: str | None = None
    recorded_at: str | None = None  # ISO 8601 with a zone: when the clip was recorded (FHIR effective time)
    model_versions: dict[str, str] = Field(default_factory=dict)  # pins: model name -> version
    deliver_hl7: bool = False  # also send the HL7 v2 message to the configured interface engine
    request_id: str = Field(default_factory=new_request_id)

    @field_validator("age_group", "subject_ref", "encounter_ref", "recorded_at", mode="before")
    @classmethod
    def _strip_text(cls, value: Any, info: ValidationInfo) -> Any:
        """One rule for both protocols: surrounding whitespace is ignored; blank means "not given"."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if value:
            return value
        return "unknown" if info.field_name == "age_group" else None

    def parts(self) -> dict[str, MediaPart]:
        return {name: part for name in MEDIA_PARTS if (part := getattr(self, name)) is not None}

    @property
    def upload_bytes(self) -> int:
        return sum(len(p.data) for p in self.parts().values())

    def validate_combination(self) -> None:
        """Raise InvalidRequest for part combinations and fields the service cannot act on."""
        parts = self.parts()
        if not parts:
            raise InvalidRequest("send a `clip`, or `audio` and/or `video`, or `landmarks` (.npz)")
        if self.clip is not None and len(parts) > 1:
            raise InvalidRequest("`clip` carries both modalities; send it alone")
        if self.video is not None and self.landmarks is not None:
            raise InvalidRequest("send either `video` or `landmarks`, not both")
        empty = [name for name, p in parts.items() if not p.data]
        if empty:
            raise InvalidRequest(f"part(s) {', '.join(empty)} are empty")
        if self.age_group not in contract.AGE_GROUPS:
            raise InvalidRequest(f"age_group must be one of {', '.join(contract.AGE_GROUPS)}")
        for name, kind in (("subject_ref", "Patient"), ("encounter_ref", "Encounter")):  # PID-3, PV1-19
            value = getattr(self, name)
            if value is not None and not (REF_RE.fullmatch(value) and value.startswith(f"{kind}/")):
                raise InvalidRequest(f"{name} must be a FHIR reference to a {kind}, like {kind}/123")
        if self.recorded_at is not None:
            from preprocess_service.fhir import parse_recorded_at

            try:
                parse_recorded_at(self.recorded_at)
            except ValueError as exc:
                raise InvalidRequest(f"recorded_at {exc}") from None
        pinning.validate(self.model_versions)

    @classmethod
    def from_proto(cls, msg: Any, request_id: str | None = None, views: Any = None) -> ScoreRequest:
        """From an `avpenet.v1.ScoreRequest`; unset media fields stay None. `views`: each part's data as a
        view into the raw message, `msg` parsed without it (grpc_wire.parse_views)."""
        parts, views = {}, views or {}
        for name in MEDIA_PARTS:
            if msg.HasField(name):
                f = getattr(msg, name)
                data = views.get(name, f.data)  # f.data is b"" where the view was taken out
                parts[name] = MediaPart(data=data, filename=f.filename, content_type=f.content_type)
        if msg.request_id and not REQUEST_ID_RE.fullmatch(msg.request_id):
            raise InvalidRequest(REQUEST_ID_RULE)
        return cls(
            **parts,
            age_group=msg.age_group or "unknown",
            subject_ref=msg.subject_ref or None,
            encounter_ref=msg.encounter_ref or None,
            recorded_at=msg.recorded_at or None,
            model_versions=pinning.normalise(msg.model_versions.items()),  # the rule HTTP's field follows
            deliver_hl7=msg.deliver_hl7,
            request_id=new_request_id(msg.request_id or request_id),
        )

    def to_proto(self) -> Any:
        from avpenet.v1 import scoring_pb2

        msg = scoring_pb2.ScoreRequest(
            age_group=self.age_group,
            subject_ref=self.subject_ref or "",
            encounter_ref=self.encounter_ref or "",
            request_id=self.request_id,
            recorded_at=self.recorded_at or "",
            model_versions=self.model_versions,
            deliver_hl7=self.deliver_hl7,
        )
        for name, p in self.parts().items():  # protobuf takes no view; bytes() of bytes is the same object
            getattr(msg, name).CopyFrom(
                scoring_pb2.MediaFile(data=bytes(p.data), filename=p.filename, content_type=p.content_type)
            )
        return msg


class Interval(BaseModel):
    low: float
    high: float


class ModalityWeights(BaseModel):
    """Share of the fused representation from each modality (sums to 1)."""

    audio: float
    visual: float


class AgeRead(BaseModel):
    """The age group the clip reads as, by the fusion's age head: for a request that named none, the group
    it was scored as (a clinician who knows the patient's age checks it; a misread one is why such scores
    are less exact); for one that named its group, reported only when the clip surely reads as the other
    (`contradicts_age_group`: a mistyped age, which conditions the estimate and its scale)."""

    group: Literal["neonate", "adult"]  # contract.LABELLED_AGE_GROUPS
    adult_probability: float  # P(adult), mean over the windows the clip score reads
    contradicts_age_group: bool = False  # the request named the other group (contract.AGE_CONTRADICTED_BELOW)

    @classmethod
    def of(cls, adult_probability: float, named: str = "unknown") -> AgeRead:
        """The group at 0.5 of the value shown (each window was scored with its own P(adult), between the
        two groups), so a shown 0.5000 never sits beside "neonate"; `named`: the request's age group."""
        neonate, adult = contract.LABELLED_AGE_GROUPS
        shown = round(float(adult_probability), contract.PROBABILITY_DECIMALS)
        return cls(
            group=adult if shown >= 0.5 else neonate,
            adult_probability=shown,
            contradicts_age_group=named != "unknown" and contradicted(adult_probability, named),
        )


def contradicted(adult_probability: float, named: str) -> bool:
    """Whether a clip read with this P(adult) surely is not of the `named` group (a request's age group):
    P(the named group) below `contract.AGE_CONTRADICTED_BELOW`."""
    shown = round(
        float(adult_probability), contract.PROBABILITY_DECIMALS
    )  # decided on the value the answer shows, as AgeRead.group is
    p_named = shown if named == contract.LABELLED_AGE_GROUPS[1] else 1.0 - shown
    return p_named < contract.AGE_CONTRADICTED_BELOW


class WindowScore(BaseModel):
    index: int
    start_s: float
    end_s: float
    score: float
    level: str
    class_probs: dict[str, float]
    interval_90: Interval
    modality_weights: ModalityWeights


class ScoreResponse(BaseModel):
    """The clip's pain estimate with its per-window timeline (HTTP JSON and gRPC carry the same fields)."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "example": {
                "request_id": "4f1c2a", "score": 4.2, "level": "moderate",
                "class_probs": {"low": 0.2, "moderate": 0.6, "high": 0.2},
                "interval_90": {"low": 2.9, "high": 5.5}, "modality_weights": {"audio": 0.55, "visual": 0.45},
                "timeline": [], "duration_s": 3.0, "modalities": ["audio", "visual"], "masked": {},
                "age_group": "neonate", "aggregation": AGGREGATION, "model_name": "avpenet",
                "model_versions": {"avpenet": "1"},
                "timings_ms": {"decode": 5.0, "features": 120.0, "triton": 15.0, "total": 141.0},
            }
        },
    )  # fmt: skip

    request_id: str
    score: float
    level: str
    class_probs: dict[str, float]
    interval_90: Interval
    modality_weights: ModalityWeights
    timeline: list[WindowScore]
    duration_s: float
    modalities: list[str]
    masked: dict[str, str] = {}  # modality -> why no window used it (not sent, no face, silent: masking.py)
    age_group: str
    age_read: AgeRead | None = None  # age_group "unknown" and read, or a named group contradicted
    aggregation: str = AGGREGATION
    model_name: str
    model_versions: dict[str, str]  # the versions that produced this answer (checked around the call)
    timings_ms: dict[str, float]
    clip_sha256: str = ""  # SHA-256 over the uploaded parts: the clip's identity in FHIR and the audit log
    recorded_at: str | None = None  # the request's recording time (UTC), None when it gave none
    scored_at: str = Field(default_factory=utc_now)  # when the gateway scored it (UTC, ISO 8601)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_proto(self) -> Any:
        from avpenet.v1 import scoring_pb2 as pb

        data = self.model_dump()
        timeline = [
            pb.WindowScore(
                **{k: v for k, v in w.items() if k not in ("interval_90", "modality_weights")},
                interval_90=pb.Interval(**w["interval_90"]),
                modality_weights=pb.ModalityWeights(**w["modality_weights"]),
            )
            for w in data.pop("timeline")
        ]
        data["recorded_at"] = data["recorded_at"] or ""
        age_read = data.pop("age_read")
        data["age_read"] = pb.AgeRead(**age_read) if age_read is not None else None
        interval = pb.Interval(**data.pop("interval_90"))
        weights = pb.ModalityWeights(**data.pop("modality_weights"))
        return pb.ScoreResponse(**data, timeline=timeline, interval_90=interval, modality_weights=weights)

    @classmethod
    def from_proto(cls, msg: Any) -> ScoreResponse:
        from google.protobuf.json_format import MessageToDict

        data = MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        data["recorded_at"] = data.get("recorded_at") or None
        return cls.model_validate(data)


class ModelInfo(BaseModel):
    name: str
    version: str
    state: str


class ModelsResponse(BaseModel):
    """`GET /v1/models`: the ensemble the gateway calls and every model version Triton serves."""

    ensemble: str
    models: list[ModelInfo]

    def to_proto(self) -> Any:
        from avpenet.v1 import scoring_pb2 as pb

        return pb.ListModelsResponse(
            ensemble=self.ensemble, models=[pb.ModelVersion(**m.model_dump()) for m in self.models]
        )


class ErrorResponse(BaseModel):
    """Every HTTP error body: what went wrong and what to send instead; never media or identifiers."""

    error: str  # the error class, e.g. UndecodableMedia
    detail: str
    request_id: str
