"""Rich renderables for the terminal views of runs (`promptlearn runs`, `promptlearn show`).

They take the plain dicts of `promptlearn.report.run_summary`, the same data the HTML report shows.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from promptlearn.report import fmt, fmt_gain, word_diff


def _gain_style(x: float | None) -> str:
    return "" if x is None or abs(x) < 1e-12 else "green" if x > 0 else "red"


def runs_table(summaries: Sequence[Mapping[str, Any]], title: str = "runs") -> Table:
    """One row per run: id, task, optimizer, status, seed and best val/test, calls, date."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="scores: val/test · date: month-day UTC")
    ok = [s for s in summaries if "error" not in s]
    for col, key, right in (("run", None, False), ("task", "task", False), ("optimizer", "optimizer", False),
                            ("status", "status", False), ("seed", None, True), ("best", None, True),
                            ("calls", None, True), ("date", None, False)):
        # every column but the run id keeps its width; long run ids fold instead
        width = max([len(col)] + [len(str(s.get(key))) for s in ok]) if key else {"run": 9, "date": 5}.get(col)
        table.add_column(col, justify="right" if right else "left", overflow="fold", min_width=width,
                         no_wrap=col not in ("run", "date"))
    status_style = {"finished": "green", "running": "yellow", "failed": "red", "interrupted": "yellow"}
    for s in summaries:
        if "error" in s:
            table.add_row(Text(s["run_id"]), "", "", Text("unreadable", style="red"), "", "", "",
                          Text(str(s["error"])[:60], style="red"))
            continue
        seed, best = s["seed"], s["best"]
        best_cell = Text.assemble((fmt(best["val"]), _gain_style(s.get("gain_val"))), "/",
                                  (fmt(best["test"]), _gain_style(s.get("gain_test"))))
        table.add_row(Text(s["run_id"]), Text(str(s["task"])), Text(str(s["optimizer"])),
                      Text(str(s["status"]), style=status_style.get(s["status"], "")),
                      f"{fmt(seed['val'])}/{fmt(seed['test'])}", best_cell,
                      str((s.get("ledger") or {}).get("calls", "")), str(s.get("created", ""))[5:])
    return table


def diff_text(a: str, b: str, *, plain: bool = False) -> Text:
    """Word diff of two prompts: removed words red and struck through, added words green; with plain=True (no
    colors, e.g. piped output) wdiff markers instead: [-removed-]{+added+}."""
    out = Text()
    for op, piece in word_diff(a, b):
        if plain and op != "equal":
            piece = f"[-{piece}-]" if op == "delete" else f"{{+{piece}+}}"
        out.append(piece, style="" if op == "equal" else "red strike" if op == "delete" else "bold green")
    return out


def lineage_tree(summary: Mapping[str, Any], *, plain: bool = False) -> Tree:
    """The path from the seed to the best prompt: operator, val score, gain, and the diff each step made
    (plain: mark the diff with wdiff markers, for output without colors)."""
    by_id = {n["id"]: n for n in summary["candidates"]}
    path = [by_id[i] for i in summary["path"] if i in by_id]
    root = Tree(Text.assemble(("run ", "bold"), (summary["run_id"], "bold cyan"), f" · {summary['task']} · "
                              f"{summary['optimizer']} · {summary['status']}"))
    if not path:
        root.add(Text("no candidates yet", style="dim"))
        return root
    node = root
    prev = None
    for n in path:
        label = Text.assemble((n["id"], "cyan"), " ", (str(n["operator"]), "magenta"), f" · val {fmt(n['val'])}")
        if n["gain"] is not None and prev is not None:
            label.append(f" ({fmt_gain(n['gain'])})", style=_gain_style(n["gain"]))
        if n["test"] is not None:
            label.append(f" · test {fmt(n['test'])}")
        if n["is_seed"]:
            label.append("  seed", style="bold yellow")
        if n["is_best"]:
            label.append("  best", style="bold blue")
        node = node.add(label)
        node.add(Group(diff_text(prev["prompt"], n["prompt"], plain=plain)) if prev is not None else Text(n["prompt"]))
        prev = n
    return root


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
