"""The test process's `ast.parse` lock (tests/support/cpython_ast.py) holds against the race it is for.

Each case runs the race in a subprocess: eight threads parse a large module's source while a garbage-collector
callback does Python work (GC inside a parse is where CPython 3.11.7 switched threads mid-build), until one
fails or the time is up. Unguarded, the race shows on an affected interpreter (in 0.1-0.7 s on the build box,
on both cores or pinned to one, a test run beside it; the case allows 10 s), so the guarded case passing
means the lock, not luck.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import cpython_ast

SUPPORT = Path(__file__).resolve().parent / "support"
RACE = """
import ast, difflib, gc, pathlib, sys, threading, time
sys.path.insert(0, sys.argv[1])
import cpython_ast
if sys.argv[2] == "guarded":
    assert cpython_ast.serialise_ast_parse()
gc.callbacks.append(lambda phase, info: list(difflib.unified_diff(list("abcdefgh" * 6), list("hgfedcb" * 6))))
source = pathlib.Path(ast.__file__).read_text()
errors, stop = [], time.monotonic() + float(sys.argv[3])
def work():
    while time.monotonic() < stop and not errors:
        try:
            ast.parse(source)
        except SystemError as exc:
            errors.append(exc)
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(repr(errors[0]) if errors else "no error")
"""


def _race(mode: str, seconds: float) -> str:
    done = subprocess.run(
        [sys.executable, "-c", RACE, str(SUPPORT), mode, str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.skipif(not cpython_ast.affected(), reason="this interpreter's AST builder does not race")
def test_unguarded_parses_race_on_this_interpreter() -> None:
    assert "recursion depth mismatch" in _race("unguarded", 10)


@pytest.mark.skipif(not cpython_ast.affected(), reason="this interpreter's AST builder does not race")
def test_guarded_parses_do_not_race() -> None:
    assert _race("guarded", 2) == "no error"


def test_the_test_process_parses_under_the_lock() -> None:
    import ast

    assert getattr(ast.parse, cpython_ast._MARK, False) == cpython_ast.affected()
    assert ast.literal_eval("{'descr': '<f4', 'shape': (2, 3)}") == {"descr": "<f4", "shape": (2, 3)}


@pytest.mark.parametrize(
    ("version", "races"),
    [((3, 11, 7), True), ((3, 11, 8), False), ((3, 12, 1), True), ((3, 12, 2), False), ((3, 13, 0), False)],
)
def test_which_interpreters_race(version: tuple[int, int, int], races: bool) -> None:
    assert cpython_ast.affected(version) is races
