"""Markdown: a fenced block between <!-- promptlearn:KEY --> and <!-- /promptlearn:KEY --> markers."""

from __future__ import annotations

import re
from typing import Any

from promptlearn.export.core import (
    ExportError,
    MissingKeyError,
    _eol,
    _newline,
    _next_line,
    _prov_comment,
    _prov_parse,
    _with_final_newline,
)

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
        ticks = lines[j][1][:len(lines[j][1]) - len(lines[j][1].lstrip("`"))]
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


def _md_read_prov(text: str, key: str, parts: list[str], name: str) -> dict[str, Any] | None:
    _md_key(key)
    found = [b for b in _md_blocks(text, name) if b.key == key]
    if not found:
        raise MissingKeyError(name, key, f"no <!-- promptlearn:{key} --> block")
    b = found[-1]
    # the provenance line sits between the start marker and the fence, outside the prompt
    head = text[b.start:b.end].split("```", 1)[0].split("~~~", 1)[0]
    m = re.search(re.escape(_MD_PROV) + r"(.*?) -->", head)
    return _prov_parse(m.group(1)) if m else None


def _md_block(key: str, prompt: str, prov: dict | None, nl: str) -> str:
    longest = max((len(r) for r in re.findall(r"`+", prompt)), default=0)
    fence = "`" * max(3, longest + 1)
    out = f"<!-- promptlearn:{key} -->{nl}"
    if prov is not None:
        out += f"{_MD_PROV}{_prov_comment(prov)} -->{nl}"
    out += f"{fence}text{nl}{prompt}\n{fence}{nl}<!-- /promptlearn:{key} -->{nl}"
    return out


def _md_export(text: str | None, key: str, parts: list[str], prompt: str, prov: dict | None,
               name: str, form: str = "comment") -> str:
    text = text or ""
    _md_key(key)
    nl = _newline(text)
    found = [b for b in _md_blocks(text, name) if b.key == key]
    if found:
        b = found[-1]
        old_block = text[b.start:b.end]
        if prov is None:
            # keep a provenance line an earlier export wrote, the prompt is what changes
            pm = re.search(re.escape(_MD_PROV) + r".*-->", old_block.split("```", 1)[0])
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
