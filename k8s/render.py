"""Render a kustomization without kubectl: the subset of kustomize these manifests use.

CI machines may lack kubectl, yet every overlay must be rendered and validated in `make test`. This renders
`resources` (files and nested kustomizations), `namespace`, `labels` (metadata only), `images` and inline
JSON6902 `patches` targeted by kind/name — and raises on any other kustomization field, so a manifest can
never silently use a feature this renderer ignores. Where kubectl is installed, tests/deploy/test_k8s.py
checks that this renderer and `kubectl kustomize` produce the same objects.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
}
Doc = dict[str, Any]


class RenderError(ValueError):
    """The kustomization uses something this renderer does not implement, or a patch does not apply."""


def render(directory: str | Path) -> list[Doc]:
    """The objects `kubectl kustomize DIRECTORY` would print (order aside)."""
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise RenderError(
            f"{directory}: kustomization fields not supported by k8s/render.py: {sorted(unknown)}"
        )
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kustomization.get("patches", []):
        _apply_patch(docs, patch, directory)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for label_set in kustomization.get("labels", []):
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise RenderError("labels with includeSelectors/includeTemplates are not supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
    for image in kustomization.get("images", []):
        for doc in docs:
            _set_images(doc, image)
    return docs


def _apply_patch(docs: list[Doc], patch: dict[str, Any], directory: Path) -> None:
    if set(patch) - {"target", "patch"} or set(patch.get("target", {})) - {"kind", "name"}:
        raise RenderError(f"{directory}: only inline JSON6902 patches with a kind/name target are supported")
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise RenderError(f"{directory}: patch is not a JSON6902 operation list")
    target = patch["target"]
    matched = [
        d
        for d in docs
        if d["kind"] == target["kind"] and d["metadata"]["name"] == target.get("name", d["metadata"]["name"])
    ]
    if not matched:
        raise RenderError(f"{directory}: patch target {target} matches no resource")
    for doc in matched:
        for operation in operations:
            _json_patch(doc, operation)


def _json_patch(doc: Doc, operation: dict[str, Any]) -> None:
    """RFC 6902 add / replace / remove on a JSON pointer."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].lstrip("/").split("/")]
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last, op = parts[-1], operation["op"]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(parent, list):
        if op == "add":
            parent.insert(len(parent) if last == "-" else int(last), value)
        elif op == "replace":
            parent[int(last)] = value
        elif op == "remove":
            del parent[int(last)]
        else:
            raise RenderError(f"unsupported patch op {op!r}")
    else:
        if op == "replace" and last not in parent:
            raise RenderError(f"replace of missing path {operation['path']}")
        if op in ("add", "replace"):
            parent[last] = value
        elif op == "remove":
            del parent[last]
        else:
            raise RenderError(f"unsupported patch op {op!r}")


def _split_image(image: str) -> tuple[str, str]:
    """('registry/name', ':tag' or '@digest' or '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _set_images(node: Any, image: dict[str, str]) -> None:
    """kustomize's images transformer: every containers/initContainers entry at any depth, CRDs included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    name, suffix = _split_image(container.get("image", ""))
                    if name == image["name"]:
                        if "digest" in image:
                            suffix = "@" + image["digest"]
                        elif "newTag" in image:
                            suffix = ":" + image["newTag"]
                        container["image"] = image.get("newName", name) + suffix
            else:
                _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def kustomization_arg(prog: str, description: str, argv: list[str] | None) -> Path | None:
    """The kustomization folder a k8s/ tool was given (`--help` works), or None after saying in one line
    why it is not one (the tool then exits 2)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("dir", type=Path, help="a kustomization folder, e.g. k8s/overlays/gpu")
    folder = parser.parse_args(argv).dir
    if (folder / "kustomization.yaml").is_file():
        return folder
    print(f"{prog}: {folder} holds no kustomization.yaml (e.g. k8s/overlays/gpu)", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    folder = kustomization_arg("k8s/render.py", __doc__.splitlines()[0], argv)
    if folder is None:
        return 2
    print(yaml.safe_dump_all(render(folder), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
