r"""Write an optimized system prompt into an app's own config file, and read it back as the app will.

`export_prompt(path, key, prompt)` puts `prompt` under the dotted `key` (``assistant.system_prompt``)
of a YAML, JSON, TOML, .env, Python or Markdown file and leaves every other byte of the file as it was:
comments, key order, quoting, blank lines. `read_prompt(path, key)` reads the value back exactly, so a
``check`` command can re-evaluate the prompt the app will really load.

How the key maps onto each format
---------------------------------
* yaml / json / toml: ``a.b.c`` is the path of nested mappings/objects/tables. Missing mappings are
  created. Provenance goes under the sibling key ``c_provenance`` as a mapping.
* env: the variable name is the key upper-cased with ``.`` and ``-`` replaced by ``_``
  (``assistant.system_prompt`` -> ``ASSISTANT_SYSTEM_PROMPT``). A key that is already an env-style name
  (``SYSTEM_PROMPT``, or a name the file already defines, e.g. ``system_prompt``) is used as given.
  Provenance is a ``# promptlearn: k=v ...`` comment line just above the variable.
* py: the key's last part is the module-level variable name, as given (``prompts.SYSTEM_PROMPT`` ->
  ``SYSTEM_PROMPT``). Provenance is a ``# promptlearn: k=v ...`` comment line just above the assignment.
* md: a block between ``<!-- promptlearn:KEY -->`` and ``<!-- /promptlearn:KEY -->`` holding the prompt in
  a ```` ```text ```` fence; the fence body is the prompt followed by one newline. Provenance is a
  ``<!-- promptlearn provenance: k=v ... -->`` line inside the markers.

Known limits
------------
* .env: values are written double-quoted with ``\``, ``\"``, ``\n`` and ``\r`` escaped. ``$`` is written
  as is, because python-dotenv has no escape for it (``\$`` would be read back as a backslash and a
  dollar). python-dotenv's default interpolation rewrites ``${NAME}`` in any value; a prompt containing
  ``${`` only reads back exactly with ``dotenv_values(..., interpolate=False)`` (a warning is issued).
* YAML: the new value is spliced into the text and the result re-parsed and compared with what was
  meant. A multi-line prompt is a literal block (``|``, ``|-``, ``|+``) unless that cannot hold it
  exactly (control characters, CR, a last line of only spaces, ``|+`` before a blank line): then it is
  a double-quoted string. Values behind anchors, aliases or tags, or inside flow mappings, are written
  by a full ruamel.yaml round trip, which keeps comments and order but may re-indent the file.
* py: only top-level ``NAME = ...`` / ``NAME: T = ...`` statements count, and an existing value must
  be a string literal (an expression such as ``os.environ[...]`` is not overwritten).
* JSON: the edit is spliced into the text, so the rest of the file is kept byte for byte; JSON has no
  comments to keep. Non-standard JSON (comments, trailing commas) is rejected.

ruamel.yaml and tomlkit are imported only when a YAML or TOML file is handled.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "FORMATS",
    "ExportError",
    "MissingKeyError",
    "detect_format",
    "env_name",
    "export_prompt",
    "prompt_sha256",
    "read_prompt",
    "read_prompt_text",
    "render_export",
]

FORMATS = ("yaml", "json", "toml", "env", "py", "md")

_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml", ".env": "env", ".py": "py",
             ".md": "md"}
_ALIASES = {"yml": "yaml", "dotenv": "env", "python": "py", "markdown": "md"}
_BOM = "\ufeff"


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


def prompt_sha256(prompt: str) -> str:
    """Hex SHA-256 of the prompt's UTF-8 bytes (the full digest; `types.prompt_id` is its first 12 chars)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format name for `path`: `fmt` if given (validated), else inferred from the file name."""
    if fmt is not None:
        f = str(fmt).strip().lower().lstrip(".")
        f = _ALIASES.get(f, f)
        if f not in FORMATS:
            raise ValueError(f"unknown config format {fmt!r}; expected one of: {', '.join(FORMATS)}")
        return f
    p = Path(path)
    name = p.name.lower()
    if p.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[p.suffix.lower()]
    if name == ".env" or name.endswith(".env") or name.startswith(".env."):
        return "env"
    raise ValueError(f"cannot tell the config format of {p.name!r} from its name; pass --format "
                     f"(one of: {', '.join(FORMATS)})")


def export_prompt(path: str | os.PathLike[str], key: str, prompt: str, *, fmt: str | None = None,
                  provenance: Mapping[str, Any] | None = None) -> None:
    """Write `prompt` under the dotted `key` of the config file at `path`, keeping the rest of the file.

    Creates the file (and missing parent mappings) when needed. `provenance` (run id, scores, sha256, ...)
    is written next to the prompt, replacing what an earlier export wrote there; without it an existing
    provenance entry is left as it is. The file is replaced atomically and keeps its permissions (and a
    UTF-8 BOM if it had one); it is not touched at all when nothing changes. Raises ValueError for an
    unknown format, ExportError (a ValueError) when the file cannot take the prompt.
    """
    f = detect_format(path, fmt)
    old = _read_file(path)
    bom = old is not None and old.startswith(_BOM)
    body = old[1:] if bom else old
    new = render_export(body, key, prompt, f, provenance=provenance, name=Path(path).name)
    if bom:
        new = _BOM + new
    if new != old:
        _write_file(path, new)


def read_prompt(path: str | os.PathLike[str], key: str, *, fmt: str | None = None) -> str:
    """The prompt stored under `key` in the config file at `path`, exactly as the app loads it."""
    f = detect_format(path, fmt)
    text = _read_file(path)
    if text is None:
        raise FileNotFoundError(f"{path}: no such config file")
    if text.startswith(_BOM):
        text = text[1:]
    return read_prompt_text(text, key, f, name=Path(path).name)


def render_export(text: str | None, key: str, prompt: str, fmt: str, *,
                  provenance: Mapping[str, Any] | None = None, name: str = "config") -> str:
    """The new file content: `text` (None for a missing file) with `prompt` written under `key`."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    f = detect_format(name, fmt)
    parts = _split_key(key)
    prov = dict(provenance) if provenance else None
    if prov is not None and not all(isinstance(k, str) for k in prov):
        raise TypeError("provenance keys must be strings")
    handler = {"yaml": _yaml_export, "json": _json_export, "toml": _toml_export, "env": _env_export,
               "py": _py_export, "md": _md_export}[f]
    return handler(text, key, parts, prompt, prov, name)


def read_prompt_text(text: str, key: str, fmt: str, *, name: str = "config") -> str:
    """The prompt stored under `key` in the config text `text` of format `fmt`."""
    f = detect_format(name, fmt)
    parts = _split_key(key)
    handler = {"yaml": _yaml_read, "json": _json_read, "toml": _toml_read, "env": _env_read,
               "py": _py_read, "md": _md_read}[f]
    value = handler(text, key, parts, name)
    if not isinstance(value, str):
        raise ExportError(f"{name}: key {key!r} holds {_an(_kind(value))}, not a string")
    return value


# ---------------------------------------------------------------------------------------------- helpers


def _split_key(key: str) -> list[str]:
    if not isinstance(key, str) or not key:
        raise ValueError("the config key must be a non-empty string such as 'assistant.system_prompt'")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValueError(f"invalid config key {key!r}: empty part between dots")
    return parts


def _read_file(path: str | os.PathLike[str]) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _write_file(path: str | os.PathLike[str], text: str) -> None:
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _newline(text: str | None) -> str:
    """The file's line break, judged by its first line ("\n" for new files)."""
    i = text.find("\n") if text else -1
    return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


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


# --------------------------------------------------------------------------------------------------- yaml


class _Fallback(Exception):
    """The text splice cannot handle this document; use a full ruamel round trip instead."""


def _yaml_rt():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.allow_unicode = True
    y.width = 1 << 30
    return y


def _yaml_load(text: str, name: str) -> Any:
    try:
        return _yaml_rt().load(text)
    except Exception as e:  # ruamel raises many error types
        raise ExportError(f"{name}: cannot parse YAML: {e}") from e


def _yaml_read(text: str, key: str, parts: list[str], name: str) -> Any:
    data = _yaml_load(text, name)
    return _deep_get(data if data is not None else {}, parts, name, key)


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


_YAML_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_YAML_SPECIAL_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
# Characters a literal block scalar can hold as they are (YAML printable, minus BOM, NEL, LS, PS and CR).
_YAML_LITERAL_BAD = re.compile("[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def _yaml_key(part: str) -> str:
    if _YAML_PLAIN_KEY.fullmatch(part) and part.lower() not in _YAML_SPECIAL_WORDS:
        return part
    return _yaml_dq(part)


def _yaml_dq(s: str) -> str:
    """A double-quoted one-line YAML scalar; exact for any string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or 0x7F <= o <= 0x9F:
            out.append(f"\\x{o:02x}")
        elif ch in "\u2028\u2029\ufeff" or 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _yaml_flow_scalar(s: str) -> str:
    """A one-line scalar in the style ruamel.yaml picks (plain, single- or double-quoted)."""
    import io

    if "\n" not in s:
        buf = io.StringIO()
        _yaml_rt().dump({"k": s}, buf)
        out = buf.getvalue()
        if out.startswith("k: "):
            v = out[3:]
            v = v[:-1] if v.endswith("\n") else v
            if v and "\n" not in v and "\r" not in v:
                return v
    return _yaml_dq(s)


def _yaml_literal(s: str, key_col: int, step: int, nl: str) -> tuple[str, str] | None:
    """(header, body lines) of a literal block scalar holding `s` exactly, or None if it cannot."""
    if "\n" not in s or not s.strip("\n") or _YAML_LITERAL_BAD.search(s):
        return None
    if s.endswith("\n"):
        core = s.rstrip("\n")
        trailing = len(s) - len(core)
        chomp = "" if trailing == 1 else "+"
        lines = core.split("\n") + [""] * (trailing - 1)
    else:
        chomp = "-"
        lines = s.split("\n")
    first = next(ln for ln in lines if ln)
    step = min(max(step, 1), 9)
    indicator = str(step) if first.startswith(" ") else ""
    pad = " " * (key_col + step)
    body = "".join((pad + ln if ln else "") + nl for ln in lines)
    return f" |{indicator}{chomp}", body


def _yaml_value_text(value: Any) -> str:
    if isinstance(value, str):
        return _yaml_flow_scalar(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _yaml_mapping_body(mapping: Mapping[str, Any], col: int, nl: str) -> str:
    return "".join(" " * col + _yaml_key(k) + ": " + _yaml_value_text(v) + nl for k, v in mapping.items())


def _yaml_scalar_nodes():
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    return MappingNode, ScalarNode, SequenceNode


def _yaml_is_empty(node) -> bool:
    return node.start_mark.index == node.end_mark.index


def _yaml_block_scalar_end(text: str, node) -> int:
    """End of a block scalar's own lines: trailing blank lines stay outside unless it keeps them (`+`)."""
    start, end = node.start_mark.index, node.end_mark.index
    header_end = _eol(text, start)
    header = text[start:header_end]
    m = re.match(r"[|>]([0-9+-]*)", header)
    if m and "+" in m.group(1):
        return end
    content = text[header_end:end]
    stripped = content.rstrip(" \t\r\n")
    if not stripped:
        return min(_next_line(text, start), end) if end > header_end else end
    return _next_line(text, header_end + len(stripped) - 1)


def _yaml_node_end(text: str, node, key_node=None) -> int:
    """Start of the line after the last line that belongs to `node` (a mapping value or sequence item)."""
    MappingNode, ScalarNode, SequenceNode = _yaml_scalar_nodes()
    if key_node is not None and node.start_mark.index < key_node.end_mark.index:
        return _next_line(text, key_node.end_mark.index)  # `key: *alias`: the node lives elsewhere
    if isinstance(node, ScalarNode):
        if _yaml_is_empty(node):
            return _next_line(text, key_node.end_mark.index if key_node is not None else node.start_mark.index)
        if node.style in ("|", ">"):
            return _yaml_block_scalar_end(text, node)
        return _next_line(text, node.end_mark.index)
    if node.flow_style or not node.value:
        return _next_line(text, node.end_mark.index)
    if isinstance(node, MappingNode):
        k, v = node.value[-1]
        return _yaml_node_end(text, v, k)
    return _yaml_node_end(text, node.value[-1])


def _yaml_lookup(mnode, part: str):
    _, ScalarNode, _ = _yaml_scalar_nodes()
    found = None
    for k, v in mnode.value:
        if isinstance(k, ScalarNode) and k.value == part:
            found = (k, v)
    return found


def _yaml_is_null(node) -> bool:
    _, ScalarNode, _ = _yaml_scalar_nodes()
    return (isinstance(node, ScalarNode) and node.style is None
            and node.value in ("", "~", "null", "Null", "NULL"))


def _yaml_step(root) -> int:
    """Indentation step of nested block mappings in the document (2 if there are none)."""
    MappingNode, _, SequenceNode = _yaml_scalar_nodes()
    stack = [root]
    while stack:
        node = stack.pop(0)
        if isinstance(node, MappingNode) and not node.flow_style:
            for k, v in node.value:
                if isinstance(v, MappingNode) and not v.flow_style and v.value:
                    d = v.value[0][0].start_mark.column - k.start_mark.column
                    if 1 <= d <= 9:
                        return d
                stack.append(v)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return 2


# An emitter turns (key column, indentation step, newline) into (text after "key:", following lines).
_Emit = Callable[[int, int, str], "tuple[str, str]"]


def _yaml_chain_emit(parts: list[str], leaf: _Emit) -> _Emit:
    """Emitter for a value that is the nested mapping chain parts[0] -> ... -> leaf."""
    if not parts:
        return leaf

    def emit(col: int, step: int, nl: str) -> tuple[str, str]:
        inner = _yaml_chain_emit(parts[1:], leaf)
        c = col + step
        inline, body = inner(c, step, nl)
        return "", " " * c + _yaml_key(parts[0]) + ":" + inline + nl + body

    return emit


def _yaml_splice(text: str, parts: list[str], leaf: _Emit, *, replace_collection: bool,
                 after: str | None = None) -> str:
    """Text with the value at `parts` set through the emitter `leaf`, splicing only the key's lines."""
    MappingNode, ScalarNode, SequenceNode = _yaml_scalar_nodes()
    from ruamel.yaml import YAML

    root = YAML(typ="rt").compose(text)
    nl = _newline(text)
    if root is None:
        inline, body = _yaml_chain_emit(parts[1:], leaf)(0, 2, nl)
        prefix = _with_final_newline(text, nl)
        return prefix + _yaml_key(parts[0]) + ":" + inline + nl + body
    if not isinstance(root, MappingNode):
        raise ExportError("the YAML document is not a mapping")
    if root.flow_style:
        raise _Fallback
    step = _yaml_step(root)
    m = root
    for i, part in enumerate(parts):
        pair = _yaml_lookup(m, part)
        last = i == len(parts) - 1
        if pair is None:
            col = m.value[0][0].start_mark.column
            pos = _yaml_node_end(text, m)
            if last and after is not None and (prev := _yaml_lookup(m, after)) is not None:
                pos = _yaml_node_end(text, prev[1], prev[0])
            inline, body = _yaml_chain_emit(parts[i + 1:], leaf)(col, step, nl)
            prefix = text[:pos]
            if prefix and not prefix.endswith("\n"):
                prefix += nl
            return prefix + " " * col + _yaml_key(part) + ":" + inline + nl + body + text[pos:]
        k, v = pair
        if v.start_mark.index < k.end_mark.index or (
                not _yaml_is_empty(v) and text[v.start_mark.index] in "&*!"):
            raise _Fallback  # alias, anchor or tag: let ruamel handle it
        if last:
            if not isinstance(v, ScalarNode) and not replace_collection:
                kind = "mapping" if isinstance(v, MappingNode) else "list"
                raise ExportError(f"key {'.'.join(parts)!r} holds a {kind}, not a string")
            return _yaml_replace(text, k, v, leaf, step, nl)
        if isinstance(v, MappingNode):
            if v.flow_style or not v.value:
                raise _Fallback
            m = v
            continue
        if _yaml_is_null(v):
            return _yaml_replace(text, k, v, _yaml_chain_emit(parts[i + 1:], leaf), step, nl)
        kind = "list" if isinstance(v, SequenceNode) else "scalar"
        raise ExportError(f"key {'.'.join(parts[:i + 1])!r} holds a {kind}, not a mapping")
    raise AssertionError("unreachable")


def _yaml_replace(text: str, k, v, emit: _Emit, step: int, nl: str) -> str:
    """Replace the value `v` of key `k` (in a block mapping) with what `emit` writes."""
    _, ScalarNode, _ = _yaml_scalar_nodes()
    colon = k.end_mark.index
    while colon < len(text) and text[colon] in " \t":
        colon += 1
    if colon >= len(text) or text[colon] != ":":
        raise _Fallback  # complex key syntax
    a = colon + 1
    inline, body = emit(k.start_mark.column, step, nl)
    if isinstance(v, ScalarNode) and v.style in ("|", ">") and not _yaml_is_empty(v):
        vs = v.start_mark.index
        b = _yaml_block_scalar_end(text, v)
        header = text[vs:_eol(text, vs)].rstrip("\r")
        cm = re.match(r"[|>][0-9+-]*([ \t]+#.*)?", header)
        tail = (cm.group(1) or "") if cm else ""
        lead = text[a:vs] if inline.startswith(" ") else ""
        new = (lead + inline[1:] if lead else inline) + tail + nl + body
        return text[:a] + new + text[b:]
    if isinstance(v, ScalarNode) or v.flow_style:
        if _yaml_is_empty(v):
            lead, vend = "", a
        else:
            lead, vend = text[a:v.start_mark.index], v.end_mark.index
        line_end = _eol(text, vend)
        tail = text[vend:line_end]
        if tail.endswith("\r"):
            tail = tail[:-1]
        if tail.strip() and not tail.lstrip().startswith("#"):
            raise _Fallback
        if lead and inline.startswith(" ") and "\n" not in lead:
            inline = lead + inline[1:]
        b = line_end + 1 if line_end < len(text) else line_end
        if not body and line_end == len(text):
            return text[:a] + inline + tail + text[b:]
        return text[:a] + inline + tail + nl + body + text[b:]
    # block mapping or sequence value
    line_end = _eol(text, a)
    tail = text[a:line_end]
    if tail.endswith("\r"):
        tail = tail[:-1]
    if tail.strip() and not tail.lstrip().startswith("#"):
        raise _Fallback
    b = _yaml_node_end(text, v, k)
    return text[:a] + inline + tail + nl + body + text[b:]


def _yaml_prompt_emitters(prompt: str) -> list[_Emit]:
    """Ways to write the prompt, best first: literal block (multi-line), ruamel's choice, double-quoted."""
    emitters: list[_Emit] = []
    if "\n" in prompt:
        def literal(col: int, step: int, nl: str) -> tuple[str, str]:
            r = _yaml_literal(prompt, col, step, nl)
            if r is None:
                raise _Fallback
            return r

        emitters.append(literal)
    else:
        emitters.append(lambda col, step, nl: (" " + _yaml_flow_scalar(prompt), ""))
    emitters.append(lambda col, step, nl: (" " + _yaml_dq(prompt), ""))
    return emitters


def _yaml_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                 name: str) -> str:
    text = text or ""
    data = _yaml_load(text, name) if text.strip() else None
    if data is not None and not isinstance(data, Mapping):
        raise ExportError(f"{name}: the YAML document is a {type(data).__name__}, not a mapping")
    expected = _plain(data) if data is not None else {}
    _check_path(expected, parts, name)
    _deep_set(expected, parts, prompt)
    prov_parts = parts[:-1] + [parts[-1] + "_provenance"]
    if prov is not None:
        _deep_set(expected, prov_parts, dict(prov))

    def ok(candidate: str) -> bool:
        try:
            got = _yaml_rt().load(candidate)
        except Exception:
            return False
        return _plain(got if got is not None else {}) == expected

    for emit in _yaml_prompt_emitters(prompt):
        try:
            new = _yaml_splice(text, parts, emit, replace_collection=False)
            if prov is not None:
                def emit_prov(col: int, step: int, nl: str) -> tuple[str, str]:
                    return "", _yaml_mapping_body(prov, col + step, nl)

                new = _yaml_splice(new, prov_parts, emit_prov, replace_collection=True, after=parts[-1])
        except _Fallback:
            continue
        except ExportError as e:
            raise ExportError(f"{name}: {e}") from None
        if ok(new):
            return new
    new = _yaml_full_roundtrip(text, parts, prompt, prov, prov_parts)
    if ok(new):
        return new
    raise ExportError(f"{name}: could not write the prompt under {key!r} so that it reads back exactly")


def _yaml_full_roundtrip(text: str, parts: list[str], prompt: str, prov: dict | None,
                         prov_parts: list[str]) -> str:
    import io

    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import LiteralScalarString
    from ruamel.yaml.util import load_yaml_guess_indent

    y = _yaml_rt()
    if text.strip():
        data, indent, block_seq_indent = load_yaml_guess_indent(text)
        y.indent(mapping=indent or 2, sequence=(indent or 2) + (block_seq_indent or 0),
                 offset=block_seq_indent or 0)
    else:
        data = None
    if data is None:
        data = CommentedMap()

    def put(path: list[str], value: Any) -> None:
        d = data
        for p in path[:-1]:
            if d.get(p) is None:
                d[p] = CommentedMap()
            d = d[p]
        d[path[-1]] = value

    literal_ok = "\n" in prompt and not _YAML_LITERAL_BAD.search(prompt) and prompt.strip("\n")
    put(parts, LiteralScalarString(prompt) if literal_ok else prompt)
    if prov is not None:
        put(prov_parts, CommentedMap(prov))
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------- json


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
    from json.decoder import scanstring

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


def _json_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                 name: str) -> str:
    prov_parts = parts[:-1] + [parts[-1] + "_provenance"]
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


# --------------------------------------------------------------------------------------------------- toml


def _toml_read(text: str, key: str, parts: list[str], name: str) -> Any:
    try:
        import tomllib

        data = tomllib.loads(text)
    except ImportError:  # Python < 3.11
        import tomlkit

        data = tomlkit.parse(text).unwrap()
    except ValueError as e:
        raise ExportError(f"{name}: cannot parse TOML: {e}") from e
    return _deep_get(data, parts, name, key)


def _toml_mlb(s: str) -> str:
    """The inside of a multi-line basic string (between the triple quotes) that reads back as `s`.

    It starts with a newline (which TOML drops), escapes backslashes and control characters, and breaks
    up runs of three quotes and quotes touching the closing delimiter.
    """
    out = ["\n"]
    run = 0
    for i, ch in enumerate(s):
        o = ord(ch)
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
        elif ch == "\r":
            out.append("\\r")
        elif ch in "\n\t":
            out.append(ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    return "".join(out)


def _toml_string_items(prompt: str) -> list:
    import tomlkit
    from tomlkit.items import String, StringType, Trivia

    items = []
    if "\n" in prompt:
        try:
            items.append(String(StringType.MLB, prompt, _toml_mlb(prompt), Trivia()))
        except Exception:  # tomlkit internals changed: use its own multi-line writer
            items.append(tomlkit.string(prompt, multiline=True))
    items.append(tomlkit.string(prompt))
    return items


def _toml_clean(value: Any) -> Any:
    """TOML has no null: drop None values from provenance."""
    if isinstance(value, Mapping):
        return {str(k): _toml_clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_clean(v) for v in value if v is not None]
    return value


def _toml_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                 name: str) -> str:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    text = text or ""
    try:
        before = tomlkit.parse(text).unwrap()
    except TOMLKitError as e:
        raise ExportError(f"{name}: cannot parse TOML: {e}") from e
    expected = _plain(before)
    _check_path(expected, parts, name, "table")
    _deep_set(expected, parts, prompt)
    prov_clean = _toml_clean(prov) if prov is not None else None
    if prov_clean is not None:
        _deep_set(expected, parts[:-1] + [parts[-1] + "_provenance"], prov_clean)
    for item in _toml_string_items(prompt):
        doc = tomlkit.parse(text)
        container: Any = doc
        for i, p in enumerate(parts[:-1]):
            if p not in container or container[p] is None:
                container[p] = tomlkit.table()
            sub = container[p]
            if not isinstance(sub, Mapping):
                raise ExportError(f"{name}: key {'.'.join(parts[:i + 1])!r} holds "
                                  f"{_an(_kind(sub, 'table'))}, not a table")
            container = sub
        leaf = parts[-1]
        if leaf in container and isinstance(container[leaf], (Mapping, list)):
            raise ExportError(f"{name}: key {key!r} holds {_an(_kind(container[leaf], 'table'))}, "
                              f"not a string")
        _toml_put(container, leaf, item, after=None)
        if prov_clean is not None:
            table = tomlkit.inline_table()
            table.update(prov_clean)
            _toml_put(container, leaf + "_provenance", table, after=leaf)
        new = doc.as_string()
        try:
            if _plain(tomlkit.parse(new).unwrap()) == expected:
                return new
        except TOMLKitError:
            pass
    raise ExportError(f"{name}: could not write the prompt under {key!r} so that it reads back exactly")


def _toml_put(container: Any, key: str, item: Any, after: str | None) -> None:
    """Set container[key], placing a new key right after `after` (or after the last key-value)."""
    if key in container:
        container[key] = item
        return
    from tomlkit.container import Container

    inner = container if isinstance(container, Container) else getattr(container, "value", None)
    if not isinstance(inner, Container):
        container[key] = item
        return
    if after is None or after not in container:
        # after the last plain `key = value`, so trailing comments, blank lines and sub-tables stay put
        plain = [k for k, v in inner.body if k is not None and type(v).__name__ not in ("Table", "AoT")]
        after = plain[-1].key if plain else None
    if after is not None:
        try:
            inner._insert_after(after, key, item)
            return
        except Exception:  # tomlkit internals changed: plain assignment appends at the end
            pass
    container[key] = item


# ---------------------------------------------------------------------------------------------------- env

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<key>'[^']+'|[^=#\s]+)[ \t]*=[ \t]*")
_ENV_DQ = re.compile(r'"((?:\\.|[^"\\])*)"', re.S)
_ENV_SQ = re.compile(r"'((?:\\.|[^'\\])*)'", re.S)
_ENV_DQ_ESC = re.compile(r"\\[\\'\"abfnrtv]")
_ENV_SQ_ESC = re.compile(r"\\[\\']")
_ENV_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
                "t": "\t", "v": "\v"}
_PROV_COMMENT = re.compile(r"[ \t]*# promptlearn:")


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


def _env_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                name: str) -> str:
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
        new = _put_comment_above(new, b.line_start, comment, nl)
    return new


def _put_comment_above(text: str, line_start: int, comment: str, nl: str) -> str:
    """Put `comment` on the line above `line_start`, replacing a `# promptlearn:` line already there."""
    if line_start > 0:
        prev_start = _line_start(text, line_start - 1)
        prev = text[prev_start:line_start - 1]
        if _PROV_COMMENT.match(prev):
            indent = prev[:len(prev) - len(prev.lstrip())]
            end = line_start - 1 - (1 if prev.endswith("\r") else 0)
            return text[:prev_start] + indent + comment + text[end:]
    indent = re.match(r"[ \t]*", text[line_start:]).group()
    return text[:line_start] + indent + comment + nl + text[line_start:]


# ----------------------------------------------------------------------------------------------------- py


def _py_name(parts: list[str]) -> str:
    import keyword

    name = parts[-1]
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{name!r} (last part of the key) is not a valid Python variable name")
    return name


def _py_parse(text: str, name: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as e:
        raise ExportError(f"{name}: cannot parse Python: {e}") from e


def _py_find(tree: ast.Module, var: str) -> ast.stmt | None:
    found = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in stmt.targets):
            found = stmt
        elif (isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name)
              and stmt.target.id == var):
            found = stmt
    return found


def _py_line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer(r"\r\n|\r|\n", text):
        starts.append(m.end())
    return starts


def _py_offset(text: str, starts: list[int], lineno: int, col: int) -> int:
    """Character index of (1-based line, UTF-8 byte column) as ast reports positions."""
    ls = starts[lineno - 1]
    le = starts[lineno] if lineno < len(starts) else len(text)
    return ls + len(text[ls:le].encode("utf-8")[:col].decode("utf-8"))


def _py_read(text: str, key: str, parts: list[str], name: str) -> Any:
    var = _py_name(parts)
    stmt = _py_find(_py_parse(text, name), var)
    if stmt is None:
        raise MissingKeyError(name, key, f"no module-level assignment to {var}")
    try:
        return ast.literal_eval(stmt.value)
    except ValueError as e:
        raise ExportError(f"{name}: {var} is not assigned a string literal") from e


def _py_escape(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def _py_literals(prompt: str) -> list[str]:
    """String literals for the prompt, best first: triple-quoted for multi-line text, else repr()-style."""
    out = []
    if "\n" in prompt:
        body = []
        run = 0
        for i, ch in enumerate(prompt):
            if ch == '"':
                if run == 2 or i == len(prompt) - 1:
                    body.append('\\"')
                    run = 0
                else:
                    body.append('"')
                    run += 1
                continue
            run = 0
            if ch == "\\":
                body.append("\\\\")
            elif ch in "\n\t":
                body.append(ch)
            elif ch == "\r" or not ch.isprintable():
                body.append(_py_escape(ch))
            else:
                body.append(ch)
        out.append('"""' + "".join(body) + '"""')
    r = repr(prompt)
    if r.startswith("'") and '"' not in prompt:
        r = '"' + r[1:-1].replace("\\'", "'") + '"'
    out.append(r)
    out.append(repr(prompt))
    return out


def _py_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
               name: str) -> str:
    text = text or ""
    var = _py_name(parts)
    tree = _py_parse(text, name)
    stmt = _py_find(tree, var)
    nl = _newline(text)
    comment = f"# promptlearn: {_prov_comment(prov)}" if prov is not None else None
    if stmt is not None:
        try:
            ast.literal_eval(stmt.value)
        except ValueError:
            raise ExportError(f"{name}: {var} is assigned an expression, not a string literal; "
                              f"refusing to overwrite it") from None
    for lit in _py_literals(prompt):
        try:
            if ast.literal_eval(lit) != prompt:
                continue
        except (ValueError, SyntaxError):
            continue
        if stmt is None:
            new = _with_final_newline(text, nl)
            if new.strip() and not new.endswith(nl + nl) and not new.endswith("\n\n"):
                new += nl
            new += (comment + nl if comment else "") + f"{var} = {lit}" + nl
        else:
            starts = _py_line_starts(text)
            v = stmt.value
            a = _py_offset(text, starts, v.lineno, v.col_offset)
            b = _py_offset(text, starts, v.end_lineno, v.end_col_offset)
            new = text[:a] + lit + text[b:]
            if comment:
                new = _put_comment_above(new, starts[stmt.lineno - 1], comment, nl)
        try:
            if _py_read(new, key, parts, name) == prompt:
                return new
        except ExportError:
            continue
    raise ExportError(f"{name}: could not write the prompt under {key!r} so that it reads back exactly")


# ----------------------------------------------------------------------------------------------------- md

_MD_START = re.compile(r"<!-- promptlearn:(\S+) -->[ \t]*\r?")
_MD_PROV = "<!-- promptlearn provenance: "
_MD_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


class _MdBlock:
    __slots__ = ("key", "start", "end", "prompt")

    def __init__(self, key: str, start: int, end: int, prompt: str) -> None:
        self.key, self.start, self.end, self.prompt = key, start, end, prompt


def _md_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line without its line break) for every line."""
    out = []
    pos = 0
    while pos < len(text):
        e = _eol(text, pos)
        line = text[pos:e]
        out.append((pos, line[:-1] if line.endswith("\r") else line))
        pos = e + 1
    return out


def _md_blocks(text: str, name: str) -> list[_MdBlock]:
    lines = _md_lines(text)
    blocks = []
    i = 0
    fence: str | None = None
    while i < len(lines):
        off, line = lines[i]
        if fence is not None:  # inside an ordinary fenced code block: markers there are just text
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
            i += 1
            continue
        fm = _MD_FENCE.match(line)
        if fm:
            fence = fm.group(1)
            i += 1
            continue
        m = _MD_START.fullmatch(line)
        if not m:
            i += 1
            continue
        key = m.group(1)
        end_marker = f"<!-- /promptlearn:{key} -->"
        j = i + 1
        while j < len(lines) and not re.fullmatch(r"`{3,}.*", lines[j][1]) and lines[j][1].strip() != end_marker:
            j += 1
        if j >= len(lines) or lines[j][1].strip() == end_marker:
            raise ExportError(f"{name}: the promptlearn block for {key!r} (line {i + 1}) has no ``` fence")
        ticks = re.match(r"`+", lines[j][1]).group()
        body_start = lines[j + 1][0] if j + 1 < len(lines) else len(text)
        k = j + 1
        while k < len(lines) and not (lines[k][1].rstrip().startswith(ticks)
                                      and set(lines[k][1].rstrip()) == {"`"}):
            k += 1
        if k >= len(lines):
            raise ExportError(f"{name}: the fence of the promptlearn block for {key!r} (line {i + 1}) "
                              f"is not closed")
        body = text[body_start:lines[k][0]]
        prompt = body[:-1] if body.endswith("\n") else body
        e = k + 1
        while e < len(lines) and lines[e][1].strip() != end_marker:
            if lines[e][1].strip():
                raise ExportError(f"{name}: expected {end_marker} after the fence (line {e + 1})")
            e += 1
        if e >= len(lines):
            raise ExportError(f"{name}: the promptlearn block for {key!r} (line {i + 1}) has no {end_marker}")
        end = _next_line(text, lines[e][0])
        blocks.append(_MdBlock(key, off, end, prompt))
        i = e + 1
    return blocks


def _md_key(key: str) -> str:
    if re.search(r"\s|--|>", key):
        raise ValueError(f"key {key!r} cannot be used in a Markdown marker (no spaces, '--' or '>')")
    return key


def _md_read(text: str, key: str, parts: list[str], name: str) -> Any:
    _md_key(key)
    found = [b for b in _md_blocks(text, name) if b.key == key]
    if not found:
        raise MissingKeyError(name, key, f"no <!-- promptlearn:{key} --> block")
    return found[-1].prompt


def _md_block(key: str, prompt: str, prov: dict | None, nl: str) -> str:
    longest = max((len(r) for r in re.findall(r"`+", prompt)), default=0)
    fence = "`" * max(3, longest + 1)
    out = f"<!-- promptlearn:{key} -->{nl}"
    if prov is not None:
        out += f"{_MD_PROV}{_prov_comment(prov)} -->{nl}"
    out += f"{fence}text{nl}{prompt}\n{fence}{nl}<!-- /promptlearn:{key} -->{nl}"
    return out


def _md_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
               name: str) -> str:
    text = text or ""
    _md_key(key)
    nl = _newline(text)
    found = [b for b in _md_blocks(text, name) if b.key == key]
    if found:
        b = found[-1]
        old_block = text[b.start:b.end]
        if prov is None:
            # keep a provenance line an earlier export wrote, the prompt is what changes
            pm = re.search(re.escape(_MD_PROV) + r".*-->", old_block)
            block = _md_block(key, prompt, None, nl)
            if pm:
                first_nl = block.index(nl) + len(nl)
                block = block[:first_nl] + pm.group() + nl + block[first_nl:]
        else:
            block = _md_block(key, prompt, prov, nl)
        if not old_block.endswith("\n"):
            block = block[:-len(nl)]
        new = text[:b.start] + block + text[b.end:]
    else:
        new = _with_final_newline(text, nl)
        if new.strip() and not new.endswith("\n\n"):
            new += nl
        new += _md_block(key, prompt, prov, nl)
    if _md_read(new, key, parts, name) != prompt:
        raise ExportError(f"{name}: could not write the prompt under {key!r} so that it reads back exactly")
    return new
