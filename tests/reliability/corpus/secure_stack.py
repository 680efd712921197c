"""A second gateway stack in its own process, configured the way a hospital deploys it: HTTPS in, API keys
from a file (re-read on change), TLS toward Triton. Used by tests/reliability/test_security.py.

A process can hold one Ray cluster, and the session's stack already holds this one, so the secure stack runs
as `python -m corpus.secure_stack CONFIG.json`: it prints one JSON line with its ports when it is serving and
stops cleanly when its stdin closes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import yaml


def main(config_path: str) -> int:
    from preprocess_service.stack import CONFIG_PATH, LocalStack, load_config

    cfg = json.loads(Path(config_path).read_text())
    serve_config = load_config(CONFIG_PATH)
    serve_config["http_options"].update(ssl_certfile=cfg["certfile"], ssl_keyfile=cfg["keyfile"])
    with tempfile.TemporaryDirectory(prefix="avpenet-secure-") as tmp:
        path = Path(tmp) / "serve_config.yaml"
        path.write_text(yaml.safe_dump(serve_config))
        args = {
            "api_keys_file": cfg["api_keys_file"],
            "triton_ssl": True,
            "triton_root_certificates": cfg["triton_root_certificates"],
        }
        triton = SimpleNamespace(grpc_url=cfg["triton_grpc_url"])
        with LocalStack(triton=triton, config_path=path, args=args) as stack:
            print(json.dumps({"http_port": stack.http_port, "grpc_port": stack.grpc_port}), flush=True)
            sys.stdin.read()  # serve until the test closes our stdin
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
