"""The `/v1/stream` reference in preprocess_service/README.md against the code, so a client written from the
doc alone gets what the server sends: every event type with its fields and a JSON example, every `error` code
with its close, every close code, every start and config field with its default and bounds.

The events and codes are read from the stream package's source (`ast`): dict literals with a `type` (and an
error's `code`), `StreamRejected(code, ...)`, and the refusals (`Session.fail`, `route._refuse*`) with their
close codes. A code, an event field or a start field added to the code without its row in the README fails
here, as does a row the code no longer has.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from preprocess_service.stream import protocol, route
from preprocess_service.stream.protocol import EVENT_TYPES, Start, StreamConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "preprocess_service" / "README.md").read_text()
PACKAGE = ROOT / "preprocess_service" / "stream"
CLIENT_SIDE = {"client.py", "replay.py"}  # they build start messages, not events
# Fields an event gets outside its dict literal: session._score adds lag_s and model_version to a score,
# alerts.feed its no_signal, _score_event unpacks age_read; not_processed unpacks its counts per kind.
ADDED = {"score": {"no_signal", "lag_s", "model_version", "age_read"}, "error": {"audio", "frame"}}
REFUSALS = {"fail": (0, 2), "_refuse": (2, 3), "_refuse_reconnect": (3, 4)}  # (close arg, code arg)


def _resolve(node: ast.AST, module, local: dict[str, list[ast.AST]]) -> set:
    """The constants a node can be: a literal, a module's constant (poison.FATAL), or what a local name is
    assigned (a conditional's branches); empty when it is only known at run time (exc.code)."""
    if isinstance(node, ast.Constant):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _resolve(node.body, module, local) | _resolve(node.orelse, module, local)
    if isinstance(node, ast.Name) and node.id in local:
        return set().union(*(_resolve(v, module, {}) for v in local[node.id]))
    if isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), str | int):
        return {getattr(module, node.id)}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        value = getattr(getattr(module, node.value.id, None), node.attr, None)
        return {value} if isinstance(value, str | int) else set()
    return set()


def _functions(tree: ast.Module):
    """(function, its local assignments) for every function, and the module body as one."""
    for fn in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]:
        local: dict[str, list[ast.AST]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and fn is not tree:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        local.setdefault(target.id, []).append(node.value)
        yield fn, local


def _event(node: ast.Dict, module, local, fields: dict, codes: dict) -> None:
    """A dict literal with a `type`: an event, its fields (and an error's code)."""
    keys = {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}
    for kind in _resolve(keys.get("type", ast.Pass()), module, local):
        if isinstance(kind, str) and not kind.startswith("websocket."):  # an ASGI message, not an event
            fields.setdefault(kind, set()).update(k for k in keys if isinstance(k, str))
            if kind == "error" and "code" in keys:
                for code in _resolve(keys["code"], module, local):
                    codes.setdefault(code, set())


def _refusal(node: ast.Call, module, local, codes: dict) -> None:
    """`StreamRejected(code, ...)`, or a refusal with its close code (`fail`, `_refuse`...)."""
    name = getattr(node.func, "attr", getattr(node.func, "id", None))
    if name == "StreamRejected" and node.args:
        for code in _resolve(node.args[0], module, local):
            codes.setdefault(code, set())
    elif name in REFUSALS and len(node.args) > max(REFUSALS[name]):
        close_at, code_at = REFUSALS[name]
        closes = _resolve(node.args[close_at], module, local)
        for code in _resolve(node.args[code_at], module, local):
            codes.setdefault(code, set()).update(closes)


def scan() -> tuple[dict[str, set[str]], dict[str, set[int]]]:
    """({event type: its fields}, {error code: the close codes that follow it, empty when none})."""
    fields: dict[str, set[str]] = {}
    codes: dict[str, set[int]] = {code: {close} for code, close in route.REFUSAL_CLOSES.items()}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in CLIENT_SIDE:
            continue
        module = importlib.import_module(f"preprocess_service.stream.{path.stem}")
        for fn, local in _functions(ast.parse(path.read_text())):
            for node in ast.walk(fn):
                if isinstance(node, ast.Dict):
                    _event(node, module, local, fields, codes)
                elif isinstance(node, ast.Call):
                    _refusal(node, module, local, codes)
    for kind, more in ADDED.items():
        fields[kind] |= more
    return fields, codes


FIELDS, CODES = scan()


def section(heading: str) -> str:
    """The README's text under `heading` (a whole heading line), up to the next heading of its level or
    above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = README.splitlines()
    assert heading in lines, f"README has no heading {heading!r}"
    out = []
    for line in lines[lines.index(heading) + 1 :]:
        if re.match(rf"#{{1,{level}}} ", line):
            break
        out.append(line)
    return "\n".join(out)


def table(text: str) -> dict[str, list[str]]:
    """The rows of the markdown tables in `text`, keyed by each backticked name in their first cell (one row
    may document `start_s`, `end_s`)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]) if line.startswith("|") else ():
            rows[name] = cells[1:]
    return rows


def test_the_scan_sees_what_the_stream_sends():
    """The scan reads the code it is meant to (a broken scan would pass every table)."""
    assert set(FIELDS) == set(EVENT_TYPES)
    assert {"interval_90", "model_version", "scaled"} <= FIELDS["score"]
    assert CODES["stalled"] == {protocol.CLOSE_STALLED} and CODES["unprocessable"] == {4500}
    assert CODES["garbage"] == {protocol.CLOSE_GARBAGE} and CODES["duplicate"] == set()
    assert {"bad_media", "proxy_timeout", "events_missed", "not_processed", "processing_failed"} <= set(CODES)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_each_event_has_its_fields_and_an_example(kind):
    text = section(f"#### `{kind}`")
    documented = set(table(text))
    numbered = {"seq"} if kind != "started" else set()  # `started` is never numbered (README says why)
    expected = FIELDS[kind] | numbered
    assert expected - documented == set(), f"{kind}: fields the README does not list"
    assert documented - expected == set(), f"{kind}: fields the README lists that the code does not send"
    example = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    assert example["type"] == kind and set(example) <= documented
    if kind == "started":  # the defaults as the server reports them
        assert example["config"] == StreamConfig().model_dump()


def test_every_error_code_is_listed_with_its_close():
    rows = table(section("### Error codes"))
    assert set(CODES) - set(rows) == set(), "error codes the README does not list"
    assert set(rows) - set(CODES) == set(), "error codes the README lists that the code does not send"
    for code, closes in CODES.items():
        fatal, close = rows[code][0], rows[code][1]
        assert {int(n) for n in re.findall(r"\b\d{4}\b", close)} == closes, f"{code}: close {close!r}"
        assert ("yes" in fatal) == bool(closes), f"{code}: fatal {fatal!r}"


def test_every_close_code_is_listed():
    rows = table(section("### Close codes"))
    closes = {v for k, v in vars(protocol).items() if k.startswith("CLOSE_") and isinstance(v, int)}
    assert set(protocol.CLOSE_CODES) == closes  # each counted from 0 (stream/metrics.py)
    assert {str(c) for c in closes} - set(rows) == set()
    assert {int(c) for c in rows} <= closes


def _bounds(metadata: list, annotation) -> set[float]:
    """A field's numeric bounds, its tuple items' included (image_size)."""
    names = ("ge", "gt", "le", "lt", "min_length", "max_length")
    found = {getattr(m, a) for m in metadata for a in names if getattr(m, a, None) is not None}
    for item in typing.get_args(annotation):
        for meta in getattr(item, "__metadata__", ()):
            found |= _bounds(getattr(meta, "metadata", []), None)
    return found


def _default(field) -> object:
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return {}  # its own fields' defaults: the config table
    return json.loads(json.dumps(field.default))


@pytest.mark.parametrize(("model", "heading"), [(Start, "### Start message"), (StreamConfig, "### Config")])
def test_every_start_field_has_its_default_and_bounds(model, heading):
    rows = table(section(heading))
    assert set(model.model_fields) - set(rows) == set(), f"{model.__name__} fields the README does not list"
    assert set(rows) <= set(model.model_fields), "README rows that are no start field"
    for name, field in model.model_fields.items():
        kind, default, allowed = rows[name][:3]
        if (expected := _default(field)) == "required":
            assert default == "required", name
        else:
            shown = re.fullmatch(r"`([^`]*)`", default)
            assert shown and json.loads(shown.group(1)) == expected, (
                f"{name}: default {default!r}, not {expected}"
            )
        for bound in _bounds(field.metadata, field.annotation):
            assert re.search(rf"(?<![\d.]){bound:g}(?![\d])", allowed), (
                f"{name}: {bound:g} not in {allowed!r}"
            )
        if pattern := next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None):
            assert re.search(r"\[(.*)\]", pattern).group(1) in allowed, (
                f"{name}: {pattern} not in {allowed!r}"
            )
        for choice in getattr(field.annotation, "__args__", ()) if "Literal" in str(field.annotation) else ():
            assert f'"{choice}"' in allowed, f"{name}: {choice!r} not in {allowed!r}"
