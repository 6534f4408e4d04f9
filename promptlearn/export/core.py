"""What the format modules share: the errors, line and newline helpers, nested-mapping paths, provenance text."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping


class ExportError(ValueError):
    """The config file cannot take the prompt (unparsable file, key holds a mapping, ...)."""


class MissingKeyError(KeyError, ValueError):
    """The config file has no such key. Both a KeyError and a ValueError, with a readable str()."""

    def __init__(self, name: str, key: str, detail: str = "") -> None:
        self.name, self.key = name, key
        self.message = f"{name} has no key {key!r}" + (f" ({detail})" if detail else "")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def _newline(text: str | None) -> str:
    """The file's line break, judged by its first line ("\n" for new files)."""
    i = text.find("\n") if text else -1
    return "\r\n" if text and i > 0 and text[i - 1] == "\r" else "\n"


def _eol(text: str, i: int) -> int:
    """Index of the line break at or after `i` (or len(text))."""
    j = text.find("\n", i)
    return len(text) if j < 0 else j


def _next_line(text: str, i: int) -> int:
    """Index of the start of the line after the one holding `i` (or len(text))."""
    j = text.find("\n", i)
    return len(text) if j < 0 else j + 1


def _line_start(text: str, i: int) -> int:
    return text.rfind("\n", 0, i) + 1


def _with_final_newline(text: str, nl: str) -> str:
    return text if not text or text.endswith("\n") else text + nl


def _triple_quoted_body(s: str, escape: Callable[[str], str]) -> str:
    """The inside of a triple-quoted string (TOML multi-line basic, Python) that reads back as `s`.

    Doubles backslashes, keeps newlines and tabs, breaks up runs of three quotes and a quote touching the
    closing delimiter; `escape` writes every other character.
    """
    out = []
    run = 0
    for i, ch in enumerate(s):
        if ch == '"':
            if run == 2 or i == len(s) - 1:
                out.append('\\"')
                run = 0
            else:
                out.append('"')
                run += 1
            continue
        run = 0
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\n\t":
            out.append(ch)
        else:
            out.append(escape(ch))
    return "".join(out)


def _deep_set(data: dict, parts: list[str], value: Any) -> None:
    d = data
    for p in parts[:-1]:
        if d.get(p) is None:
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def _an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _kind(value: Any, what: str = "mapping") -> str:
    if isinstance(value, Mapping):
        return what
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _check_path(data: Any, parts: list[str], name: str, what: str = "mapping") -> None:
    """Raise ExportError unless `parts` can take a string: parents are mappings or null, the leaf no mapping."""
    d = data
    for i, p in enumerate(parts):
        if not isinstance(d, Mapping) or p not in d or d[p] is None:
            return
        d = d[p]
        last = i == len(parts) - 1
        if last and isinstance(d, (Mapping, list)):
            raise ExportError(f"{name}: key {'.'.join(parts)!r} holds {_an(_kind(d, what))}, not a string")
        if not last and not isinstance(d, Mapping):
            raise ExportError(f"{name}: key {'.'.join(parts[:i + 1])!r} holds {_an(_kind(d, what))}, "
                              f"not {_an(what)}")


def _deep_get(data: Any, parts: list[str], name: str, key: str) -> Any:
    d = data
    for i, p in enumerate(parts):
        if not isinstance(d, Mapping) or p not in d:
            where = ".".join(parts[:i])
            detail = f"{where!r} is not a mapping" if i and not isinstance(d, Mapping) else ""
            raise MissingKeyError(name, key, detail)
        d = d[p]
    return d


def _prov_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
    if s == "" or re.search(r"[\s\"'=]|--", s):
        s = json.dumps(s, ensure_ascii=False).replace("--", "-\\u002d")
    return s


def _prov_comment(prov: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_prov_value(v)}" for k, v in prov.items())


_PROV_COMMENT = re.compile(r"[ \t]*# promptlearn:")


def _put_comment_above(text: str, line_start: int, comment: str, nl: str) -> str:
    """Put `comment` on the line above `line_start`, replacing a `# promptlearn:` line already there."""
    if line_start > 0:
        prev_start = _line_start(text, line_start - 1)
        prev = text[prev_start:line_start - 1]
        if _PROV_COMMENT.match(prev):
            indent = prev[:len(prev) - len(prev.lstrip())]
            end = line_start - 1 - (1 if prev.endswith("\r") else 0)
            return text[:prev_start] + indent + comment + text[end:]
    rest = text[line_start:]
    indent = rest[:len(rest) - len(rest.lstrip(" \t"))]
    return text[:line_start] + indent + comment + nl + text[line_start:]


def _plain(x: Any) -> Any:
    """Comparable plain-Python copy of loaded YAML/TOML data."""
    import datetime

    if isinstance(x, Mapping):
        return {_plain_key(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(i) for i in x]
    if isinstance(x, str):
        return str(x)
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, float):
        return ("nan",) if x != x else float(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, (datetime.date, datetime.time, bytes)):
        return x
    tag = getattr(x, "tag", None)
    return ("tagged", str(getattr(tag, "value", tag)), _plain(getattr(x, "value", repr(x))))


def _plain_key(k: Any) -> Any:
    p = _plain(k)
    return repr(p) if isinstance(p, (dict, list)) else p
