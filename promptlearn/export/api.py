"""The entry points: tell the format, read and atomically write the file, hand the text to the format's module."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from promptlearn.export.core import ExportError, _an, _check_form, _kind
from promptlearn.export.env_format import _env_export, _env_read, _env_read_prov
from promptlearn.export.json_format import _json_export, _json_read, _json_read_prov
from promptlearn.export.md_format import _md_export, _md_read, _md_read_prov
from promptlearn.export.py_format import _py_export, _py_read, _py_read_prov
from promptlearn.export.toml_format import _toml_export, _toml_read, _toml_read_prov
from promptlearn.export.yaml_format import _yaml_export, _yaml_read, _yaml_read_prov

FORMATS = ("yaml", "json", "toml", "env", "py", "md")

_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml", ".env": "env", ".py": "py",
             ".md": "md"}
_ALIASES = {"yml": "yaml", "dotenv": "env", "python": "py", "markdown": "md"}
_BOM = "\ufeff"


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
        named = _SUFFIXES.get(Path(path).suffix.lower())
        if named is not None and named != f:  # e.g. JSON into app.yaml: the app would no longer parse its file
            raise ValueError(f"{Path(path).name!r} is a {named} file by its name, not {f}; drop fmt= (--format) "
                             f"or write to a .{f} file")
        return f
    p = Path(path)
    name = p.name.lower()
    if p.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[p.suffix.lower()]
    if name == ".env" or name.endswith(".env") or name.startswith(".env."):
        return "env"
    raise ValueError(f"cannot tell the config format of {p.name!r} from its name; pass fmt= (--format on the "
                     f"command line): one of {', '.join(FORMATS)}")


def export_prompt(path: str | os.PathLike[str], key: str, prompt: str, *, fmt: str | None = None,
                  provenance: Mapping[str, Any] | None = None, provenance_as: str = "comment") -> None:
    """Write `prompt` under the dotted `key` of the config file at `path`, keeping the rest of the file.

    Creates the file (and missing parent mappings) when needed. `provenance` (run id, scores, sha256, ...)
    is written with the prompt, replacing what an earlier export wrote; without it an existing provenance
    entry is left as it is. `provenance_as`: "comment" (default) writes it as a comment attached to the key
    (`# promptlearn: k=v ...` above it in YAML, TOML, .env and Python; a `<!-- promptlearn provenance: -->`
    line in Markdown), so a strict config schema sees no extra key; JSON has no comments and always uses
    the sibling key. "key" writes the sibling key `<leaf>_provenance` (YAML, TOML, JSON only) and drops the
    comment. `read_provenance` reads either form back. The file is replaced atomically and keeps its
    permissions (and a UTF-8 BOM if it had one); it is not touched at all when nothing changes, so
    re-exporting the same prompt and provenance is byte-for-byte idempotent. Raises ValueError for an
    unknown format or form, ExportError (a ValueError) when the file cannot take the prompt.
    """
    f = detect_format(path, fmt)
    old = _read_file(path)
    bom = old is not None and old.startswith(_BOM)
    body = old[1:] if bom and old else old
    new = render_export(body, key, prompt, f, provenance=provenance, provenance_as=provenance_as,
                        name=Path(path).name)
    if bom:
        new = _BOM + new
    if new != old:
        _write_file(path, new)


def read_prompt(path: str | os.PathLike[str], key: str | None = None, *, fmt: str | None = None) -> str:
    """The prompt stored under `key` in the config file at `path`, exactly as the app loads it; for a registry
    prompt (`mlflow://prompts/NAME@ALIAS`, no key) the version the app's load_prompt gets, as a promptlearn
    template."""
    if isinstance(path, str) and path.startswith("mlflow://"):
        from promptlearn.export.mlflow_registry import read_registry_prompt

        return read_registry_prompt(path).prompt
    if key is None:
        raise TypeError("read_prompt needs the prompt's key in a config file")
    f = detect_format(path, fmt)
    return read_prompt_text(_config_text(path), key, f, name=Path(path).name)


def read_provenance(path: str | os.PathLike[str], key: str, *, fmt: str | None = None) -> dict[str, Any] | None:
    """The provenance an export wrote with the prompt under `key` (comment or sibling key), None if there is none.

    A build gate compares its "sha256" with `prompt_sha256(read_prompt(path, key))` to tell that the prompt the
    app loads is the one the run scored. Raises like `read_prompt` when the file or key is missing.
    """
    f = detect_format(path, fmt)
    return read_provenance_text(_config_text(path), key, f, name=Path(path).name)


def _config_text(path: str | os.PathLike[str]) -> str:
    """A config file's text as the app reads it (without a BOM); FileNotFoundError when it is missing."""
    text = _read_file(path)
    if text is None:
        raise FileNotFoundError(f"{path}: no such config file")
    return text[1:] if text.startswith(_BOM) else text


def read_provenance_text(text: str, key: str, fmt: str, *, name: str = "config") -> dict[str, Any] | None:
    """The provenance stored with the prompt under `key` in the config text `text` of format `fmt`."""
    f = detect_format(name, fmt)
    parts = _split_key(key)
    handler = {"yaml": _yaml_read_prov, "json": _json_read_prov, "toml": _toml_read_prov, "env": _env_read_prov,
               "py": _py_read_prov, "md": _md_read_prov}[f]
    return handler(text, key, parts, name)


def render_export(text: str | None, key: str, prompt: str, fmt: str, *,
                  provenance: Mapping[str, Any] | None = None, provenance_as: str = "comment",
                  name: str = "config") -> str:
    """The new file content: `text` (None for a missing file) with `prompt` written under `key`."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    f = detect_format(name, fmt)
    form = _check_form(provenance_as, f)
    parts = _split_key(key)
    prov = dict(provenance) if provenance else None
    if prov is not None and not all(isinstance(k, str) for k in prov):
        raise TypeError("provenance keys must be strings")
    handler = {"yaml": _yaml_export, "json": _json_export, "toml": _toml_export, "env": _env_export,
               "py": _py_export, "md": _md_export}[f]
    return handler(text, key, parts, prompt, prov, name, form)


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
