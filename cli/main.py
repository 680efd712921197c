"""The `avpenet` command's dispatcher. Each subcommand lives in the module that owns its work and is imported
only when called, so `avpenet --help` stays fast and `avpenet synth` never loads Triton or Ray.

A subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.

What a user gets wrong (a path that is missing or is a folder, a file that is not what the command reads, a
URL without its scheme, a value out of range) ends in one line naming it and exit code 2, not a traceback:
the errors a subcommand does not explain itself (OSError, ValueError and its subclasses such as the input
and labels errors) are caught here (avpenet.user_errors). AVPENET_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from avpenet import native_logs
from avpenet.user_errors import exit_code

COMMANDS: dict[str, str] = {
    "synth": "avpenet.synth.cli",
    "features": "avpenet.features.cli",
    "train": "avpenet.train",
    "evaluate": "avpenet.evaluate",
    "calibrate": "avpenet.calibrate",
    "export": "ensemble.export",
    "quantize": "ensemble.quantize",
    "triton": "ensemble.server",
    "serve": "preprocess_service.serve",
    "score": "preprocess_service.client",
    "monitor": "cli.monitor",
    "demo": "cli.demo",
    "loadtest": "loadtests.run",
    "bench": "loadtests.bench",
    "soak": "loadtests.soak",
    "stream-bench": "loadtests.streams",
}


def _load(name: str):
    return importlib.import_module(COMMANDS[name])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="avpenet", description="AVPENet Serve: pain estimation from non-verbal sounds and the face."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name in COMMANDS:
        if name == chosen:
            module = _load(name)
            module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
        else:
            sub.add_parser(name, add_help=False, help=f"(see avpenet {name} --help)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    quiet = getattr(args, "quiet", False)  # and the C++ lines mediapipe prints (avpenet.native_logs)
    with native_logs.hiding() if quiet else contextlib.nullcontext():
        return exit_code(f"avpenet {args.command}", lambda: _load(args.command).run(args))


if __name__ == "__main__":
    sys.exit(main())
