"""serve_config.yaml, the gateway's Serve config (the file KubeRay deploys), and its local overrides.

`localize` is all a machine changes in it: hosts, ports, the Triton address, replica caps and app args;
`check_timeouts` refuses a config whose gateway would be cut off by its own proxy, or whose replicas a drain
would stop before the requests they hold are due.
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
) -> dict[str, Any]:
    """The Serve config with this machine's hosts, ports, Triton address and replica caps (nothing else);
    ValueError when it fails `check_timeouts`."""
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
            scaling = dep.get("autoscaling_config")
            if scaling:
                scaling["max_replicas"] = max(
                    scaling.get("min_replicas", 1), min(scaling["max_replicas"], max_replicas)
                )
    check_timeouts(out)
    return out


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
