"""Each request answers within its time budget (preprocess_service/budget.py): the proxy's `request_timeout_s`
less `answer_margin_s`, or the caller's `x-request-timeout-seconds`. A stage cut by the budget is a 503 +
Retry-After naming the stage, the budget and the proxy's limit, and the FeatureExtractor hop, the Triton call
and HL7 delivery get only what is left. Stand-ins for the FeatureExtractor handle and a silent Triton; the
real stack's paths are in tests/gateway (end to end) and tests/reliability."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time

import pytest
from starlette.datastructures import Headers
from support.asgi import score_request
from support.fake_extractor import FakeHandle, FakeResponse
from support.gateway import API_KEY, audio_and_landmarks, budget_refusal, mp4_bytes, post_score, wav_bytes

from preprocess_service import http_routes, mllp, serve_config
from preprocess_service.budget import RequestBudget
from preprocess_service.deployments import extract_remotely
from preprocess_service.errors import BudgetSpent, DuplicateHeader, FeaturesUnavailable, status_of
from preprocess_service.protocol import MediaPart, ScoreRequest
from preprocess_service.service import ScoringService
from preprocess_service.settings import GatewaySettings

WAIT_S = 10.0  # every wait in these tests is bounded: a regression fails instead of hanging


def settings(**args) -> GatewaySettings:
    base = {
        "triton_url": "127.0.0.1:1",
        "grpc_enabled": False,
        "request_timeout_s": 1.5,
        "answer_margin_s": 0.5,
    }
    return GatewaySettings.load({**base, **args}, {})


def test_the_budget_is_the_proxy_timeout_less_the_margin_or_the_callers_header():
    assert RequestBudget.of(60, 3).total_s == 57
    assert RequestBudget.of(60, 3, {"x-request-timeout-seconds": "20"}).total_s == 17
    assert RequestBudget.of(60, 3, {"x-request-timeout-seconds": "0"}).total_s == math.inf  # never cut off
    assert (
        RequestBudget.of(60, 3, {"x-request-timeout-seconds": "soon"}).total_s == 57
    )  # ignored, as Ray does
    assert RequestBudget.of(60, 3, {"x-request-timeout-seconds": "2"}).total_s == 1.5  # a quarter kept back
    for value in ("inf", "nan", "-1"):  # Ray's proxy never cuts these off (the budget was 57 s for inf, nan)
        assert RequestBudget.of(60, 3, {"x-request-timeout-seconds": value}).total_s == math.inf, value
    budget = RequestBudget.of(60, 3)
    assert budget.cap(15.0) == 15.0 and 56 < budget.cap(100.0) <= 57
    assert not budget.spent and RequestBudget(0.0, 60).spent


TIMEOUT = b"x-request-timeout-seconds"


def test_the_timeout_header_sent_twice_is_refused_not_read_differently_from_the_proxy():
    """Ray's proxy cut the request at the last value while the budget (Starlette's `get`) read the first."""
    twice = Headers(raw=[(TIMEOUT, b"50"), (TIMEOUT, b"5")])
    with pytest.raises(DuplicateHeader, match="x-request-timeout-seconds sent 2 times; send it once") as info:
        RequestBudget.of(60, 3, twice)
    assert status_of(info.value) == (400, "INVALID_ARGUMENT")
    assert RequestBudget.of(60, 3, Headers(raw=[(TIMEOUT, b"20")])).total_s == 17
    assert RequestBudget.of(60, 3, Headers(raw=[])).total_s == 57


def test_the_score_route_answers_a_doubled_timeout_header_400_and_counts_the_refusal():
    async def run() -> tuple[int, dict, set[str]]:
        service = ScoringService(settings())
        try:
            body = [{"type": "http.request", "body": b"--XX--\r\n", "more_body": False}]
            twice = [(TIMEOUT, b"50"), (TIMEOUT, b"5")]
            response = await http_routes.score(service, score_request(body, headers=twice))
            reasons = {s.labels["reason"] for s in service.metrics.refusals.collect()[0].samples}
        finally:
            await service.close()
        return response.status_code, json.loads(response.body), reasons

    status, answer, reasons = asyncio.run(run())
    assert status == 400 and answer["error"] == "DuplicateHeader", answer
    assert "x-request-timeout-seconds sent 2 times" in answer["detail"] and "DuplicateHeader" in reasons


def test_a_caller_without_a_valid_key_hears_401_before_any_header_problem():
    async def run() -> tuple[int, dict]:
        service = ScoringService(settings(api_keys=("k" * 32,)))
        try:
            body = [{"type": "http.request", "body": b"--XX--\r\n", "more_body": False}]
            twice = [(TIMEOUT, b"50"), (TIMEOUT, b"5")]
            response = await http_routes.score(service, score_request(body, headers=twice))
        finally:
            await service.close()
        return response.status_code, json.loads(response.body)

    status, answer = asyncio.run(run())
    assert status == 401 and answer["error"] == "Unauthenticated", answer


def test_a_config_whose_proxy_cuts_before_the_gateway_answers_is_refused():
    config = serve_config.load_config()
    serve_config.check_timeouts(config)  # the committed one (and so the k8s RayService) agrees
    config["grpc_options"]["request_timeout_s"] = 30
    with pytest.raises(ValueError, match="grpc_options.request_timeout_s 30"):
        serve_config.localize(config, host="127.0.0.1", http_port=1, grpc_port=2, triton_url="x:1")


def test_a_config_whose_drain_cuts_requests_within_their_budget_is_refused():
    """Ray's default drain (20 s) is shorter than the 60-s budget: a deployment that does not set its own
    graceful_shutdown_timeout_s is refused, as is one that sets less."""
    from ray.serve._private.constants import DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S

    assert (
        serve_config.RAY_DRAIN_DEFAULT_S == DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S
    )  # the Ray this project pins
    for change in ({"graceful_shutdown_timeout_s": 30}, None):
        config = serve_config.load_config()
        extractor = config["applications"][0]["deployments"][1]
        if change is None:
            del extractor["graceful_shutdown_timeout_s"]
        else:
            extractor.update(change)
        with pytest.raises(ValueError, match="'FeatureExtractor' graceful_shutdown_timeout_s (30|20) s"):
            serve_config.check_timeouts(config)


def video_request() -> ScoreRequest:
    return ScoreRequest(clip=MediaPart(data=mp4_bytes(3.0)), age_group="adult")


def score_with_remote_extractor(
    service_settings: GatewaySettings, handle: FakeHandle
) -> tuple[object, float]:
    """Score a video through `extract_remotely` on `handle`: (what it raised or returned, seconds taken)."""

    async def remote(request, carrier, media_s, timeout_s):
        return await extract_remotely(handle, request, carrier, service_settings, media_s, timeout_s)

    async def scenario() -> tuple[object, float]:
        service = ScoringService(service_settings, remote)
        t0 = time.monotonic()
        try:
            result: object = await asyncio.wait_for(service.score(video_request(), protocol="http"), WAIT_S)
        except Exception as exc:
            result = exc
        await service.close()
        return result, time.monotonic() - t0

    return asyncio.run(scenario())


def test_a_video_whose_extraction_outlasts_the_budget_is_a_503_naming_the_budget():
    s = settings(features_timeout_s=15.0)  # its own deadline would let it run 15 s
    handle = FakeHandle(FakeResponse("never used", delay_s=30.0))
    error, took_s = score_with_remote_extractor(s, handle)
    assert isinstance(error, BudgetSpent), error
    assert status_of(error) == (503, "UNAVAILABLE") and error.retry_after_s == s.limits.retry_after_s
    assert "1 s time budget ran out in video feature extraction" in str(error)
    assert "proxy ends it at 1.5 s, the service is busy" in str(error)  # it read "2 s": whole seconds
    assert took_s < 5  # at its 1-s budget, well before its own 15-s deadline (a wide margin for slow CPUs)
    assert handle.response.cancelled  # and the extractor's work was abandoned with it
    assert handle.deadline - time.time() < 0  # the replica was told the capped deadline, which has passed


def test_a_stage_that_fails_on_its_own_deadline_keeps_its_own_reason():
    s = settings(request_timeout_s=30.0, features_timeout_s=0.2)
    error, _ = score_with_remote_extractor(s, FakeHandle(FakeResponse("never used", delay_s=30.0)))
    assert isinstance(error, FeaturesUnavailable) and "time budget" not in str(error)
    assert "did not finish within 2 s" in str(error)  # its own deadline: 0.5 s per second of the 3-s clip


def test_a_video_waiting_for_the_extractor_stops_waiting_at_the_budget():
    """The limiter's own wait (`max_video_wait_s`, 15 s) is longer than the budget: the budget ends it."""
    s = settings(limits={"max_video_seconds_in_flight": 4, "max_video_wait_s": 15.0})

    async def scenario() -> tuple[BaseException, float, int]:
        calls = []

        async def held(request, carrier, media_s, timeout_s):
            calls.append(timeout_s)  # held past its deadline: the extractor stays full for the second clip
            await asyncio.sleep(timeout_s + 1.0)
            raise FeaturesUnavailable("stand-in extractor: deadline reached", 2)

        service = ScoringService(s, held)
        first = asyncio.create_task(service.score(video_request(), protocol="http"))
        while not calls:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(BudgetSpent) as caught:  # 3 s + 3 s is over the 4 s in flight: it waits
            await asyncio.wait_for(service.score(video_request(), protocol="http"), WAIT_S)
        took_s = time.monotonic() - t0
        with pytest.raises(BudgetSpent):  # the first one was cut by its budget too
            await asyncio.wait_for(first, WAIT_S)
        await service.close()
        return caught.value, took_s, len(calls)

    error, took_s, calls = asyncio.run(scenario())
    assert "ran out" in str(error) and "feature extraction" in str(error)
    assert took_s < 5 and calls == 1  # not its 15-s wait; and it never reached the extractor


@pytest.mark.parametrize("parts", ["audio", "audio and landmarks"])
def test_a_light_upload_whose_budget_is_spent_is_refused_before_it_is_decoded(monkeypatch, parts):
    """Video was refused before decoding once its budget was spent; audio and landmark uploads were decoded
    first and refused only before inference, the decoding spent for nobody."""
    from preprocess_service import service as service_module

    decoded = []
    real_extract = service_module.extract

    def counting_extract(*args, **kwargs):
        decoded.append(1)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(service_module, "extract", counting_extract)
    wav, npz = audio_and_landmarks()
    request = ScoreRequest(audio=MediaPart(data=wav), age_group="adult")
    if parts == "audio and landmarks":
        request = ScoreRequest(audio=MediaPart(data=wav), landmarks=MediaPart(data=npz), age_group="adult")
    s = settings()

    async def scenario() -> BaseException:
        spent = RequestBudget(0.0, 3.0, asked=True)  # x-request-timeout-seconds: 3, less the 3-s margin
        return await budget_refusal(ScoringService(s), request, spent, WAIT_S)

    error = asyncio.run(scenario())
    assert "time budget ran out before decoding" in str(error) and not decoded
    assert status_of(error) == (503, "UNAVAILABLE") and error.retry_after_s == s.limits.retry_after_s


def test_a_silent_triton_is_answered_within_the_budget():
    """Triton accepts the connection and never answers: the call and the version reads around it give up
    at the budget, not at `triton_timeout_s`. The budget (5 s) leaves a loaded machine time to decode before
    it calls, and the Triton deadline (60 s) is far beyond the bound asserted (15 s), so only a call that
    ignores the budget fails this."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        s = settings(triton_url=url, triton_timeout_s=60.0, request_timeout_s=5.5)

        async def scenario() -> tuple[BaseException, float]:
            service = ScoringService(s)
            request = ScoreRequest(audio=MediaPart(data=wav_bytes(3.0)), age_group="adult")
            t0 = time.monotonic()
            with pytest.raises(BudgetSpent) as caught:
                await asyncio.wait_for(service.score(request, protocol="grpc"), 45.0)
            took_s = time.monotonic() - t0
            await service.close()
            return caught.value, took_s

        error, took_s = asyncio.run(scenario())
    assert "ran out waiting for inference" in str(error) and took_s < 15  # a call that ignores it ran 21 s


def test_hl7_delivery_attempts_stop_at_the_budget():
    """An interface engine that never ACKs: without a budget, 3 attempts of 5 s; with 0.5 s left, one short
    attempt, reported as a timeout (the score itself is still answered)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = mllp.MllpTarget(
            "127.0.0.1", silent.getsockname()[1], timeout_s=5.0, retries=2, backoff_s=0.1
        )
        t0 = time.monotonic()
        with pytest.raises(mllp.DeliveryError) as caught:
            asyncio.run(asyncio.wait_for(mllp.send(target, "MSH|^~\\&|", "id-1", 0.5), WAIT_S))
        took_s = time.monotonic() - t0
    assert caught.value.code == "TIMEOUT" and caught.value.attempts == 1 and took_s < 5  # not 3 x 5 s


def test_through_the_real_proxy_a_short_timeout_header_scores_and_one_below_the_minimum_is_a_400(
    gateway_stack,
):
    """Ray's own per-request header reaches the budget. 3 s kept a 3-s margin whole: the budget was spent from
    the start and every try a 503 + Retry-After (a loop); a quarter kept back, it is scored. Under 1 s it is
    refused before any work (400, no Retry-After); 0 (Ray: no limit) is scored."""
    files = {"audio": ("a.wav", wav_bytes(3.0))}
    short = post_score(gateway_stack, files=files, headers={"x-request-timeout-seconds": "3"})
    assert short.status_code == 200, short.text
    refused = post_score(gateway_stack, files=files, headers={"x-request-timeout-seconds": "0.5"})
    assert refused.status_code == 400 and refused.json()["error"] == "TimeoutTooShort", refused.text
    assert "minimum of 1 s" in refused.json()["detail"] and "Retry-After" not in refused.headers
    no_limit = {"x-request-timeout-seconds": "0"}  # Ray: no limit
    unbounded = post_score(gateway_stack, files=files, headers=no_limit)
    assert unbounded.status_code == 200, unbounded.text


def test_through_the_real_proxy_a_doubled_timeout_header_is_a_400(gateway_stack):
    """Ray's proxy hands the replica both values (it cut at the last, the budget read the first)."""
    import http.client
    import urllib.parse

    from urllib3 import encode_multipart_formdata

    body, ctype = encode_multipart_formdata({"audio": ("a.wav", wav_bytes(3.0))})
    url = urllib.parse.urlsplit(gateway_stack.http_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.putrequest("POST", "/v1/score")
        for name, value in [
            ("Authorization", f"Bearer {API_KEY}"),
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("x-request-timeout-seconds", "50"),
            ("x-request-timeout-seconds", "5"),
        ]:
            conn.putheader(name, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        status, answer = reply.status, json.loads(reply.read())
    finally:
        conn.close()
    assert status == 400 and answer["error"] == "DuplicateHeader", answer
