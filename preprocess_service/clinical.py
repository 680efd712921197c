"""The clinical edge of a scoring request: which format the caller asked for, rendering it (JSON, FHIR R4,
HL7 v2), HL7 delivery over MLLP, and the request's identity for idempotency and the audit line.

One `Clinical` per gateway replica, built from GatewaySettings; HTTP and gRPC both use it, so the same request
gives the same documents over either protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from preprocess_service import fhir, hl7_outcome, hl7v2, mllp
from preprocess_service.audit import AuditRecord
from preprocess_service.budget import RequestBudget
from preprocess_service.errors import DeliveryNotConfigured, InvalidRequest, NotAcceptable
from preprocess_service.hl7_outcome import may_pass  # the SDK resends on the same outcomes
from preprocess_service.idempotency import IdempotencyCache, Redo
from preprocess_service.limits import Slot
from preprocess_service.protocol import ScoreRequest, ScoreResponse
from preprocess_service.settings import GatewaySettings

JSON_TYPE = "application/json"
FORMATS = ("json", "fhir-observation", "fhir-bundle", "hl7v2")
CONTENT_TYPES = {
    "json": JSON_TYPE,
    "fhir-observation": fhir.CONTENT_TYPE,
    "fhir-bundle": fhir.CONTENT_TYPE,
    "hl7v2": hl7v2.MEDIA_TYPE,
}
ACCEPTED = f"{JSON_TYPE}, {fhir.MEDIA_TYPE} or {hl7v2.MEDIA_TYPE}"
# an Accept `fhirVersion` the gateway answers: R4, as fhir.CONTENT_TYPE names it or in full
FHIR_VERSIONS = (fhir.CONTENT_TYPE.rsplit("=", 1)[1], fhir.FHIR_VERSION)
PROTO_FORMATS = ("json", "fhir-observation", "fhir-bundle", "hl7v2")  # index = avpenet.v1.Format value


def proto_format(value: int) -> str:
    """The format of a gRPC `ScoreRequest.format` enum value; unknown values are INVALID_ARGUMENT."""
    if not 0 <= value < len(PROTO_FORMATS):
        raise InvalidRequest(f"format {value} is not a known avpenet.v1.Format value")
    return PROTO_FORMATS[value]


def negotiate(accept: str | None, fhir_kind: str | None = None) -> str:
    """The format for an `Accept` header (q-values honoured; none or */* = JSON; every range at q=0 accepts
    nothing); NotAcceptable names it.

    `fhir_kind` (the `?fhir=` query) is checked whatever the answer's format: a value other than observation
    or bundle is 422 naming them, even when the answer is JSON or HL7 v2, which it does not change. A FHIR
    range with a `fhirVersion` other than 4.0 (R4) is not one the gateway can answer (FHIR's rule: 406)."""
    if fhir_kind not in (None, "", *fhir.KINDS):
        shown = repr(fhir_kind[:32])
        raise InvalidRequest(f"fhir must be {' or '.join(fhir.KINDS)} (the FHIR answer's kind), not {shown}")
    ranges, refused, unserved_fhir = [], [], False
    for i, item in enumerate((accept or "").split(",")):
        media, *params = (p.strip().lower() for p in item.split(";"))
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        version = next((p.partition("=")[2].strip('"') for p in params if p.startswith("fhirversion=")), "")
        try:
            weight = float(q)
        except ValueError:
            weight = 0.0
        if media and not weight > 0:  # q=0 (or a q that is no number): "not this type"
            refused.append(media)
        elif media == fhir.MEDIA_TYPE and version and version not in FHIR_VERSIONS:
            unserved_fhir = True
        elif media:
            ranges.append((-weight, i, media))
    if not ranges and not unserved_fhir:
        if refused:  # every range the client named it refuses: answering JSON would ignore it
            shown = ", ".join(refused)[:80]
            raise NotAcceptable(f"Accept: {shown!r} accepts no type (q=0); ask for {ACCEPTED}")
        return "json"
    for _, _, media in sorted(ranges):
        if media in (JSON_TYPE, "*/*", "application/*"):
            return "json"
        if media == fhir.MEDIA_TYPE:
            return "fhir-bundle" if fhir_kind == "bundle" else "fhir-observation"
        if media == hl7v2.MEDIA_TYPE:
            return "hl7v2"
    if unserved_fhir:
        raise NotAcceptable(f"this gateway answers FHIR R4 only: ask for {fhir.CONTENT_TYPE}")
    shown = ", ".join(m for _, _, m in sorted(ranges))[:80]
    raise NotAcceptable(f"Accept: {shown!r} is not supported; ask for {ACCEPTED}")


def clip_sha256(request: ScoreRequest) -> str:
    """SHA-256 over the uploaded parts (name and content digest, in part order): the clip's identity."""
    h = hashlib.sha256()
    for name, part in request.parts().items():
        h.update(f"{name}:{part.sha256}\n".encode())
    return h.hexdigest()


def fingerprint(request: ScoreRequest, clip: str) -> str:
    """What makes two requests 'the same' for Idempotency-Key: the clip and every field but the request id."""
    fields = request.model_dump(exclude={"clip", "audio", "video", "landmarks", "request_id"})
    return hashlib.sha256(json.dumps([clip, fields], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Rendered:
    body: str
    content_type: str


@dataclass(frozen=True)
class Answer:
    result: ScoreResponse
    rendered: Rendered
    delivery: str  # MLLP outcome, "" when not asked for
    replayed: bool  # answered from the Idempotency-Key cache


class Clinical:
    def __init__(self, settings: GatewaySettings) -> None:
        self.fhir = fhir.FhirConfig(
            code_system=settings.fhir_code_system, code=settings.fhir_code, status=settings.fhir_status
        )
        self.hl7 = hl7v2.Hl7Config(
            sending_facility=settings.hl7_sending_facility,
            receiving_application=settings.hl7_receiving_application,
            receiving_facility=settings.hl7_receiving_facility,
            assigning_authority=settings.hl7_assigning_authority,
        )
        self.target = (
            mllp.MllpTarget.parse(
                settings.hl7_mllp_target,
                timeout_s=settings.hl7_mllp_timeout_s,
                retries=settings.hl7_mllp_retries,
            )
            if settings.hl7_mllp_target
            else None
        )
        self.idempotency: IdempotencyCache = IdempotencyCache(
            settings.idempotency_ttl_s, settings.idempotency_max_entries, settings.limits.retry_after_s
        )

    def check(self, request: ScoreRequest) -> None:
        """Refuse before scoring what cannot be honoured after it: delivery without an engine, or without a
        patient (an ORU^R01 without PID-3 would file every such score under one made-up patient). The engine
        first: without one no request can be delivered, so fixing `subject_ref` first would only lead to this
        refusal; the reason says that `subject_ref` is needed too, so one fix round is enough."""
        if request.deliver_hl7 and self.target is None:
            raise DeliveryNotConfigured(
                "deliver=hl7v2 needs an interface engine: the gateway has no hl7_mllp_target configured (ask "
                "its operator, or send without deliver); a delivering request also needs subject_ref"
            )
        if request.deliver_hl7 and not request.subject_ref:
            raise InvalidRequest(hl7_outcome.NO_SUBJECT)

    def render(self, fmt: str, result: ScoreResponse, request: ScoreRequest) -> Rendered:
        ctx = fhir.Context(request.subject_ref, request.encounter_ref)
        if fmt == "json":
            return Rendered(result.model_dump_json(), JSON_TYPE)
        if fmt in ("fhir-observation", "fhir-bundle"):
            kind = "bundle" if fmt == "fhir-bundle" else "observation"
            return Rendered(fhir.render(result, ctx, self.fhir, kind), fhir.CONTENT_TYPE)
        if fmt == "hl7v2":
            return Rendered(hl7v2.oru_r01(result, ctx, self.fhir, self.hl7), hl7v2.MEDIA_TYPE)
        raise ValueError(f"unknown format {fmt!r}")

    async def deliver(
        self, result: ScoreResponse, request: ScoreRequest, budget: RequestBudget | None = None
    ) -> str:
        """Send the ORU^R01 when asked; a one-line outcome for the answer (never raises for a NACK). No
        attempt runs past what is left of `budget`, the request's time budget."""
        return (await self._deliver(result, request, budget))[0]

    async def _deliver(
        self, result: ScoreResponse, request: ScoreRequest, budget: RequestBudget | None
    ) -> tuple[str, int]:
        """(`deliver`'s outcome, the attempts made: 0 when none was asked for, none could be built, or no
        time was left for one)."""
        if not request.deliver_hl7 or self.target is None:
            return "", 0
        try:
            message = (await asyncio.to_thread(self.render, "hl7v2", result, request)).body
        except Exception as exc:  # noqa: BLE001 - a scored answer is never lost to the message build
            return f"NOT_SENT: the HL7 message could not be built ({type(exc).__name__})", 0
        try:
            left_s = math.inf if budget is None else budget.remaining_s()
            done = await mllp.send(self.target, message, result.request_id[:199], left_s)
        except mllp.DeliveryError as exc:
            detail = hl7_outcome.text(exc.detail, 120)
            return f"{exc.code} after {exc.attempts} attempt(s): {detail}", exc.attempts
        return f"{done.code} after {done.attempts} attempt(s)", done.attempts

    async def answer(
        self,
        score: Callable[[], Awaitable[ScoreResponse]],
        request: ScoreRequest,
        *,
        fmt: str,
        key: str | None,
        record: AuditRecord,
        budget: RequestBudget | None = None,
        slot: Slot | None = None,
    ) -> Answer:
        """Score once per Idempotency-Key (deliver HL7 when asked, within `budget`; a retry waits for its
        first request within its own `budget`, its request `slot` given back meanwhile), render `fmt`, fill
        the audit record. A retry whose stored delivery failed for a reason that may pass sends the same
        message again within its own `budget` (not scored again); its outcome replaces the stored one."""
        self.check(request)
        clip = clip_sha256(request)
        record.clip_sha256, record.format = clip, fmt

        async def work() -> tuple[ScoreResponse, str]:
            result = await score()
            return result, await self.deliver(result, request, budget)

        async def deliver_again(stored: tuple[ScoreResponse, str]) -> tuple[ScoreResponse, str]:
            if budget is not None and budget.remaining_s() <= 0:
                return stored  # no time left to send it (nor to build it): the stored reason stands
            delivery, attempts = await self._deliver(stored[0], request, budget)  # MSH-10: its request id
            if attempts == 0:
                return stored  # the time ran out while it was built: the next retry sends it
            record.redelivered = True
            return stored[0], delivery

        redo = Redo(lambda stored: may_pass(stored[1]), deliver_again, "delivering its HL7 message again")
        (result, delivery), replayed = await self.idempotency.run(
            record.api_key_id, key, fingerprint(request, clip), work, budget, slot, redo
        )
        record.model_versions, record.replayed = dict(result.model_versions), replayed
        # Off the event loop: hl7apy builds and validates a message in ~0.1-0.3 s of CPU.
        if fmt == "json":
            rendered = self.render(fmt, result, request)
        else:
            rendered = await asyncio.to_thread(self.render, fmt, result, request)
        return Answer(result, rendered, delivery, replayed)
