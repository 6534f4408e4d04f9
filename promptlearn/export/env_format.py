""".env: one double-quoted KEY="value" line, parsed the way python-dotenv parses it."""

from __future__ import annotations

import re
import warnings
from typing import Any

from promptlearn.export.core import (
    MissingKeyError,
    _eol,
    _newline,
    _next_line,
    _prov_comment,
    _put_comment_above,
    _read_comment_above,
    _with_final_newline,
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<key>'[^']+'|[^=#\s]+)[ \t]*=[ \t]*")
_ENV_DQ = re.compile(r'"((?:\\.|[^"\\])*)"', re.S)
_ENV_SQ = re.compile(r"'((?:\\.|[^'\\])*)'", re.S)
_ENV_DQ_ESC = re.compile(r"\\[\\'\"abfnrtv]")
_ENV_SQ_ESC = re.compile(r"\\[\\']")
_ENV_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
                "t": "\t", "v": "\v"}


class _EnvBinding:
    __slots__ = ("key", "line_start", "vstart", "vend", "value")

    def __init__(self, key: str, line_start: int, vstart: int, vend: int, value: str) -> None:
        self.key, self.line_start, self.vstart, self.vend, self.value = key, line_start, vstart, vend, value


def _env_bindings(text: str) -> list[_EnvBinding]:
    """KEY=value bindings with their value spans, parsed the way python-dotenv parses them."""
    out = []
    pos = 0
    while pos < len(text):
        line_end = _eol(text, pos)
        line = text[pos:line_end]
        stripped = line.strip()
        m = _ENV_KEY.match(text, pos) if stripped and not stripped.startswith("#") else None
        if m is None or m.end() > line_end:
            pos = line_end + 1
            continue
        k = m.group("key")
        k = k[1:-1] if k.startswith("'") else k
        vstart = m.end()
        c = text[vstart:vstart + 1]
        if c == '"' and (q := _ENV_DQ.match(text, vstart)):
            vend, value = q.end(), _ENV_DQ_ESC.sub(lambda e: _ENV_ESCAPES[e.group()[1]], q.group(1))
        elif c == "'" and (q := _ENV_SQ.match(text, vstart)):
            vend, value = q.end(), _ENV_SQ_ESC.sub(lambda e: e.group()[1], q.group(1))
        else:
            raw = text[vstart:line_end].rstrip("\r")
            if text[m.end() - 1] in " \t" and raw.startswith("#"):
                raw = ""  # `KEY= # comment`: empty value (python-dotenv rule)
            value = re.sub(r"\s+#.*", "", raw).rstrip()
            vend = vstart + len(value)
        out.append(_EnvBinding(k, pos, vstart, vend, value))
        pos = _next_line(text, vend) if vend < len(text) else len(text)
    return out


def env_name(key: str, defined: set[str] | frozenset[str] = frozenset()) -> str:
    """The .env variable for `key`: as given if already env-style (or defined in the file), else derived."""
    if _ENV_NAME.fullmatch(key) and (key in defined or key.upper() == key):
        return key
    derived = re.sub(r"[.\-]", "_", key).upper()
    if not _ENV_NAME.fullmatch(derived):
        raise ValueError(f"cannot turn key {key!r} into an environment variable name")
    return derived


def _env_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def _env_read(text: str, key: str, parts: list[str], name: str) -> Any:
    bindings = _env_bindings(text)
    var = env_name(key, {b.key for b in bindings})
    found = [b for b in bindings if b.key == var]
    if not found:
        raise MissingKeyError(name, key, f"no variable {var}" if var != key else "")
    return found[-1].value


def _env_sig(text: str) -> list[tuple[str, str]]:
    return [(b.key, b.value) for b in _env_bindings(text)]


def _env_read_prov(text: str, key: str, parts: list[str], name: str) -> dict[str, Any] | None:
    bindings = _env_bindings(text)
    var = env_name(key, {b.key for b in bindings})
    found = [b for b in bindings if b.key == var]
    if not found:
        raise MissingKeyError(name, key, f"no variable {var}" if var != key else "")
    return _read_comment_above(text, found[-1].line_start, _env_sig)


def _env_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                name: str, form: str = "comment") -> str:
    text = text or ""
    if "${" in prompt:
        warnings.warn("the prompt contains '${': python-dotenv interpolates it unless "
                      "dotenv_values(..., interpolate=False) is used", stacklevel=3)
    nl = _newline(text)
    bindings = _env_bindings(text)
    var = env_name(key, {b.key for b in bindings})
    quoted = _env_quote(prompt)
    comment = f"# promptlearn: {_prov_comment(prov)}" if prov is not None else None
    found = [b for b in bindings if b.key == var]
    if not found:
        new = _with_final_newline(text, nl)
        if comment:
            new += comment + nl
        return new + f"{var}={quoted}" + nl
    b = found[-1]
    new = text[:b.vstart] + quoted + text[b.vend:]
    if comment:
        new = _put_comment_above(new, b.line_start, comment, nl, _env_sig)
    return new
