"""Typed gateway settings: code defaults < Serve config `args` (YAML) < `AVPENET_*` environment variables.

The Serve config (serve_config.yaml, embedded by the k8s RayService with cluster replica sizes) carries
per-environment values; the environment carries what operators inject per pod (Triton address, secrets
paths). Unknown keys are errors, so a typo in YAML fails the deploy instead of silently using a default.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from avpenet import contract
from preprocess_service.budget import RequestBudget
from preprocess_service.stream.limits import StreamLimits

ENV_PREFIX = "AVPENET_"
HL7_NAMES = (
    "hl7_sending_facility",
    "hl7_receiving_application",
    "hl7_receiving_facility",
    "hl7_assigning_authority",
)
HL7_NAME_MAX = 20  # an HD namespace id: hl7apy's strict build refuses a longer one, escapes included


class Limits(BaseModel):
    """Per-request resource limits: beyond any of them the answer is 413 / RESOURCE_EXHAUSTED."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)  # whole request body
    max_duration_s: float = Field(60.0, gt=0)  # media seconds; the default keeps one Triton batch
    max_pixels: int = Field(1920 * 1080, gt=0)  # width * height of coded video frames
    max_in_flight: int = Field(16, gt=0)  # concurrent scoring requests per gateway replica, then 429
    # ... of which video never takes the last `reserved_for_light` (but always at least one): audio and
    # landmark uploads keep being scored while videos wait for the FeatureExtractor (README, Admission)
    reserved_for_light: int = Field(4, ge=0)
    # Video: media seconds a gateway replica may have at the FeatureExtractor at once, then 429 before any
    # decoding (a clip costs there per second of video; a single clip is always admitted): README, Admission
    max_video_seconds_in_flight: float = Field(60.0, gt=0)
    # ... and a clip beyond it waits its turn in the gateway (FIFO, already uploaded) at most this long; a
    # refusal makes its client upload the whole clip again. 0: refuse at once (README, Admission)
    max_video_wait_s: float = Field(15.0, ge=0)
    # Video clips one FeatureExtractor replica decodes and tracks at once; the others it holds wait inside
    # it, not in Serve's router (where a waiting call costs its caller CPU and the replica idle gaps: README,
    # Admission). Its max_ongoing_requests (serve_config.yaml) bounds how many it holds.
    features_threads: int = Field(4, gt=0)
    # The landmarker reads every N-th sampled video frame (and the last), the frames between interpolated:
    # about N times less tracking CPU per second of video. 1 (every frame) is what the reference was trained
    # and evaluated on; 2 and 3 were measured on its test and validation subjects (docs/EVALUATION.md,
    # *Tracking fewer frames*); larger strides were not, so they are refused.
    track_every: int = Field(1, ge=1, le=3)
    # Uploads of at most this many bytes are parsed, and light ones stored raw (PCM WAV, uncompressed .npz)
    # decoded, on the replica's event loop (about 5 ms for a 3-s clip with landmarks); the rest on a worker
    # thread, so a minute of sound never stalls the loop. No thread hand-off per small upload: more clips
    # on the model mix for no more CPU (preprocess_service/cpu_work.py). 0: every upload on a thread.
    inline_bytes: int = Field(384 * 1024, ge=0)
    retry_after_s: int = Field(2, ge=1)  # Retry-After on 429 / 503
    # Slow uploads (slow-loris): the body must keep arriving at this average rate once the grace has passed,
    # else 408. Admission is taken only after the whole body is in, so a slow sender holds no scoring slot.
    min_upload_bytes_per_s: int = Field(16 * 1024, gt=0)
    upload_grace_s: float = Field(5.0, gt=0)

    @property
    def video_slots(self) -> int:
        """Request slots per gateway replica that video uploads may hold (`reserved_for_light` kept back)."""
        return max(1, self.max_in_flight - self.reserved_for_light)


class GatewaySettings(BaseModel):
    """Everything the gateway reads at start; one instance per replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Triton
    # Triton's gRPC endpoint: host:port, or a gRPC target naming every pod (`dns:///<headless service>:8001`,
    # `ipv4:a:8001,b:8001`) over which `triton_lb_policy` spreads calls; the channel is remade every
    # `triton_refresh_s` so DNS is read again (pods added by the autoscaler); 0 = never
    triton_url: str = "127.0.0.1:8001"
    triton_lb_policy: str = Field("round_robin", pattern="^(round_robin|pick_first)$")
    triton_refresh_s: float = Field(60.0, ge=0)
    triton_timeout_s: float = Field(contract.DEADLINE_S, gt=0)  # one inference call, all retries included
    # ... or this much per window when longer (a 60-s clip: 58 windows -> 29 s), so long clips can queue
    # (a part's queue holds a call at most MAX_BATCH_SIZE x the default, 32 s: a larger value is capped there)
    triton_timeout_per_window_s: float = Field(contract.DEADLINE_PER_WINDOW_S, ge=0)
    triton_retries: int = Field(3, ge=0)  # extra attempts on UNAVAILABLE
    # Deadline of the FeatureExtractor hop (video decode + tracking, 0.18-0.28 CPU-s per second of video):
    # past it, or when its replica dies, the caller gets 503 + Retry-After instead of waiting for a restart,
    # and the replica stops working on it. `features_timeout_s`, or this much per second of video when
    # longer (a 60-s clip: 30 s), as the Triton call's deadline scales per window
    features_timeout_s: float = Field(15.0, gt=0)
    features_timeout_per_media_s: float = Field(0.5, ge=0)
    triton_backoff_s: float = Field(0.1, gt=0)  # first retry delay; doubles each attempt
    # The proxies' request_timeout_s (serve_config.yaml http_options and grpc_options; a larger value is
    # refused by `serve_config.check_timeouts`): every stage above is capped by what is left of it less
    # `answer_margin_s`, so the gateway answers with its reason before the proxy cuts the request (budget.py)
    request_timeout_s: float = Field(60.0, gt=0)
    answer_margin_s: float = Field(3.0, ge=0)
    # Watchdog: a real one-window inference this often; `watchdog_failures` failed in a row = not ready
    watchdog_period_s: float = Field(3.0, gt=0)
    watchdog_timeout_s: float = Field(3.0, gt=0)
    watchdog_failures: int = Field(2, ge=1)
    triton_ssl: bool = False
    triton_root_certificates: str | None = None
    model_name: str = contract.ENSEMBLE.name
    # Exposure and auth
    bind_host: str = "127.0.0.1"  # where the proxies listen (the Serve config's http_options.host)
    grpc_enabled: bool = True  # Ray's gRPC proxy always binds all interfaces (see require_auth)
    require_auth: bool = False  # force API keys even on loopback
    api_keys: tuple[str, ...] = ()  # prefer api_keys_file / AVPENET_API_KEYS: keep secrets out of YAML
    api_keys_file: str | None = None  # one key per line; re-read when it changes (revocation without restart)
    # Clinical integration (docs/INTEGRATION.md): the CodeSystem the hospital binds to its flowsheet row,
    # the Observation status until a clinician confirms, HL7 v2 names and the interface engine (host:port).
    fhir_code_system: str = Field("urn:avpenet:fhir:CodeSystem:pain-estimate", pattern=r"^\S+$")  # a URI
    fhir_code: str = Field("pain-estimate-0-10", pattern=r"^[^\s|^~\\&]+( [^\s|^~\\&]+)*$")  # FHIR, HL7-safe
    fhir_status: str = Field("preliminary", pattern="^(registered|preliminary|final|amended)$")
    hl7_sending_facility: str = "AVPENET"
    hl7_receiving_application: str = ""
    hl7_receiving_facility: str = ""
    hl7_assigning_authority: str = "HOSP"  # PID-3 assigning authority of the subject_ref ids
    hl7_mllp_target: str | None = None  # host:port of the interface engine; None = no MLLP delivery
    hl7_mllp_timeout_s: float = Field(5.0, gt=0)
    hl7_mllp_retries: int = Field(2, ge=0)
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)  # how long a replayed answer is kept per replica
    idempotency_max_entries: int = Field(10_000, gt=0)
    # Limits
    limits: Limits = Limits()
    streams: StreamLimits = StreamLimits()  # bedside monitoring streams (stream/limits.py)
    # Observability
    service_name: str = "avpenet-gateway"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _hl7_names(self) -> GatewaySettings:
        """Refused at load: a name hl7apy cannot build would make every HL7 answer (and delivery) fail."""
        from preprocess_service.hl7v2 import escape  # the one HL7 escaping (lazy: settings import light)

        for name in HL7_NAMES:
            value = getattr(self, name)
            if not all(" " <= ch <= "~" for ch in value):
                raise ValueError(f"{name} must be printable ASCII (no control bytes, no accents): {value!r}")
            escaped = len(escape(value))  # as the message will carry it
            if escaped > HL7_NAME_MAX:
                raise ValueError(
                    f"{name} is {escaped} characters once HL7-escaped; an HL7 v2 namespace id holds at most "
                    f"{HL7_NAME_MAX}: {value!r}"
                )
        return self

    @model_validator(mode="after")
    def _window_batches(self) -> GatewaySettings:
        if self.limits.max_duration_s > 3600:
            raise ValueError("limits.max_duration_s above one hour is not a per-request clip")
        if self.answer_margin_s >= self.request_timeout_s:
            raise ValueError("answer_margin_s must be below request_timeout_s: nothing would be left")
        return self

    def budget(self, headers: Mapping[str, str] | None = None) -> RequestBudget:
        """The time budget of a request arriving now (budget.py)."""
        return RequestBudget.of(self.request_timeout_s, self.answer_margin_s, headers)

    def features_deadline_s(self, media_s: float) -> float:
        """The FeatureExtractor hop's deadline for a clip of `media_s` seconds (see the fields above)."""
        return max(self.features_timeout_s, media_s * self.features_timeout_per_media_s)

    @property
    def exposed(self) -> bool:
        """True when any listener is reachable from other hosts; API keys are then mandatory."""
        return self.grpc_enabled or not is_loopback(self.bind_host)

    @property
    def auth_required(self) -> bool:
        return self.require_auth or self.exposed

    @classmethod
    def load(
        cls, args: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> GatewaySettings:
        """Defaults, then `args` (the Serve config's application args), then AVPENET_* variables."""
        values: dict[str, Any] = dict(args or {})
        env = os.environ if environ is None else environ
        limits = dict(values.pop("limits", None) or {})
        for name in cls.model_fields:
            if name == "limits":
                continue
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _split(raw) if name == "api_keys" else raw
        for name in Limits.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                limits[name] = raw
        values["limits"] = limits
        return cls.model_validate(values)


def _split(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1 are loopback; 0.0.0.0, :: and every other address are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
