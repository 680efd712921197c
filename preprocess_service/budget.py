"""Each request's time budget: the gateway answers before Ray Serve's proxy cuts the request off.

The proxy ends a request `request_timeout_s` after it arrived (serve_config.yaml; an HTTP caller may set its
own with `x-request-timeout-seconds`) with a bare timeout: no reason, no Retry-After, and the work behind it
runs on for nobody. Each stage has its own deadline, sized for its work: a video's wait for the
FeatureExtractor (`limits.max_video_wait_s`), the extraction (`features_deadline_s`), the Triton call
(`deadline_s`) and the HL7 delivery (`hl7_mllp_*`). For a 60-s bedside video under load they add up past 60 s
(15 + 30 + 29). The budget caps each stage by what is left of `request_timeout_s - answer_margin_s`, so the
caller gets the gateway's reason, and the FeatureExtractor and Triton stop at that moment too.

A caller's own `x-request-timeout-seconds` T keeps a margin of T/4 when that is less than `answer_margin_s`
(3 s): a 3-s limit kept whole 3 s back, so its budget was spent from the start and every try was a 503
with a Retry-After (a loop for a client that honours it), while a gRPC call with a 2-s deadline scored. A
quarter of a short limit still covers what the margin is for (the answer's rendering, the way back and a
short wait in Serve's router: milliseconds on a healthy stack); a longer wait is what the caller chose with a
short limit, and the proxy then ends it (408). Below `MIN_TIMEOUT_S` (1 s) the header is refused (400
`TimeoutTooShort`, no Retry-After): 0.75 s less the 0.25 s a stage needs left (`SPENT_S`) is too little to
decode and score a clip, and a retry would fail alike.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from starlette.datastructures import Headers

from preprocess_service.errors import (
    BudgetSpent,
    DuplicateHeader,
    FeaturesUnavailable,
    Overloaded,
    TimeoutTooShort,
    TritonTimeout,
    TritonUnavailable,
)

# What a stage raises when its (capped) deadline or wait runs out
TIMED_OUT = (Overloaded, FeaturesUnavailable, TritonTimeout, TritonUnavailable)

PROXY_TIMEOUT_HEADER = "x-request-timeout-seconds"  # Ray Serve's per-request override of request_timeout_s
SPENT_S = 0.25  # a stage that timed out with less than this left was cut by the budget, not its own deadline
MIN_TIMEOUT_S = 1.0  # the shortest x-request-timeout-seconds the gateway accepts (0 or less: no limit)
SHORT_MARGIN = 0.25  # a caller's limit T keeps min(answer_margin_s, T * SHORT_MARGIN) for the answer


@dataclass(frozen=True)
class RequestBudget:
    """`total_s` from `started` (time.monotonic, the event loop's clock); `timeout_s`: the proxy's limit."""

    total_s: float
    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    asked: bool = False  # the caller set `timeout_s` with PROXY_TIMEOUT_HEADER

    @classmethod
    def of(
        cls, request_timeout_s: float, margin_s: float, headers: Mapping[str, str] | None = None
    ) -> RequestBudget:
        """The budget of a request that reached the gateway now (the proxy's clock started a little earlier:
        the margin covers that, the answer's rendering and the way back). DuplicateHeader (400) when the
        caller's timeout header comes more than once (`proxy_timeout`), TimeoutTooShort (400) when it asks
        for less than MIN_TIMEOUT_S; a caller's limit keeps a quarter of itself when below `margin_s`."""
        timeout, asked_by_caller = request_timeout_s, False
        raw = proxy_timeout(headers)
        if raw is not None:
            try:
                asked = float(raw)
            except ValueError:
                pass  # Ray's proxy ignores a value it cannot parse: so does the budget
            else:  # as Ray's parse_request_timeout_header: above 0 (inf included) a limit, else (NaN) none
                timeout = asked if asked > 0 else math.inf
                asked_by_caller = True
                _refuse_too_short(asked, margin_s)
                margin_s = min(margin_s, timeout * SHORT_MARGIN)
        return cls(total_s=max(timeout - margin_s, 0.0), timeout_s=timeout, asked=asked_by_caller)

    @property
    def ends_at(self) -> float:
        """time.monotonic() when the budget runs out."""
        return self.started + self.total_s

    def remaining_s(self) -> float:
        return self.ends_at - time.monotonic()

    def cap(self, stage_s: float) -> float:
        """A stage's own deadline, or what is left of the budget when that is shorter (never below 0)."""
        return max(0.0, min(stage_s, self.remaining_s()))

    @property
    def spent(self) -> bool:
        return self.remaining_s() < SPENT_S

    def error(self, stage: str, retry_after_s: int) -> BudgetSpent:
        if self.asked:
            why = f"as its {PROXY_TIMEOUT_HEADER} header asks; allow more time, or"
        else:
            why = "the service is busy and the clip itself was fine:"
        return BudgetSpent(
            f"not scored: this request's {seconds(self.total_s)} s time budget ran out {stage} (the proxy "
            f"ends it at {seconds(self.timeout_s)} s, {why} send it again after {retry_after_s} s, or send "
            "shorter clips)",
            retry_after_s,
        )

    def check(self, stage: str, retry_after_s: int) -> None:
        """Raise `BudgetSpent` when nothing is left for `stage`."""
        if self.spent:
            raise self.error(stage, retry_after_s)

    @contextlib.contextmanager
    def bounds(self, stage: str, retry_after_s: int) -> Iterator[None]:
        """A stage that timed out with the budget spent was cut by the budget, and the answer says so."""
        try:
            yield
        except (*TIMED_OUT, TimeoutError) as exc:
            if self.spent:
                raise self.error(stage, retry_after_s) from exc
            raise


def seconds(value: float) -> str:
    """A budget in seconds as a caller reads it: 0.75, 2.25, 57 (a whole-second rounding read 0.75 as 1)."""
    return f"{round(value, 2):g}"


def _refuse_too_short(asked: float, margin_s: float) -> None:
    """TimeoutTooShort (400) for a caller's limit under MIN_TIMEOUT_S (0 or less is no limit, as for Ray)."""
    if 0 < asked < MIN_TIMEOUT_S:
        raise TimeoutTooShort(
            f"{PROXY_TIMEOUT_HEADER} {asked:g} is below the minimum of {MIN_TIMEOUT_S:g} s: the gateway "
            f"keeps a quarter of a short limit (at most {margin_s:g} s) to answer before the proxy cuts the "
            "request, and what is left is too little to decode and score a clip; send 1 or more (0: no limit)"
        )


def proxy_timeout(headers: Mapping[str, str] | None) -> str | None:
    """The caller's one `x-request-timeout-seconds` value, or None. Sent twice, Ray's proxy keeps the last
    (it reads the headers into a dict) and Starlette's `Headers.get` the first, so the proxy could cut a
    request at a limit the budget never saw. Refused (400) rather than read as Ray does: which value the
    proxy keeps is its internal detail (and an ingress in front may reorder or merge duplicates), and the
    caller's intent is unclear; a refusal cannot disagree with the proxy. Only Starlette's `Headers` keep
    duplicates (the HTTP route passes them); a plain mapping has one value per name."""
    if isinstance(headers, Headers):
        values = headers.getlist(PROXY_TIMEOUT_HEADER)
        if len(values) > 1:
            raise DuplicateHeader(
                f"{PROXY_TIMEOUT_HEADER} sent {len(values)} times; send it once (the proxy and the gateway "
                "would each read a different time limit)"
            )
        return values[0] if values else None
    return (headers or {}).get(PROXY_TIMEOUT_HEADER)
