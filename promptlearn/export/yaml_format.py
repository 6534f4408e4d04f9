"""YAML: splice the new value into the text (ruamel.yaml only parses); a full round trip where that cannot."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

from promptlearn.export.core import (
    ExportError,
    _check_path,
    _deep_get,
    _deep_set,
    _eol,
    _line_start,
    _newline,
    _next_line,
    _plain,
    _prov_comment,
    _prov_parts,
    _put_comment_above,
    _read_comment_above,
    _sibling_prov,
    _with_final_newline,
)

if TYPE_CHECKING:  # ruamel loads on first use
    from ruamel.yaml import YAML
    from ruamel.yaml import nodes

# A composed node (scalar, sequence or mapping). Any: the node classes are loaded on first use, and isinstance
# against those runtime variables narrows nothing for mypy.
_Node = Any


class _Fallback(Exception):
    """The text splice cannot handle this document; use a full ruamel round trip instead."""


def _yaml_rt() -> YAML:
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


def _yaml_literal(s: str, key_col: int, step: int, nl: str, *, one_line: bool = False) -> tuple[str, str] | None:
    """(header, body lines) of a literal block scalar holding `s` exactly, or None if it cannot (one_line: also
    for a prompt without a line break, to keep the block style of the value it replaces)."""
    if ("\n" not in s and not one_line) or not s.strip("\n") or _YAML_LITERAL_BAD.search(s):
        return None
    if any(ln and not ln.strip(" ") for ln in s.split("\n")):
        return None  # a line of spaces only: editors strip it, and re-reading the block can pick another style
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


def _yaml_scalar_nodes() -> tuple[type[nodes.MappingNode], type[nodes.ScalarNode], type[nodes.SequenceNode]]:
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    return MappingNode, ScalarNode, SequenceNode


def _yaml_is_empty(node: _Node) -> bool:
    return node.start_mark.index == node.end_mark.index


def _yaml_block_scalar_end(text: str, node: _Node) -> int:
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


def _yaml_node_end(text: str, node: _Node, key_node: _Node | None = None) -> int:
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


def _yaml_lookup(mnode: _Node, part: str) -> tuple[_Node, _Node] | None:
    _, ScalarNode, _ = _yaml_scalar_nodes()
    found = None
    for k, v in mnode.value:
        if isinstance(k, ScalarNode) and k.value == part:
            found = (k, v)
    return found


def _yaml_is_null(node: _Node) -> bool:
    _, ScalarNode, _ = _yaml_scalar_nodes()
    return (isinstance(node, ScalarNode) and node.style is None
            and node.value in ("", "~", "null", "Null", "NULL"))


def _yaml_step(root: _Node) -> int:
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


def _yaml_replace(text: str, k: _Node, v: _Node, emit: _Emit, step: int, nl: str) -> str:
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


def _yaml_prompt_emitters(prompt: str, style: str | None = None) -> list[_Emit]:
    """Ways to write the prompt, best first: the scalar style of the value it replaces (`style`: a block `|`/`>`
    stays a literal block, a quoted value stays quoted for a one-line prompt), then literal block (multi-line)
    or ruamel's choice, then double-quoted."""
    def literal(col: int, step: int, nl: str) -> tuple[str, str]:
        r = _yaml_literal(prompt, col, step, nl, one_line=style in ("|", ">"))
        if r is None:
            raise _Fallback
        return r

    def single(col: int, step: int, nl: str) -> tuple[str, str]:
        if "\n" in prompt or _YAML_LITERAL_BAD.search(prompt):
            raise _Fallback
        return " '" + prompt.replace("'", "''") + "'", ""

    dq: _Emit = lambda col, step, nl: (" " + _yaml_dq(prompt), "")  # noqa: E731
    # a multi-line prompt is a block whatever it replaces: a quoted one-liner would become one long escaped line
    keep: dict[str, list[_Emit]] = {"|": [literal], ">": [literal]}
    if "\n" not in prompt:
        keep.update({'"': [dq], "'": [single]})
    emitters: list[_Emit] = list(keep.get(style or "", []))
    if "\n" in prompt:
        emitters.append(literal)
    else:
        emitters.append(lambda col, step, nl: (" " + _yaml_flow_scalar(prompt), ""))
    emitters.append(dq)
    return emitters


def _yaml_pair(text: str, parts: list[str]) -> Any:
    """The composed (key node, value node) at the dotted `parts` of `text`; None when there is no such key."""
    MappingNode, _, _ = _yaml_scalar_nodes()
    from ruamel.yaml import YAML

    node, pair = YAML(typ="rt").compose(text), None
    for part in parts:
        if not isinstance(node, MappingNode):
            return None
        pair = _yaml_lookup(node, part)
        if pair is None:
            return None
        node = pair[1]
    return pair


def _yaml_style(text: str, parts: list[str]) -> str | None:
    """The scalar style ('|', '>', '"', "'" or None for plain) of the value at `parts`, None when there is none."""
    _, ScalarNode, _ = _yaml_scalar_nodes()
    try:
        pair = _yaml_pair(text, parts)
    except Exception:  # noqa: BLE001 - unparsable text fails later with its own error
        return None
    return pair[1].style if pair is not None and isinstance(pair[1], ScalarNode) else None


def _yaml_sig(text: str) -> Any:
    return _plain(_yaml_rt().load(text))


def _yaml_key_line(text: str, parts: list[str]) -> int | None:
    """Start of the line holding the key at `parts` (None when there is no such key)."""
    pair = _yaml_pair(text, parts)
    return None if pair is None else _line_start(text, pair[0].start_mark.index)


def _yaml_read_prov(text: str, key: str, parts: list[str], name: str) -> dict[str, Any] | None:
    data = _yaml_load(text, name)
    _deep_get(data if data is not None else {}, parts, name, key)
    line = _yaml_key_line(text, parts)
    found = _read_comment_above(text, line, _yaml_sig) if line is not None else None
    if found is not None:
        return found
    try:
        value = _deep_get(data, _prov_parts(parts), name, key)
    except KeyError:
        return None
    return dict(_plain(value)) if isinstance(value, Mapping) else None


def _yaml_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                 name: str, form: str = "comment") -> str:
    """`form` 'comment': provenance is a `# promptlearn:` line above the key (and a sibling key an earlier export
    wrote is kept up to date); 'key': the sibling mapping `<leaf>_provenance`, and no comment."""
    text = text or ""
    data = _yaml_load(text, name) if text.strip() else None
    if data is not None and not isinstance(data, Mapping):
        raise ExportError(f"{name}: the YAML document is a {type(data).__name__}, not a mapping")
    prov_parts = _prov_parts(parts)
    new = _yaml_write(text, data, key, parts, prompt, _sibling_prov(data, prov, prov_parts, form), name)
    if prov is None:
        return new
    comment = f"# promptlearn: {_prov_comment(prov)}" if form == "comment" else None
    line = _yaml_key_line(new, parts)
    assert line is not None  # the key was just written
    out = _put_comment_above(new, line, comment, _newline(new), _yaml_sig)
    try:
        same = out == new or _yaml_sig(out) == _yaml_sig(new)
    except Exception:  # noqa: BLE001 - a comment line that breaks the document is no place for it
        same = False
    if not same:
        raise ExportError(f"{name}: cannot put a provenance comment above {key!r}; write it as a key "
                          f"(provenance_as='key', --provenance key) or leave it out")
    return out


def _yaml_write(text: str, data: Any, key: str, parts: list[str], prompt: str, prov: dict | None,
                name: str) -> str:
    """`text` (loaded as `data`) with the prompt, and `prov` as the sibling mapping if given, spliced in."""
    expected = _plain(data) if data is not None else {}
    _check_path(expected, parts, name)
    _deep_set(expected, parts, prompt)
    prov_parts = _prov_parts(parts)
    if prov is not None:
        _deep_set(expected, prov_parts, dict(prov))

    def ok(candidate: str) -> bool:
        try:
            got = _yaml_rt().load(candidate)
        except Exception:  # noqa: BLE001 - whatever does not load back is not a candidate
            return False
        return _plain(got if got is not None else {}) == expected

    for emit in _yaml_prompt_emitters(prompt, _yaml_style(text, parts) if text.strip() else None):
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
