"""The lineage tree: every candidate under its first parent, with the word diff from that parent.

Word diffs rather than line diffs: a prompt is often one long paragraph, and a line diff would mark all of it
changed for a one-word edit.
"""

from __future__ import annotations

import difflib
import html
import re
from typing import Any, Mapping

from promptlearn.report.formatting import _cls_gain, fmt, fmt_gain

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """(op, text) pieces turning a into b, op in equal / delete / insert; words, punctuation and spaces."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(ta[i1:i2])))
            continue
        if i2 > i1:
            out.append(("delete", "".join(ta[i1:i2])))
        if j2 > j1:
            out.append(("insert", "".join(tb[j1:j2])))
    return out


def diff_html(a: str, b: str) -> str:
    e = html.escape
    parts = []
    for op, text in word_diff(a, b):
        parts.append(e(text) if op == "equal" else f"<del>{e(text)}</del>" if op == "delete"
                     else f"<ins>{e(text)}</ins>")
    return "".join(parts)


def _screen_text(scr: Mapping[str, Any]) -> str:
    """A screened-out proposal's line; one the screen race stopped part-way says on how many examples."""
    if scr.get("examples") is not None:
        return (f'screened out after {scr["examples"]} examples: could not beat its parent\'s '
                f'{fmt(scr["parent"], 2)} on the minibatch')
    return f'screen {fmt(scr["score"], 2)} vs parent {fmt(scr["parent"], 2)}'


def _lineage(s: Mapping[str, Any]) -> str:
    e = html.escape
    nodes = s["candidates"]
    by_id = {n["id"]: n for n in nodes}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for n in nodes:
        children.setdefault(n["parent"], []).append(n)

    def node_html(n: Mapping[str, Any], seen: set[str]) -> str:
        seen.add(n["id"])
        cls = ["node", f"st-{re.sub(r'[^a-z_]', '', n['status'])}"]
        cls += ["on-path"] if n["on_path"] else []
        cls += ["unscored"] if n["val"] is None else []
        cls += ["is-best"] if n["is_best"] else []
        cls += ["is-seed"] if n["is_seed"] else []
        race = n.get("race")
        score = (f'val <b>{fmt(n["val"])}</b>' if n["val"] is not None else
                 _screen_text(n["screen"]) if n["screen"] else
                 f'raced out on val: {fmt(race["score"], 2)} on the {race["examples"]} examples the best missed'
                 if race else "not scored")
        gain = (f' <span class="gain {_cls_gain(n["gain"])}">{e(fmt_gain(n["gain"]))}</span>'
                if n["gain"] is not None else "")
        test = f' · test {fmt(n["test"])}' if n["test"] is not None else ""
        tags = "".join(f'<span class="tag {t}">{t}</span>' for t, on in (("seed", n["is_seed"]), ("best", n["is_best"]))
                       if on)
        extra = ""
        if len(n["parents"]) > 1:
            extra = " · also from " + ", ".join(f'<a href="#c-{e(p)}">{e(p)}</a>' for p in n["parents"][1:])
        parent = by_id.get(n["parent"]) if n["parent"] else None
        body = ""
        if parent is not None:
            body += f'<div class="diff">{diff_html(parent["prompt"], n["prompt"])}</div>'
        body += f'<pre class="prompt">{e(n["prompt"])}</pre>'
        open_ = " open" if n["on_path"] and not n["is_seed"] else ""
        head = (f'<code>{e(n["id"])}</code> <span class="op">{e(str(n["operator"]))}</span> '
                f'<span class="status">{e(n["status"])}</span> {score}{gain}{test}{tags}{extra}')
        kids = [c for c in children.get(n["id"], []) if c["id"] not in seen]
        kid_html = ("<ul>" + "".join(f"<li>{node_html(c, seen)}</li>" for c in kids) + "</ul>") if kids else ""
        return (f'<div class="{" ".join(cls)}" id="c-{e(n["id"])}" data-id="{e(n["id"])}">'
                f'<details{open_}><summary>{head}</summary><div class="body">{body}</div></details></div>{kid_html}')

    seen: set[str] = set()
    roots = [n for n in nodes if n["parent"] is None]
    items = [f"<li>{node_html(r, seen)}</li>" for r in roots]
    items += [f"<li>{node_html(n, seen)}</li>" for n in nodes if n["id"] not in seen]  # cycles, just in case
    path = " → ".join(f'<a href="#c-{e(p)}">{e(by_id[p]["operator"])}</a>' for p in s["path"] if p in by_id)
    return ('<section id="lineage"><h2>Lineage</h2>'
            '<p class="muted">Children under their (first) parent; the highlighted path leads from the seed to the '
            f'best prompt: {path or "–"}. Open a node for its prompt and the word diff from its parent '
            '(<del>removed</del>, <ins>added</ins>). Candidates screened out on a train minibatch never reached '
            'val.</p>'
            f'<div class="tree-controls"><label><input type="checkbox" id="path-only"> path to best only</label> '
            '<label><input type="checkbox" id="hide-unscored"> hide candidates not scored on val</label></div>'
            f'<ul class="tree">{"".join(items)}</ul></section>')
