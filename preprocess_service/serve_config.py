"""serve_config.yaml, the gateway's Serve config (the file KubeRay deploys), and its local overrides.

`localize` is all a machine changes in it: hosts, ports, the Triton address, replica caps and app args;
`check_timeouts` refuses a config whose gateway would be cut off by its own proxy, or whose replicas a drain
would stop before the requests they hold are due; `check_capacity` one whose Gateway replica Ray would stop
routing to, or whose connections it would refuse, before the gateway's own limits answer.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from preprocess_service.settings import GatewaySettings

CONFIG_PATH = Path(__file__).resolve().parent / "serve_config.yaml"
RAY_DRAIN_DEFAULT_S = 20.0  # Ray Serve's graceful_shutdown_timeout_s when a deployment sets none
RAY_UNBOUNDED_QUEUE = -1  # Ray Serve's max_queued_requests when a deployment sets none
GATEWAY = "Gateway"  # the ingress deployment (deployments.py)
GATEWAY_MAX_ONGOING_REQUESTS = 112  # the Gateway's max_ongoing_requests where a config sets none
# Requests a Gateway replica holds beside its admitted ones and its streams: liveness/readiness probes,
# /metrics scrapes, uploads whose body is still arriving (admission comes after it), WebSockets before their
# start message, and refusals (429, 4429) being answered.
GATEWAY_HEADROOM = 32


def load_config(path: str | os.PathLike = CONFIG_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def localize(
    config: Mapping[str, Any],
    *,
    host: str,
    http_port: int,
    grpc_port: int | None,
    triton_url: str,
    max_replicas: int = 1,
    args: Mapping[str, Any] | None = None,
    deployments: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Serve config with this machine's hosts, ports, Triton address, replica caps, app args and
    deployment options by name (nothing else); ValueError when it fails `check_timeouts` or
    `check_capacity`."""
    out = copy.deepcopy(dict(config))
    out["proxy_location"] = "HeadOnly"
    out["http_options"] = {**out.get("http_options", {}), "host": host, "port": http_port}
    if grpc_port is None:
        out["grpc_options"] = {**out.get("grpc_options", {}), "grpc_servicer_functions": []}
    else:
        out["grpc_options"] = {**out.get("grpc_options", {}), "port": grpc_port}
    for app in out["applications"]:
        app["args"] = {
            **app.get("args", {}),
            "triton_url": triton_url,
            "bind_host": host,
            "grpc_enabled": grpc_port is not None,
            **dict(args or {}),
        }
        for dep in app.get("deployments", []):
            dep.update(copy.deepcopy(dict((deployments or {}).get(dep.get("name"), {}))))
            scaling = dep.get("autoscaling_config")
            if scaling:
                scaling["max_replicas"] = max(
                    scaling.get("min_replicas", 1), min(scaling["max_replicas"], max_replicas)
                )
    check_timeouts(out)
    check_capacity(out)
    return out


def check_capacity(config: Mapping[str, Any]) -> None:
    """The Gateway's `max_ongoing_requests` must hold `streams.max_streams` + `limits.max_in_flight` +
    GATEWAY_HEADROOM. A WebSocket holds one of Ray's request slots for as long as its stream runs, so below
    that, open streams fill the replica: Ray then queues every request to it, probes included, until a
    stream ends, and neither the 429 of admission nor the 4429 of the stream limit is ever answered."""
    for app in config.get("applications", []):
        gateway = next((d for d in app.get("deployments", []) if d.get("name") == GATEWAY), None)
        if gateway is None:
            continue
        held = gateway.get("max_ongoing_requests", GATEWAY_MAX_ONGOING_REQUESTS)
        where = f"app {app.get('name')!r}: "
        check_slots(GatewaySettings.load(app.get("args"), environ={}), held, where)
        check_queue(held, gateway.get("max_queued_requests", RAY_UNBOUNDED_QUEUE), where)


def check_slots(settings: GatewaySettings, held: int, where: str = "") -> None:
    """`check_capacity`'s rule for one Gateway: at deploy on the config's args, and again in each replica
    on its settings with its pod's AVPENET_* environment (deployments.Gateway), which the config omits."""
    if held < (need := gateway_slots(settings)):
        raise ValueError(
            f"{where}deployment {GATEWAY!r} max_ongoing_requests {held} is under streams.max_streams "
            f"{settings.streams.max_streams} + limits.max_in_flight {settings.limits.max_in_flight} + "
            f"{GATEWAY_HEADROOM} (probes, uploads still arriving, refusals): open streams would leave the "
            f"replica no slot to answer in; set it to {need}"
        )


def check_queue(held: int, queued: int, where: str = "") -> None:
    """The Gateway's `max_queued_requests` must take a burst of as many connections as one replica holds:
    Ray's router counts every request not yet handed to a replica as queued, so connections arriving
    together (a ward's monitors reconnecting after a network blip) queue for an instant even when the replica
    has room, and past the bound Ray refuses them. An upload then gets 503, but a WebSocket gets HTTP 500 at
    the upgrade with no reason (Ray 2.60's proxy sends an HTTP answer on a WebSocket scope): 23 of 60
    simultaneous handshakes to a replica with room for all, under a bound of 4."""
    if queued != RAY_UNBOUNDED_QUEUE and queued < held:
        raise ValueError(
            f"{where}deployment {GATEWAY!r} max_queued_requests {queued} is under its max_ongoing_requests "
            f"{held}: connections arriving together that the replica could hold would be refused by Ray's "
            f"router (a WebSocket with HTTP 500 at the upgrade); set it to at least {held}"
        )


def gateway_slots(settings: GatewaySettings) -> int:
    """The fewest `max_ongoing_requests` a Gateway replica with these settings needs (`check_slots`)."""
    return settings.streams.max_streams + settings.limits.max_in_flight + GATEWAY_HEADROOM


def gateway_deployments(args: Mapping[str, Any], path: str | os.PathLike = CONFIG_PATH) -> dict[str, Any]:
    """`localize`'s `deployments` for a stack whose app args raise the gateway's limits: the Gateway's cap
    raised with them (the config's app args with `args` laid over them, as `localize` lays them)."""
    (app,) = load_config(path)["applications"]
    settings = GatewaySettings.load({**app.get("args", {}), **args}, environ={})
    slots = gateway_slots(settings)
    return {GATEWAY: {"max_ongoing_requests": slots, "max_queued_requests": slots}}


def check_timeouts(config: Mapping[str, Any]) -> None:
    """Each app's `request_timeout_s` (GatewaySettings: the time budget it answers within, budget.py) may not
    exceed a proxy's: the proxy would cut requests off before the gateway gives its reason. Nor may it exceed
    a deployment's graceful_shutdown_timeout_s: a drain (scale-down, redeploy, a node leaving, a local stop)
    kills a replica that long after it began, with the requests it still holds."""
    for app in config.get("applications", []):
        budget_s = app.get("args", {}).get("request_timeout_s", GatewaySettings().request_timeout_s)
        for dep in app.get("deployments", []):
            drain_s = dep.get("graceful_shutdown_timeout_s", RAY_DRAIN_DEFAULT_S)
            if drain_s < budget_s:
                raise ValueError(
                    f"app {app.get('name')!r}: deployment {dep.get('name')!r} graceful_shutdown_timeout_s "
                    f"{drain_s:g} s is under args.request_timeout_s {budget_s} s: a drain would cut requests "
                    "still within their budget; set it to at least that"
                )
        for proxy in ("http_options", "grpc_options"):
            cut_s = config.get(proxy, {}).get("request_timeout_s")
            if cut_s is not None and 0 < cut_s < budget_s:
                raise ValueError(
                    f"app {app.get('name')!r}: args.request_timeout_s {budget_s} s exceeds "
                    f"{proxy}.request_timeout_s {cut_s} s; set them equal"
                )
