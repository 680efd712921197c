"""argparse types the subcommands share, so a count of 0 or a negative rate is refused when it is parsed,
with the flag's name, and not as a traceback from torch, range() or a half-written repository later."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def count(text: str, least: int = 0) -> int:
    """A whole number of at least `least` (retries: 0 or more)."""
    if not text.strip().isdigit() or int(text) < least:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {least} or more")
    return int(text)


def positive_int(text: str) -> int:
    """A whole number of 1 or more (threads, workers, batch size, epochs, versions kept)."""
    return count(text, least=1)


def _comma_list(text: str, item: Callable[[str], T]) -> list[T]:
    """Each non-empty part of a comma list, checked by `item`."""
    return [item(part) for part in text.split(",") if part.strip()]


def positive_ints(text: str) -> list[int]:
    """A comma list of positive_int, e.g. 1,8,32 (concurrencies)."""
    return _comma_list(text, positive_int)


def counts(text: str) -> list[int]:
    """A comma list of count, e.g. 0,1 (thread settings, where 0 is the library's default)."""
    return _comma_list(text, count)


def _number(text: str, holds: Callable[[float], bool], what: str) -> float:
    """`text` as a finite float for which `holds` is true, else refused as not `what`."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and holds(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_number(text: str) -> float:
    """A finite number above 0 (rates, measured seconds)."""
    return _number(text, lambda v: v > 0, "a number above 0")


def non_negative_number(text: str) -> float:
    """A finite number of 0 or more (loss weights, weight decay)."""
    return _number(text, lambda v: v >= 0, "a number of 0 or more")


def positive_numbers(text: str) -> list[float]:
    """A comma list of positive_number, e.g. 10,30,60 (arrival rates)."""
    return _comma_list(text, positive_number)


def share(text: str) -> float:
    """A finite number from 0 to 1 (the share of clips an augmentation draws)."""
    return _number(text, lambda v: 0 <= v <= 1, "a share from 0 to 1")


def seconds_from(least: float, why: str) -> Callable[[str], float]:
    """The type of a length in seconds of at least `least`, `why` said when refused (a bench stream shorter
    than one scoring window measures nothing)."""

    def seconds(text: str) -> float:
        return _number(text, lambda v: v >= least, f"a number of {least:g} seconds or more: {why}")

    return seconds


def port(text: str) -> int:
    """A TCP port, 1 to 65535, or 0: a free one is picked (`avpenet triton`, `avpenet serve`)."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535, or 0 for a free one)")
    return int(text)
