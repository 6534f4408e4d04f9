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


PROVENANCE_FORMS = ("comment", "key")
_PROV_BARE = re.compile(r"[A-Za-z0-9_.:/+@-]+")


def _prov_value(v: Any) -> str:
    """One value of a provenance comment: a bare word when it reads back as the same string, else compact JSON
    (ASCII, `--` escaped, so the text fits a `#` comment and a Markdown `<!-- -->` comment alike)."""
    if isinstance(v, str) and _PROV_BARE.fullmatch(v) and "--" not in v:
        try:
            json.loads(v)
        except ValueError:
            return v
    s = json.dumps(v, ensure_ascii=True, separators=(",", ":"), default=str)
    return s.replace("--", "-\\u002d")  # `--` only occurs inside JSON strings, where the escape reads back


def _prov_comment(prov: Mapping[str, Any]) -> str:
    """`k=v k=v ...`: the text after `promptlearn:` in a provenance comment; `_prov_parse` reads it back."""
    return " ".join(f"{k}={_prov_value(v)}" for k, v in prov.items())


_PROV_KEY = re.compile(r"\s*([^\s=]+)=")


def _prov_parse(text: str) -> dict[str, Any]:
    """The provenance mapping a `_prov_comment` text holds (values as JSON where they parse, else strings)."""
    out: dict[str, Any] = {}
    dec = json.JSONDecoder()
    i = 0
    text = text.rstrip()
    while i < len(text):
        m = _PROV_KEY.match(text, i)
        if m is None:
            break
        k, i = m.group(1), m.end()
        if text[i:i + 1] in ('"', "{", "["):
            try:
                out[k], i = dec.raw_decode(text, i)
                continue
            except ValueError:
                pass
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        word = text[i:j]
        try:
            out[k] = json.loads(word)
        except ValueError:
            out[k] = word
        i = j
    return out


def _prov_parts(parts: list[str]) -> list[str]:
    """The path of the sibling provenance key: `a.b.c` -> `a.b.c_provenance`."""
    return parts[:-1] + [parts[-1] + "_provenance"]


def _sibling_prov(data: Any, prov: dict | None, prov_parts: list[str], form: str) -> dict | None:
    """The provenance to write as a sibling key: always for form 'key'; for 'comment' only to keep one an
    earlier export wrote in step (a stale sha256 next to the prompt would mislead a build gate)."""
    if prov is None or form == "key":
        return prov
    d = data
    for p in prov_parts:
        if not isinstance(d, Mapping) or p not in d:
            return None
        d = d[p]
    return prov


def _check_form(form: str, fmt: str) -> str:
    """`form` validated: 'comment' or 'key' ('key' only where the format has mappings for a sibling key)."""
    if form not in PROVENANCE_FORMS:
        raise ValueError(f"provenance form must be one of {', '.join(PROVENANCE_FORMS)}, got {form!r}")
    if form == "key" and fmt in ("env", "py", "md"):
        raise ValueError(f"a {fmt} file has no mappings for a sibling provenance key; write provenance as a "
                         f"comment (provenance_as='comment', --provenance comment) or leave it out")
    return form


_PROV_COMMENT = re.compile(r"[ \t]*# promptlearn:(.*)")

# A parse signature of a text: equal signatures mean equal content, so a line whose removal keeps the signature
# is a comment (and not, say, a line inside a multi-line string that happens to start with `#`).
_Signature = Callable[[str], Any]


def _comment_above(text: str, line_start: int, sig: _Signature) -> tuple[int, int] | None:
    """(start, end incl. its line break) of the `# promptlearn:` comment line just above `line_start`, if any."""
    if line_start <= 0:
        return None
    prev_start = _line_start(text, line_start - 1)
    if not _PROV_COMMENT.fullmatch(text[prev_start:line_start].rstrip("\r\n")):
        return None
    try:
        if sig(text[:prev_start] + text[line_start:]) != sig(text):
            return None
    except Exception:  # noqa: BLE001 - the text without that line does not parse: it was not a comment
        return None
    return prev_start, line_start


def _read_comment_above(text: str, line_start: int, sig: _Signature) -> dict[str, Any] | None:
    span = _comment_above(text, line_start, sig)
    if span is None:
        return None
    m = _PROV_COMMENT.fullmatch(text[span[0]:span[1]].rstrip("\r\n"))
    return _prov_parse(m.group(1)) if m else None


def _put_comment_above(text: str, line_start: int, comment: str | None, nl: str, sig: _Signature) -> str:
    """Put `comment` on the line above `line_start`, replacing a `# promptlearn:` line already there (None: remove
    that line)."""
    span = _comment_above(text, line_start, sig)
    if span is not None:
        prev = text[span[0]:span[1]]
        indent = prev[:len(prev) - len(prev.lstrip(" \t"))]
        eol = prev[len(prev.rstrip("\r\n")):]
        return text[:span[0]] + (indent + comment + eol if comment is not None else "") + text[span[1]:]
    if comment is None:
        return text
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
