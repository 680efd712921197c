"""One line and exit 2 for what a user got wrong, shared by `avpenet` and the `python -m` tools beside it.

The errors a command does not explain itself (OSError, ValueError and its subclasses such as the input and
labels errors, and a face model that is missing, mismatched or unreadable: FaceModelError) end in one line
naming what was wrong, not a traceback; AVPENET_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from avpenet.errors import FaceModelError


def reason(exc: BaseException) -> str:
    """One line for a user: an OSError names its file ("No such file or directory: runs/x/config.json")."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def exit_code(prog: str, command: Callable[[], int | None]) -> int:
    """Run `command`; a user error is printed as "prog: reason" and returns 2."""
    try:
        return int(command() or 0)
    except (OSError, ValueError, FaceModelError) as exc:
        if os.environ.get("AVPENET_DEBUG"):
            raise
        print(f"{prog}: {reason(exc)}", file=sys.stderr)
        return 2
