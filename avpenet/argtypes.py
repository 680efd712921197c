"""argparse types the subcommands share, so a count of 0 or a negative rate is refused when it is parsed,
with the flag's name, and not as a traceback from torch, range() or a half-written repository later."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of 1 or more (threads, workers, batch size, epochs, versions kept)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)
