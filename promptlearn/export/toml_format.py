"""TOML: edit through tomlkit, which keeps comments and layout; a multi-line prompt as a multi-line basic string."""

from __future__ import annotations

import sys
from typing import Any, Mapping

from promptlearn.export.core import (
    _PROV_COMMENT,
    ExportError,
    _an,
    _check_path,
    _deep_get,
    _deep_set,
    _kind,
    _newline,
    _plain,
    _prov_comment,
    _prov_parse,
    _prov_parts,
    _sibling_prov,
    _triple_quoted_body,
)


def _toml_read(text: str, key: str, parts: list[str], name: str) -> Any:
    try:
        if sys.version_info >= (3, 11):
            import tomllib

            data = tomllib.loads(text)
        else:
            import tomlkit

            data = tomlkit.parse(text).unwrap()
    except ValueError as e:  # tomllib.TOMLDecodeError, tomlkit's ParseError
        raise ExportError(f"{name}: cannot parse TOML: {e}") from e
    return _deep_get(data, parts, name, key)


def _toml_mlb(s: str) -> str:
    """The inside of a multi-line basic string (between the triple quotes) that reads back as `s`.

    It starts with a newline (which TOML drops), escapes backslashes and control characters, and breaks
    up runs of three quotes and quotes touching the closing delimiter.
    """
    return "\n" + _triple_quoted_body(s, _toml_escape)


def _toml_escape(ch: str) -> str:
    o = ord(ch)
    if ch == "\r":
        return "\\r"
    return f"\\u{o:04X}" if o < 0x20 or o == 0x7F else ch


def _toml_string_items(prompt: str, style: Any = None) -> list:
    """String items for the prompt, best first: the style of the value it replaces (`style`, a tomlkit StringType:
    basic stays basic, literal stays literal, multi-line stays multi-line; a multi-line prompt makes a one-line
    style multi-line of the same kind), then the nearest valid style, then tomlkit's own choices. Literal strings
    have no escapes, so a prompt they cannot hold (a quote, a control character) falls back to basic."""
    import tomlkit
    from tomlkit.items import String, StringType, Trivia

    literal = style in (StringType.SLL, StringType.MLL)
    multi = style in (StringType.MLB, StringType.MLL) or "\n" in prompt
    items = []

    def add(kind: Any, original: str) -> None:
        try:
            items.append(String(kind, prompt, original, Trivia()))
        except Exception:  # noqa: BLE001 - tomlkit internals changed: its own writers below still apply
            pass

    bad_literal = any((ord(c) < 0x20 and c not in "\t\n") or ord(c) == 0x7F for c in prompt)
    if literal and multi and not bad_literal and "\'\'\'" not in prompt and not prompt.endswith("'"):
        add(StringType.MLL, "\n" + prompt)  # TOML drops the newline right after the opening quotes
    if literal and not multi and not bad_literal and "'" not in prompt:
        add(StringType.SLL, prompt)
    if multi:
        add(StringType.MLB, _toml_mlb(prompt))
    if "\n" in prompt:
        items.append(tomlkit.string(prompt, multiline=True))
    items.append(tomlkit.string(prompt))
    return items


def _toml_old_style(doc: Any, parts: list[str]) -> Any:
    """The StringType of the string at `parts` in the parsed document (None when there is none)."""
    from tomlkit.items import String

    path = _toml_path(doc, parts)
    if path is None:
        return None
    c, i = path[-1]
    item = c.body[i][1]
    return item.type if isinstance(item, String) else None


def _toml_path(container: Any, parts: list[str]) -> list[tuple[Any, int]] | None:
    """(container, index in its body) of each key on the way to `parts`; dotted keys and inline tables count."""
    from tomlkit.items import InlineTable, Table

    body = container.body
    for idx in range(len(body) - 1, -1, -1):
        k, v = body[idx]
        if k is None or k.key != parts[0]:
            continue
        if len(parts) == 1:
            return [(container, idx)]
        if isinstance(v, (Table, InlineTable)):
            rest = _toml_path(v.value, parts[1:])
            if rest is not None:
                return [(container, idx)] + rest
    return None


def _toml_anchor(doc: Any, parts: list[str]) -> tuple[Any, int] | None:
    """The body entry the key's line starts with, which a provenance comment goes above: the key itself, or the
    dotted key / inline table holding it."""
    from tomlkit.items import InlineTable

    path = _toml_path(doc, parts)
    if path is None:
        return None
    level = len(path) - 1
    while level > 0:
        c, i = path[level - 1]
        k, v = c.body[i]
        if not (isinstance(v, InlineTable) or k.is_dotted()):
            break
        level -= 1
    return path[level]


def _toml_prov_comment(c: Any, i: int) -> Any:
    """The `# promptlearn:` Comment item right above body entry `i`, if there is one."""
    from tomlkit.items import Comment

    if i <= 0:
        return None
    item = c.body[i - 1][1]
    if isinstance(item, Comment) and _PROV_COMMENT.fullmatch(item.trivia.indent + item.trivia.comment):
        return item
    return None


def _toml_set_comment(doc: Any, parts: list[str], comment: str | None, nl: str) -> None:
    """Put `comment` above the key at `parts`, replacing the provenance comment there (None: remove it)."""
    from tomlkit.items import Comment, Trivia

    anchor = _toml_anchor(doc, parts)
    if anchor is None:
        return
    c, i = anchor
    old = _toml_prov_comment(c, i)
    if old is not None:
        if comment is not None:
            old.trivia.comment = comment
        else:
            _toml_body_shift(c, i - 1, -1)
            del c.body[i - 1]
        return
    if comment is None:
        return
    indent = getattr(c.body[i][1], "trivia", Trivia()).indent
    _toml_body_shift(c, i, 1)
    c.body.insert(i, (None, Comment(Trivia(indent=indent, comment_ws="", comment=comment, trail=nl))))


def _toml_body_shift(c: Any, at: int, by: int) -> None:
    """Keep tomlkit's key -> body index map right when an unkeyed entry (a comment) is inserted or removed."""
    for k, v in list(c._map.items()):
        if isinstance(v, tuple):
            c._map[k] = tuple(x + by if x >= at else x for x in v)
        elif v >= at:
            c._map[k] = v + by


def _toml_read_prov(text: str, key: str, parts: list[str], name: str) -> dict[str, Any] | None:
    import tomlkit

    data = _toml_read(text, key, parts, name)
    del data  # only to raise MissingKeyError / ExportError as read_prompt does
    doc = tomlkit.parse(text)
    anchor = _toml_anchor(doc, parts)
    old = _toml_prov_comment(*anchor) if anchor is not None else None
    if old is not None:
        m = _PROV_COMMENT.fullmatch(old.trivia.comment)
        if m:
            return _prov_parse(m.group(1))
    try:
        value = _deep_get(_plain(doc.unwrap()), _prov_parts(parts), name, key)
    except KeyError:
        return None
    return dict(value) if isinstance(value, Mapping) else None


def _toml_clean(value: Any) -> Any:
    """TOML has no null: drop None values from provenance."""
    if isinstance(value, Mapping):
        return {str(k): _toml_clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_clean(v) for v in value if v is not None]
    return value


def _toml_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
                 name: str, form: str = "comment") -> str:
    """`form` 'comment': provenance is a `# promptlearn:` comment line above the key (and a sibling key an earlier
    export wrote is kept up to date); 'key': the sibling inline table `<leaf>_provenance`, and no comment."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    text = text or ""
    try:
        parsed = tomlkit.parse(text)
        before = parsed.unwrap()
    except TOMLKitError as e:
        raise ExportError(f"{name}: cannot parse TOML: {e}") from e
    expected = _plain(before)
    _check_path(expected, parts, name, "table")
    _deep_set(expected, parts, prompt)
    sibling = _sibling_prov(before, prov, _prov_parts(parts), form)
    prov_clean = _toml_clean(sibling) if sibling is not None else None
    if prov_clean is not None:
        _deep_set(expected, _prov_parts(parts), prov_clean)
    comment = f"# promptlearn: {_prov_comment(prov)}" if prov is not None and form == "comment" else None
    for item in _toml_string_items(prompt, _toml_old_style(parsed, parts)):
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
        if prov is not None:  # last: it edits tomlkit's body directly, and the document is only printed after
            _toml_set_comment(doc, parts, comment, _newline(text))
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
    # tomlkit has no public insert; _insert_at is in every release we support (0.15.3 dropped _insert_after)
    at = next((i + 1 for i, (k, _) in enumerate(inner.body) if k is not None and k.key == after), None)
    if at is not None and at < len(inner.body):
        try:
            inner._insert_at(at, key, item)
            return
        except Exception:  # noqa: BLE001 - tomlkit internals changed: plain assignment appends at the end
            pass
    container[key] = item
