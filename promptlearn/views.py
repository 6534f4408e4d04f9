"""Rich renderables for the terminal views of runs (`promptlearn runs`, `promptlearn show`).

They take the plain dicts of `promptlearn.report.run_summary`, the same data the HTML report shows.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from promptlearn.report import fmt, fmt_gain, word_diff


def _gain_style(x: float | None) -> str:
    return "" if x is None or abs(x) < 1e-12 else "green" if x > 0 else "red"


def runs_table(summaries: Sequence[Mapping[str, Any]], title: str = "runs") -> Group:
    """Two lines per run: id, status, seed and best val/test, calls; then task, optimizer and start time.

    The id never wraps (it is what `show`, `report`, `export` and `--resume` take) and the rest fits 80 columns
    next to the ids promptlearn makes; an unreadable run says why on its second line.
    """
    id_w = max([3] + [len(str(s["run_id"])) for s in summaries])
    status_style = {"finished": "green", "running": "yellow", "failed": "red", "interrupted": "yellow",
                    "unreadable": "red"}

    def line(run: Text | str, status: Text | str, seed: Text | str, best: Text | str, calls: str) -> Text:
        cells = [Text(run) if isinstance(run, str) else run, Text(status) if isinstance(status, str) else status,
                 Text(seed) if isinstance(seed, str) else seed, Text(best) if isinstance(best, str) else best]
        out = Text()
        for cell, width in zip(cells, (id_w, 11, 11, 11)):
            out.append_text(cell)
            out.append(" " * (width - cell.cell_len + 2))
        out.append(calls.rjust(5))
        return out

    lines = [Text(title, style="bold"),
             line(Text("run", style="bold"), Text("status", style="bold"), Text("seed", style="bold"),
                  Text("best", style="bold"), "calls")]
    lines[-1].stylize("bold")
    for s in summaries:
        status = str(s.get("status", "?"))
        status_text = Text(status, style=status_style.get(status, ""))
        if "error" in s:
            head = line(Text(str(s["run_id"])), status_text, "", "", "")
            head.rstrip()
            lines.append(head)
            lines.append(Text(f"  {s['error']}", style="red"))
            continue
        seed, best = s["seed"], s["best"]
        best_cell = Text.assemble((fmt(best["val"]), _gain_style(s.get("gain_val"))), "/",
                                  (fmt(best["test"]), _gain_style(s.get("gain_test"))))
        calls = str((s.get("ledger") or {}).get("calls", ""))
        lines.append(line(Text(str(s["run_id"]), style="cyan"), status_text, f"{fmt(seed['val'])}/{fmt(seed['test'])}",
                          best_cell, calls))
        lines.append(Text(f"  {s['task']} · {s['optimizer']} · started {s.get('created', '?')} UTC", style="dim"))
    lines.append(Text("scores: val/test", style="dim"))
    for t in lines:
        t.no_wrap, t.overflow = True, "ignore"
    return Group(*lines)


def runs_json(s: Mapping[str, Any]) -> dict[str, Any]:
    """What `promptlearn runs --json` gives per run: ids, status, scores, ledger (no prompts or candidates)."""
    if "error" in s:
        return {k: s[k] for k in ("run_id", "run_dir", "status", "error")}
    keep = ("run_id", "run_dir", "task", "optimizer", "model", "status", "stop_reason", "created", "seed_id",
            "best_id", "gain_val", "gain_test", "overfit_gap", "counts", "ledger")
    out = {k: s.get(k) for k in keep}
    out["seed"] = {k: s["seed"][k] for k in ("val", "test")}
    out["best"] = {k: s["best"][k] for k in ("val", "test")}
    return out


def diff_text(a: str, b: str, *, plain: bool = False) -> Text:
    """Word diff of two prompts: removed words red and struck through, added words green; with plain=True (no
    colors, e.g. piped output) wdiff markers instead: [-removed-]{+added+}."""
    out = Text()
    for op, piece in word_diff(a, b):
        if plain and op != "equal":
            piece = f"[-{piece}-]" if op == "delete" else f"{{+{piece}+}}"
        out.append(piece, style="" if op == "equal" else "red strike" if op == "delete" else "bold green")
    return out


def _label(n: Mapping[str, Any], parent: Mapping[str, Any] | None, *, status: bool) -> Text:
    label = Text.assemble((n["id"], "cyan"), " ", (str(n["operator"]), "magenta"))
    if status and not (n["is_seed"] or n["is_best"]):
        label.append(f" {n['status']}", style="dim")
    label.append(f" · val {fmt(n['val'])}")
    if n["gain"] is not None and parent is not None:
        label.append(f" ({fmt_gain(n['gain'])})", style=_gain_style(n["gain"]))
    if n["test"] is not None:
        label.append(f" · test {fmt(n['test'])}")
    if n["is_seed"]:
        label.append("  seed", style="bold yellow")
    if n["is_best"]:
        label.append("  best", style="bold blue")
    return label


def lineage_tree(summary: Mapping[str, Any], *, plain: bool = False, all_candidates: bool = False) -> Tree:
    """The path from the seed to the best prompt: operator, val score, gain, and the diff each step made
    (plain: mark the diff with wdiff markers, for output without colors). all_candidates: every candidate under
    its first parent, with its status, instead of the path alone."""
    by_id = {n["id"]: n for n in summary["candidates"]}
    root = Tree(Text.assemble(("run ", "bold"), (summary["run_id"], "bold cyan"), f" · {summary['task']} · "
                              f"{summary['optimizer']} · {summary['status']}"))
    if not by_id:
        root.add(Text("no candidates yet", style="dim"))
        return root
    if not all_candidates:
        path = [by_id[i] for i in summary["path"] if i in by_id]
        if not path:
            root.add(Text("no candidates yet", style="dim"))
            return root
        node, prev = root, None
        for n in path:
            node = node.add(_label(n, prev, status=False))
            node.add(Group(diff_text(prev["prompt"], n["prompt"], plain=plain)) if prev is not None
                     else Text(n["prompt"]))
            prev = n
        return root
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for n in summary["candidates"]:
        children.setdefault(n["parent"], []).append(n)
    seen: set[str] = set()

    def add(tree: Tree, n: Mapping[str, Any]) -> None:
        seen.add(n["id"])
        parent = by_id.get(n["parent"]) if n["parent"] else None
        branch = tree.add(_label(n, parent, status=True))
        branch.add(Group(diff_text(parent["prompt"], n["prompt"], plain=plain)) if parent is not None
                   else Text(n["prompt"]))
        for c in children.get(n["id"], []):
            if c["id"] not in seen:
                add(branch, c)

    for n in children.get(None, []):
        add(root, n)
    for n in summary["candidates"]:  # cycles, just in case
        if n["id"] not in seen:
            add(root, n)
    return root


def not_accepted_lines(summary: Mapping[str, Any]) -> list[Text]:
    """Candidates with a higher val score than the best, and why each was not accepted."""
    rows = [n for n in summary["candidates"] if n.get("not_accepted")]
    if not rows:
        return []
    out = [Text(f"higher val than the best ({fmt(summary['best']['val'])}) but not accepted:", style="bold")]
    for n in sorted(rows, key=lambda n: -n["val"]):
        out.append(Text.assemble("  ", (n["id"], "cyan"), " ", (str(n["operator"]), "magenta"),
                                 f" · val {fmt(n['val'])}: {n['not_accepted']}"))
    return out


def checks_table(summary: Mapping[str, Any]) -> Table:
    """Per-check pass rates and the headline metrics, seed vs best, on val and test."""
    seed, best = summary["seed"], summary["best"]
    table = Table(title="seed vs best")
    for col in ("", "seed val", "best val", "Δ val", "seed test", "best test", "Δ test"):
        table.add_column(col, justify="right" if col else "left", overflow="fold", min_width=None if col else 12)

    def delta(a: float | None, b: float | None) -> Text:
        d = None if a is None or b is None else b - a
        return Text(fmt_gain(d), style=_gain_style(d))

    table.add_row(Text("score", style="bold"), fmt(seed["val"]), fmt(best["val"]), delta(seed["val"], best["val"]),
                  fmt(seed["test"]), fmt(best["test"]), delta(seed["test"], best["test"]))
    names = sorted(set(seed["val_checks"]) | set(best["val_checks"]) | set(seed["test_checks"]) |
                   set(best["test_checks"]))
    for name in names:
        sv, bv = seed["val_checks"].get(name), best["val_checks"].get(name)
        st, bt = seed["test_checks"].get(name), best["test_checks"].get(name)
        table.add_row(Text(f"  {name}"), fmt(sv), fmt(bv), delta(sv, bv), fmt(st), fmt(bt), delta(st, bt))
    from promptlearn.report import flat_metrics

    tm = summary.get("test_metrics") or {}
    sm, bm = flat_metrics(tm.get("seed")), flat_metrics(tm.get("best"))
    for key in dict.fromkeys([*sm, *bm]):
        if key == "score" or (key == "judge_errors" and not sm.get(key) and not bm.get(key)):
            continue
        a, b = sm.get(key), bm.get(key)
        table.add_row(Text(f"  {key.replace('_', ' ')}"), "", "", "", fmt(a), fmt(b), delta(a, b))
    ex = summary.get("examples")
    if ex and ex["rows"]:
        c = ex["counts"]
        table.caption = f"{ex['split']} examples: {c['fixed']} fixed, {c['broken']} broken, {c['same']} same"
    return table


def check_lines(desc: Mapping[str, Any], width: int = 80) -> list[str]:
    """One check type for `promptlearn checks`: name and family, summary, parameters with types and defaults,
    and an example spec (a YAML flow mapping, so its wrapped lines still paste as one spec), wrapped to `width`."""
    import json
    import textwrap

    def param(p: Mapping[str, Any]) -> str:
        bits = [p["type"]] if p["type"] else []
        if p["required"]:
            bits.append("required")
        elif p["default"] is not None:
            bits.append("default " + json.dumps(p["default"], default=str))
        return p["name"] + (f" ({', '.join(bits)})" if bits else "")

    wrap = textwrap.TextWrapper(width=max(40, width), initial_indent="  ", subsequent_indent="    ",
                                break_long_words=False, break_on_hyphens=False)
    out = [f"{desc['type']}  ({desc['family']})"]
    if desc["summary"]:
        out += wrap.wrap(desc["summary"])
    params = "; ".join(param(p) for p in desc["params"]) or "none"
    out += wrap.wrap("params: " + params)
    out += textwrap.wrap(f"e.g. {desc['example']}", width=max(40, width), initial_indent="  ",
                         subsequent_indent="      ", break_long_words=False, break_on_hyphens=False)
    return out

