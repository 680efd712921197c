"""One `ast.parse` at a time in the test process, on the CPython releases whose AST builder races.

CPython 3.11 before 3.11.8 (and 3.12 before 3.12.2) counts the AST builder's recursion depth in
interpreter-wide state (CPython issue gh-106905): when two threads build ASTs at once, one of them fails with
"SystemError: AST constructor recursion depth mismatch". pytest parses a test module's source to format a
failure, and threads of the same process parse too (numpy reads every .npy header with `ast.literal_eval`;
Python 3.11's traceback module parses the failing line of every traceback it formats, a server thread's
logged exception among them). A failing test then ended the whole run as an INTERNALERROR with no summary
of which tests failed (seen on a run of `make test` whose one failure was a test's own bug).

The gateway guards its own `.npy` header parses (avpenet/features/track.py `_HEADER_LOCK`); this makes every
`ast.parse` of the test process (pytest's, the traceback module's, `ast.literal_eval`'s) take one lock.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading

_MARK = "_avpenet_serialised"


def affected(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> bool:
    """Whether this interpreter builds ASTs under the shared counter (fixed in 3.11.8 and 3.12.2)."""
    return version < (3, 11, 8) or (3, 12) <= version < (3, 12, 2)


def serialise_ast_parse() -> bool:
    """Wrap `ast.parse` in one process-wide lock on an affected interpreter; True when it wrapped it now.

    Reentrant: a garbage-collector callback run inside a parse may parse again on the same thread."""
    if not affected() or getattr(ast.parse, _MARK, False):
        return False
    original = ast.parse
    lock = threading.RLock()

    @functools.wraps(original)
    def parse(*args, **kwargs):
        with lock:
            return original(*args, **kwargs)

    setattr(parse, _MARK, True)
    ast.parse = parse
    return True
