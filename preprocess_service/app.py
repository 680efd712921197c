"""The Ray Serve application builder named by serve_config.yaml (`preprocess_service.app:build_app`).

Both `avpenet serve` and the k8s RayService deploy it; the deployments live in deployments.py. The gRPC proxy
routes `/avpenet.v1.Scoring/<Method>` and `/grpc.health.v1.Health/Check` to the Gateway method of the same
name; reflection is Ray's own.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from preprocess_service.deployments import FeatureExtractor, Gateway
from preprocess_service.settings import GatewaySettings

__all__ = ["FeatureExtractor", "Gateway", "build_app"]


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Application builder for serve_config.yaml; `args` = GatewaySettings fields (AVPENET_* env wins)."""
    # Validated here, so a bad config fails the deploy, not the first request.
    settings = GatewaySettings.load(args)
    extractor = FeatureExtractor.bind(settings.limits.model_dump())
    return Gateway.bind(extractor, dict(args or {}))
