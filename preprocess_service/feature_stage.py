"""The feature stage of a scoring request, within its time budget (budget.py).

A light upload (audio, landmarks) is decoded on the gateway's worker thread, or refused before decoding when
the budget is already spent. A video waits its turn or is refused by media seconds (video_admission.py),
goes to the FeatureExtractor with a deadline capped by the budget, and a clip it could not finish in time
backs the admission off (preprocess_service/README.md, *Admission*).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from preprocess_service import telemetry
from preprocess_service.errors import FeaturesUnavailable

if TYPE_CHECKING:
    from preprocess_service.budget import RequestBudget
    from preprocess_service.extract import Extracted
    from preprocess_service.protocol import ScoreRequest
    from preprocess_service.service import ScoringService

log = logging.getLogger("avpenet.gateway")


async def extract_features(
    service: ScoringService, request: ScoreRequest, media_s: float | None, budget: RequestBudget
) -> tuple[Extracted, float | None]:
    """The request's features; for video (`media_s`: its declared seconds) also the seconds it waited for
    its turn at the extractor."""
    extractor = service._extractor_for(request)
    retry = service.settings.limits.retry_after_s
    if media_s is None:  # a budget already spent refuses a light upload before decoding, as it does video
        budget.check("before decoding", retry)
        return await extractor(request, telemetry.inject_context(), 0.0, budget.remaining_s()), None
    deadline_s = service.settings.features_deadline_s(media_s)
    # video waits its turn (FIFO) or is refused up front: video_admission.MediaSecondsLimiter
    admission = service.video_limiter.admit(media_s, budget.cap(deadline_s), max_wait_s=budget.remaining_s())
    with budget.bounds("in video feature extraction", retry), service.video_slots.admit():
        async with admission as waited_s:  # the slot is held while the video waits and is decoded
            started_at = service.video_limiter.clock()
            budget.check("while the video waited for feature extraction", retry)
            carrier = telemetry.inject_context()
            given_s = budget.cap(deadline_s)
            try:
                extracted = await extractor(request, carrier, media_s, given_s)
            except FeaturesUnavailable:  # started, not done in time: admit with more headroom, unless
                if given_s < deadline_s:  # the request's own short budget cut it (no word on the rate)
                    raise
                service.video_limiter.missed(started_at)
                log.warning("request %s: video features not done in time; video admission now keeps "
                            "its estimate within %.2f of the deadline", request.request_id,
                            service.video_limiter.share)  # fmt: skip
                raise
    service.video_limiter.credit(extracted.duration_s - media_s)  # a header that understated the length
    return extracted, waited_s
