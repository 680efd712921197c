"""Offline schema validation of rendered manifests, each kind against the most authoritative schema at hand.

No API server can run in CI, so every object is checked against the schema its owner publishes:

- built-in kinds (Deployment, Service, Ingress, NetworkPolicy, PDB, HPA, ConfigMap, ...): kubernetes-validate,
  strict;
- RayService (ray.io/v1): KubeRay's own CRD schema of releases 1.5.1 and 1.7.0 (k8s/schemas/kuberay/);
- ServiceMonitor, PodMonitor, PrometheusRule: cloudcoil-models-prometheus-operator (models generated from the
  prometheus-operator CRDs);
- Certificate, Issuer, ClusterIssuer: cloudcoil-models-cert-manager (generated from cert-manager's CRDs).

A CRD schema leaves unknown fields to the API server, which prunes them silently; here every object schema
is closed (`additionalProperties: false` unless the CRD says `x-kubernetes-preserve-unknown-fields`), so a
misspelt field fails as `kubectl apply --validate=strict` would. The KubeRay files are the `v1`
openAPIV3Schema of `ray-operator/config/crd/bases/ray.io_rayservices.yaml` at the release tags (Apache-2.0),
unchanged. Usage: `.venv/bin/python k8s/validate.py k8s/overlays/gpu` (exit 1 and one line per error).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

K8S_VERSION = "1.31"  # the Kubernetes version the manifests are validated for (docs/DEPLOY.md)
KUBERAY_VERSIONS = ("1.5.1", "1.7.0")  # the oldest KubeRay with Ray token auth (authOptions), the newest
SCHEMAS = Path(__file__).resolve().parent / "schemas"
Doc = dict[str, Any]


def closed(schema: Any) -> Any:
    """A copy of a JSON schema in which every object with declared properties rejects undeclared ones."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def kuberay_validator(version: str) -> jsonschema.Validator:
    schema = json.loads((SCHEMAS / "kuberay" / f"rayservice-kuberay-{version}.json").read_text())
    return jsonschema.Draft7Validator(closed(schema))


@functools.cache
def model_validator(kind: str) -> jsonschema.Validator:
    """The closed JSON schema of the cloudcoil (pydantic) model of a prometheus-operator/cert-manager kind."""
    from cloudcoil.models.cert_manager import v1 as cert_manager
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    model = {
        "ServiceMonitor": prometheus_operator.ServiceMonitor,
        "PodMonitor": prometheus_operator.PodMonitor,
        "PrometheusRule": prometheus_operator.PrometheusRule,
        "Certificate": cert_manager.Certificate,
        "Issuer": cert_manager.Issuer,
        "ClusterIssuer": cert_manager.ClusterIssuer,
    }[kind]
    schema = model.model_json_schema(by_alias=True)
    return jsonschema.Draft202012Validator(closed(schema))


CUSTOM_KINDS = {
    "RayService": "KubeRay CRD " + " + ".join(KUBERAY_VERSIONS),
    "ServiceMonitor": "cloudcoil-models-prometheus-operator",
    "PodMonitor": "cloudcoil-models-prometheus-operator",
    "PrometheusRule": "cloudcoil-models-prometheus-operator",
    "Certificate": "cloudcoil-models-cert-manager",
    "Issuer": "cloudcoil-models-cert-manager",
    "ClusterIssuer": "cloudcoil-models-cert-manager",
}


def _explain(error: jsonschema.ValidationError) -> str:
    """The most specific cause (anyOf/oneOf unions nest the real one), kept to one readable line."""
    while error.context:  # the branch that got furthest into the document, not the `null` alternative
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    message = error.message if len(error.message) < 200 else error.message[:200] + "..."
    return f"{error.json_path}: {message}"


def errors(doc: Doc) -> Iterator[str]:
    """Every schema violation of one object, as 'Kind/name: path: message' lines (none when valid)."""
    kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
    where = f"{kind}/{name}"
    if kind == "RayService":
        for version in KUBERAY_VERSIONS:
            for error in kuberay_validator(version).iter_errors(doc):
                yield f"{where}: KubeRay {version}: {_explain(error)}"
    elif kind in CUSTOM_KINDS:
        # The metadata of the generated models is not the interesting part (and lags Kubernetes); spec is.
        spec_only = {**doc, "metadata": {"name": name}}
        for error in model_validator(kind).iter_errors(spec_only):
            yield f"{where}: {CUSTOM_KINDS[kind]}: {_explain(error)}"
    else:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            yield f"{where}: Kubernetes {K8S_VERSION}: {error}"


def validate_all(docs: list[Doc]) -> list[str]:
    return [line for doc in docs for line in errors(doc)]


def main(argv: list[str] | None = None) -> int:
    from render import kustomization_arg, render  # k8s/render.py, beside this file

    folder = kustomization_arg("k8s/validate.py", __doc__.splitlines()[0], argv)
    if folder is None:
        return 2
    docs = render(folder)
    bad = validate_all(docs)
    for line in bad:
        print(line, file=sys.stderr)
    print(f"{len(docs)} objects, {len(bad)} errors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
