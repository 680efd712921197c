"""A Gateway replica's Ray cap (`max_ongoing_requests`) holds its streams, its admitted requests and headroom
(`serve_config.check_capacity`), so the gateway's own limits are what refuse, with their reasons. The real
stack holding every stream it may: tests/gateway/test_stream_capacity.py."""

from __future__ import annotations

import pytest

from preprocess_service import serve_config
from preprocess_service.serve_config import GATEWAY, GATEWAY_HEADROOM
from preprocess_service.settings import GatewaySettings
from preprocess_service.stream.limits import StreamLimits


def _gateway(config: dict) -> dict:
    (app,) = config["applications"]
    return next(d for d in app["deployments"] if d["name"] == GATEWAY)


def localized(config: dict, **kwargs) -> dict:
    return serve_config.localize(
        config, host="127.0.0.1", http_port=1, grpc_port=2, triton_url="x:1", **kwargs
    )


def test_the_committed_config_holds_every_stream_and_admitted_request_with_headroom():
    config = serve_config.load_config()
    serve_config.check_capacity(config)  # and so the k8s RayService, generated from it
    (app,) = config["applications"]
    limits, streams = app["args"]["limits"], app["args"].get("streams", {})
    need = streams.get("max_streams", StreamLimits().max_streams) + limits["max_in_flight"] + GATEWAY_HEADROOM
    settings = GatewaySettings.load(app["args"], {})
    assert _gateway(config)["max_ongoing_requests"] >= need == serve_config.gateway_slots(settings)


def test_a_gateway_that_open_streams_would_fill_is_refused_with_the_cap_it_needs():
    config = serve_config.load_config()
    _gateway(config)["max_ongoing_requests"] = 32  # the former value: 32 streams stalled the replica
    with pytest.raises(ValueError, match="'Gateway' max_ongoing_requests 32 .* set it to 112"):
        serve_config.check_capacity(config)
    del _gateway(config)["max_ongoing_requests"]  # unset: the deployment's own default, which suffices
    serve_config.check_capacity(config)


def test_a_burst_of_connections_the_replica_holds_is_never_refused_by_rays_queue_bound():
    """Connections arriving together queue in Ray's router for an instant even when the replica has room;
    past `max_queued_requests` Ray refuses them, a WebSocket with HTTP 500 at the upgrade. The committed
    bound was 64 under a replica holding 112: of 68 monitors opening at once, 2 got HTTP 500 (a flake of
    test_stream_capacity) instead of the gateway's over_limit reason."""
    config = serve_config.load_config()
    gateway = _gateway(config)
    assert gateway["max_queued_requests"] >= gateway["max_ongoing_requests"]
    gateway["max_queued_requests"] = 64  # the former value
    with pytest.raises(ValueError, match="max_queued_requests 64 is under its max_ongoing_requests 112"):
        serve_config.check_capacity(config)
    del gateway["max_queued_requests"]  # unset: Ray's default, unbounded
    serve_config.check_capacity(config)


def test_a_machine_raising_the_stream_limit_raises_the_gateways_cap_with_it():
    config = serve_config.load_config()
    args = {"streams": {"max_streams": 256}}
    with pytest.raises(ValueError, match="set it to 304"):
        localized(config, args=args)
    with pytest.raises(ValueError, match="max_queued_requests 112 is under its max_ongoing_requests 304"):
        localized(config, args=args, deployments={GATEWAY: {"max_ongoing_requests": 304}})
    raised = serve_config.gateway_deployments(args)
    assert raised == {GATEWAY: {"max_ongoing_requests": 304, "max_queued_requests": 304}}
    out = localized(config, args=args, deployments=raised)
    assert _gateway(out)["max_ongoing_requests"] == 304
    assert _gateway(config).get("max_ongoing_requests") == 112  # the caller's config is left as it was
    extractor = next(d for d in out["applications"][0]["deployments"] if d["name"] != GATEWAY)
    assert extractor["max_ongoing_requests"] == 64  # options go to the deployment they name only


def test_the_gateway_deployments_own_default_is_the_one_the_check_assumes():
    from preprocess_service.deployments import Gateway

    assert Gateway.name == GATEWAY
    assert Gateway.max_ongoing_requests == serve_config.GATEWAY_MAX_ONGOING_REQUESTS


def test_the_bench_raises_the_gateways_cap_with_its_admission_bound():
    from loadtests import bench

    limits = bench.stack_limits()  # max_in_flight 64: the bench's 32 clients are never refused 429
    deployments = bench.stack_deployments(limits)
    need = StreamLimits().max_streams + limits["max_in_flight"] + GATEWAY_HEADROOM
    assert deployments == {GATEWAY: {"max_ongoing_requests": need, "max_queued_requests": need}}
    localized(serve_config.load_config(), args={"limits": limits}, deployments=deployments)


def test_a_replica_checks_the_rule_again_with_its_pods_environment():
    """The config file passes, but AVPENET_MAX_IN_FLIGHT in a pod's environment (read only by the replica)
    would let streams fill its slots: the Gateway replica refuses to start with the value to set."""
    (app,) = serve_config.load_config()["applications"]
    serve_config.check_slots(GatewaySettings.load(app["args"], {}), 112)
    pod = GatewaySettings.load(app["args"], {"AVPENET_MAX_IN_FLIGHT": "200"})
    with pytest.raises(ValueError, match="limits.max_in_flight 200 .* set it to 296"):
        serve_config.check_slots(pod, 112)
