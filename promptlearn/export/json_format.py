"""JSON: splice the new value into the text at the spans a small span-keeping parser finds."""

from __future__ import annotations

import json
import re
from typing import Any

from promptlearn.export.core import (
    ExportError,
    _an,
    _check_path,
    _deep_get,
    _deep_set,
    _line_start,
    _newline,
    _prov_parts,
)

class _JNode:
    __slots__ = ("kind", "start", "end", "members", "items")

    def __init__(self, kind: str, start: int, end: int = -1) -> None:
        self.kind, self.start, self.end = kind, start, end
        self.members: list[tuple[str, int, _JNode]] = []  # (key, key start, value)
        self.items: list[_JNode] = []


_JSON_WS = " \t\n\r"
_JSON_ATOM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|NaN|-?Infinity")


def _json_spans(text: str) -> _JNode:
    """Parse JSON keeping the source span of every value (the text is already known to be valid)."""
    from json.decoder import scanstring  # type: ignore[attr-defined]  # in json.decoder, not in its stubs

    def ws(i: int) -> int:
        while i < len(text) and text[i] in _JSON_WS:
            i += 1
        return i

    def value(i: int) -> tuple[_JNode, int]:
        c = text[i]
        if c == "{":
            node = _JNode("object", i)
            i = ws(i + 1)
            if text[i] == "}":
                node.end = i + 1
                return node, i + 1
            while True:
                if text[i] != '"':
                    raise ValueError("expected a key")
                kstart = i
                k, i = scanstring(text, i + 1, True)
                i = ws(i)
                if text[i] != ":":
                    raise ValueError("expected ':'")
                v, i = value(ws(i + 1))
                node.members.append((k, kstart, v))
                i = ws(i)
                if text[i] == ",":
                    i = ws(i + 1)
                    continue
                if text[i] == "}":
                    node.end = i + 1
                    return node, i + 1
                raise ValueError("expected ',' or '}'")
        if c == "[":
            node = _JNode("array", i)
            i = ws(i + 1)
            if text[i] == "]":
                node.end = i + 1
                return node, i + 1
            while True:
                v, i = value(i)
                node.items.append(v)
                i = ws(i)
                if text[i] == ",":
                    i = ws(i + 1)
                    continue
                if text[i] == "]":
                    node.end = i + 1
                    return node, i + 1
                raise ValueError("expected ',' or ']'")
        if c == '"':
            _, j = scanstring(text, i + 1, True)
            return _JNode("string", i, j), j
        m = _JSON_ATOM.match(text, i)
        if not m:
            raise ValueError("unexpected character")
        kind = {"null": "null", "true": "boolean", "false": "boolean"}.get(m.group(), "number")
        return _JNode(kind, i, m.end()), m.end()

    node, _ = value(ws(0))
    return node


def _json_load(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise ExportError(f"{name}: cannot parse JSON: {e}") from e


def _json_read(text: str, key: str, parts: list[str], name: str) -> Any:
    return _deep_get(_json_load(text, name), parts, name, key)


class _JsonStyle:
    def __init__(self, text: str) -> None:
        self.nl = _newline(text)
        self.ensure_ascii = text.isascii() and re.search(r"\\u(?!00[0-7])[0-9a-fA-F]{4}", text) is not None
        m = re.search(r"\{[ \t]*\r?\n([ \t]+)\"", text)
        self.multiline = "\n" in text.strip() or re.fullmatch(r"\{\s*\}", text.strip()) is not None
        self.unit: str | int = m.group(1) if m else 2
        if isinstance(self.unit, str) and set(self.unit) == {" "}:
            self.unit = len(self.unit)
        self.colon = ": " if re.search(r'"\s*:\s', text) or not re.search(r'"\s*:', text) else ":"
        self.comma = ", " if re.search(r",[ \t]", text) else ","

    def dumps(self, value: Any, base: str) -> str:
        if not self.multiline:
            return json.dumps(value, ensure_ascii=self.ensure_ascii, separators=(self.comma, self.colon))
        s = json.dumps(value, ensure_ascii=self.ensure_ascii, indent=self.unit, separators=(",", self.colon))
        return s.replace("\n", self.nl + base)

    @property
    def unit_str(self) -> str:
        return " " * self.unit if isinstance(self.unit, int) else self.unit


def _json_chain(parts: list[str], value: Any) -> Any:
    for p in reversed(parts):
        value = {p: value}
    return value


def _json_splice(text: str, parts: list[str], value: Any, style: _JsonStyle, *, replace_collection: bool,
                 after: str | None = None) -> str:
    root = _json_spans(text)
    if root.kind != "object":
        raise ExportError("the JSON document is not an object")
    node = root
    for i, part in enumerate(parts):
        member = next((m for m in reversed(node.members) if m[0] == part), None)
        last = i == len(parts) - 1
        rest = _json_chain(parts[i + 1:], value)
        if member is None:
            return _json_insert(text, node, part, rest, style, after if last else None)
        _, kstart, v = member
        base = _json_indent(text, kstart)
        if last:
            if v.kind in ("object", "array") and not replace_collection:
                raise ExportError(f"key {'.'.join(parts)!r} holds an {v.kind}, not a string")
            return text[:v.start] + style.dumps(value, base) + text[v.end:]
        if v.kind == "object":
            node = v
            continue
        if v.kind == "null":
            return text[:v.start] + style.dumps(rest, base) + text[v.end:]
        raise ExportError(f"key {'.'.join(parts[:i + 1])!r} holds {_an(v.kind)}, not an object")
    raise AssertionError("unreachable")


def _json_indent(text: str, i: int) -> str:
    """The indentation of the line holding `i` (whitespace only; '' if the line starts otherwise)."""
    ls = _line_start(text, i)
    m = re.match(r"[ \t]*", text[ls:i])
    return m.group() if m else ""


def _json_insert(text: str, obj: _JNode, key: str, value: Any, style: _JsonStyle, after: str | None) -> str:
    k = json.dumps(key, ensure_ascii=style.ensure_ascii)
    if not obj.members:
        if not style.multiline:
            return text[:obj.start] + "{" + k + style.colon + style.dumps(value, "") + "}" + text[obj.end:]
        base = _json_indent(text, obj.start)
        inner = base + style.unit_str
        new = "{" + style.nl + inner + k + style.colon + style.dumps(value, inner) + style.nl + base + "}"
        return text[:obj.start] + new + text[obj.end:]
    target = obj.members[-1]
    if after is not None:
        target = next((m for m in reversed(obj.members) if m[0] == after), target)
    _, kstart, v = target
    own_line = text[_line_start(text, kstart):kstart].strip() == ""
    if own_line and "\n" in text[obj.start:kstart]:
        indent = _json_indent(text, kstart)
        sep = "," + style.nl + indent
    else:
        indent = _json_indent(text, kstart)
        sep = style.comma
    return text[:v.end] + sep + k + style.colon + style.dumps(value, indent) + text[v.end:]


def _json_read_prov(text: str, key: str, parts: list[str], name: str) -> dict[str, Any] | None:
    data = _json_load(text, name)
    _deep_get(data, parts, name, key)
    try:
        value = _deep_get(data, _prov_parts(parts), name, key)
    except KeyError:
        return None
    return dict(value) if isinstance(value, dict) else None


def _json_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                 name: str, form: str = "key") -> str:
    """JSON has no comments: provenance is always the sibling key (`form` is accepted and ignored)."""
    prov_parts = _prov_parts(parts)
    prov_json = json.loads(json.dumps(prov, default=str)) if prov is not None else None
    if text is None or not text.strip():
        data: dict = {}
        _deep_set(data, parts, prompt)
        if prov_json is not None:
            _deep_set(data, prov_parts, prov_json)
        nl = _newline(text)
        return (text or "") + json.dumps(data, indent=2, ensure_ascii=False).replace("\n", nl) + nl
    data = _json_load(text, name)
    if not isinstance(data, dict):
        raise ExportError(f"{name}: the JSON document is a {type(data).__name__}, not an object")
    expected = json.loads(text)
    _check_path(expected, parts, name, "object")
    _deep_set(expected, parts, prompt)
    if prov_json is not None:
        _deep_set(expected, prov_parts, prov_json)
    style = _JsonStyle(text)
    try:
        new = _json_splice(text, parts, prompt, style, replace_collection=False)
        if prov is not None:
            new = _json_splice(new, prov_parts, prov_json, style, replace_collection=True, after=parts[-1])
    except ExportError as e:
        raise ExportError(f"{name}: {e}") from None
    except (ValueError, IndexError):
        new = None
    if new is not None and json.loads(new) == expected:
        return new
    # Full re-dump with the detected indentation (loses nothing JSON can hold, but not the layout).
    unit = style.unit if style.multiline else None
    out = json.dumps(expected, indent=unit, ensure_ascii=style.ensure_ascii,
                     separators=(",", style.colon) if unit is not None else (style.comma, style.colon))
    trailing = text[len(text.rstrip()):]
    return text[:len(text) - len(text.lstrip())] + out.replace("\n", style.nl) + trailing
