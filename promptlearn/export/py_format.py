"""Python: a module-level NAME = "string literal", found with ast and replaced in the text."""

from __future__ import annotations

import ast
import re
from typing import Any

from promptlearn.export.core import (
    ExportError,
    MissingKeyError,
    _newline,
    _prov_comment,
    _put_comment_above,
    _read_comment_above,
    _triple_quoted_body,
    _with_final_newline,
)

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


def _py_find(tree: ast.Module, var: str) -> tuple[ast.stmt, ast.expr] | None:
    """The last module-level assignment to `var` and the value it assigns."""
    found: tuple[ast.stmt, ast.expr] | None = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in stmt.targets):
            found = stmt, stmt.value
        elif (isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name)
              and stmt.target.id == var):
            found = stmt, stmt.value
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
    found = _py_find(_py_parse(text, name), var)
    if found is None:
        raise MissingKeyError(name, key, f"no module-level assignment to {var}")
    try:
        return ast.literal_eval(found[1])
    except ValueError as e:
        raise ExportError(f"{name}: {var} is not assigned a string literal") from e


def _py_escape(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def _py_literals(prompt: str) -> list[str]:
    """String literals for the prompt, best first: triple-quoted for multi-line text, else repr()-style."""
    out = []
    if "\n" in prompt:
        body = _triple_quoted_body(prompt, lambda ch: _py_escape(ch) if ch == "\r" or not ch.isprintable() else ch)
        out.append('"""' + body + '"""')
    r = repr(prompt)
    if r.startswith("'") and '"' not in prompt:
        r = '"' + r[1:-1].replace("\\'", "'") + '"'
    out.append(r)
    out.append(repr(prompt))
    return out


def _py_sig(text: str) -> str:
    return ast.dump(ast.parse(text))


def _py_read_prov(text: str, key: str, parts: list[str], name: str) -> dict[str, Any] | None:
    var = _py_name(parts)
    found = _py_find(_py_parse(text, name), var)
    if found is None:
        raise MissingKeyError(name, key, f"no module-level assignment to {var}")
    return _read_comment_above(text, _py_line_starts(text)[found[0].lineno - 1], _py_sig)


def _py_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
               name: str, form: str = "comment") -> str:
    text = text or ""
    var = _py_name(parts)
    tree = _py_parse(text, name)
    found = _py_find(tree, var)
    nl = _newline(text)
    comment = f"# promptlearn: {_prov_comment(prov)}" if prov is not None else None
    if found is not None:
        try:
            ast.literal_eval(found[1])
        except ValueError:
            raise ExportError(f"{name}: {var} is assigned an expression, not a string literal; "
                              f"refusing to overwrite it") from None
    for lit in _py_literals(prompt):
        try:
            if ast.literal_eval(lit) != prompt:
                continue
        except (ValueError, SyntaxError):
            continue
        if found is None:
            new = _with_final_newline(text, nl)
            if new.strip() and not new.endswith(nl + nl) and not new.endswith("\n\n"):
                new += nl
            new += (comment + nl if comment else "") + f"{var} = {lit}" + nl
        else:
            starts = _py_line_starts(text)
            stmt, v = found
            assert v.end_lineno is not None and v.end_col_offset is not None  # set on every parsed node
            a = _py_offset(text, starts, v.lineno, v.col_offset)
            b = _py_offset(text, starts, v.end_lineno, v.end_col_offset)
            new = text[:a] + lit + text[b:]
            if comment:
                new = _put_comment_above(new, starts[stmt.lineno - 1], comment, nl, _py_sig)
        try:
            if _py_read(new, key, parts, name) == prompt:
                return new
        except ExportError:
            continue
    raise ExportError(f"{name}: could not write the prompt under {key!r} so that it reads back exactly")
