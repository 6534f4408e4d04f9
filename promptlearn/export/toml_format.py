"""TOML: edit through tomlkit, which keeps comments and layout; a multi-line prompt as a multi-line basic string."""

from __future__ import annotations

import sys
from typing import Any, Mapping

from promptlearn.export.core import (
    ExportError,
    _an,
    _check_path,
    _deep_get,
    _deep_set,
    _kind,
    _plain,
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


def _toml_string_items(prompt: str) -> list:
    import tomlkit
    from tomlkit.items import String, StringType, Trivia

    items = []
    if "\n" in prompt:
        try:
            items.append(String(StringType.MLB, prompt, _toml_mlb(prompt), Trivia()))
        except Exception:  # noqa: BLE001 - tomlkit internals changed: use its own multi-line writer
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
        except Exception:  # noqa: BLE001 - tomlkit internals changed: plain assignment appends at the end
            pass
    container[key] = item
