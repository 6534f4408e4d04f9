"""See a run: one self-contained HTML report, and the data (`run_summary`) the terminal views share with it.

The report has no network dependency at all: CSS and the few lines of JS are inline, plots are inline SVG drawn
here in Python, and a Content-Security-Policy forbids loading anything. Every piece of run data (prompts,
replies, ids, check names) goes through `html.escape`, so a prompt holding `<script>` is shown, never run.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from promptlearn.store import RunStore, iter_parents

PASS = 1.0 - 1e-9
SCORED_EVENTS = ("seed", "promoted", "accepted", "incomplete")
MAX_SAME_ROWS = 200


# ---- data ---------------------------------------------------------------------------------------------------


def run_summary(run_dir: str | Path, *, examples: bool = True) -> dict[str, Any]:
    """Everything the report and the `runs` / `show` commands show about one run, as plain JSON-able data.

    examples=False skips the per-example comparison (the only part that reads every stored result).
    """
    run_dir = Path(run_dir)
    store = RunStore(run_dir, create=False)
    try:
        return _summary(store, examples)
    finally:
        store.close()


def _summary(store: RunStore, with_examples: bool) -> dict[str, Any]:
    run_yaml = _read_run_yaml(store.dir)
    config = store.get_meta("config") or {}
    scores = store.scores()
    cands = store.candidates()
    by_id = {c["id"]: c for c in cands}
    seed_id = store.get_meta("seed") or next((c["id"] for c in cands if c["operator"] == "seed"), None)
    best_id = store.get_meta("best") or seed_id
    events = store.events()
    screens = {e["id"]: e for e in events if e["kind"] == "screen"}
    progress = [e for e in events if e["kind"] == "progress"]

    nodes = []
    for c in cands:
        s = scores.get(c["id"], {})
        val = s.get("val", {}).get("score")
        parent = c["parents"][0] if c["parents"] and c["parents"][0] in by_id else None
        pval = scores.get(parent, {}).get("val", {}).get("score") if parent else None
        scr = screens.get(c["id"])
        nodes.append({
            "id": c["id"], "seq": c["seq"], "prompt": c["prompt"], "parents": c["parents"], "parent": parent,
            "operator": c["operator"], "status": c["status"], "meta": c["meta"],
            "val": val, "test": s.get("test", {}).get("score"), "train": s.get("train", {}).get("score"),
            "val_n": s.get("val", {}).get("n"), "test_n": s.get("test", {}).get("n"),
            "val_checks": s.get("val", {}).get("checks") or {}, "test_checks": s.get("test", {}).get("checks") or {},
            "gain": None if val is None or pval is None else val - pval,
            "screen": None if scr is None else {"score": scr.get("score"), "parent": scr.get("parent")},
        })
    path = [n["id"] for n in iter_parents(nodes, best_id)] if best_id in by_id else []
    on_path = set(path)
    for n in nodes:
        n["on_path"] = n["id"] in on_path
        n["is_seed"], n["is_best"] = n["id"] == seed_id, n["id"] == best_id

    points, best_line = [], []
    for e in progress:
        best_line.append({"calls": e.get("calls", 0), "usd": e.get("usd", 0.0), "best_val": e.get("best_val"),
                          "best": e.get("best"), "seconds": e.get("seconds", 0.0)})
        if e.get("event") in SCORED_EVENTS and e.get("id") in scores and "val" in scores[e["id"]]:
            points.append({"id": e["id"], "calls": e.get("calls", 0), "usd": e.get("usd", 0.0),
                           "val": scores[e["id"]]["val"]["score"], "event": e.get("event"),
                           "operator": by_id.get(e["id"], {}).get("operator")})

    ledger = store.get_meta("ledger")
    if ledger is None and progress:  # a run still going (or killed): the last progress event has the totals
        last = progress[-1]
        ledger = {"calls": last.get("calls", 0), "usd": last.get("usd", 0.0), "seconds": last.get("seconds", 0.0)}
    task = (run_yaml.get("task") or {}) if run_yaml else {}
    created = events[0]["time"] if events else store.path.stat().st_mtime
    out: dict[str, Any] = {
        "run_id": store.run_id, "run_dir": str(store.dir),
        "task": task.get("name") or "?", "description": task.get("description") or "",
        "model": (task.get("model") or {}).get("name"),
        "optimizer": config.get("optimizer") or (task.get("optimizer") or {}).get("name") or "?",
        "rng_seed": config.get("seed", run_yaml.get("seed") if run_yaml else None),
        "options": config.get("options") or {},
        "status": store.get_meta("status") or "?", "stop_reason": store.get_meta("stop_reason"),
        "created": datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "seed_id": seed_id, "best_id": best_id, "path": path,
        "seed": _prompt_scores(nodes, seed_id), "best": _prompt_scores(nodes, best_id),
        "candidates": nodes,
        "counts": _count_status(nodes),
        "points": points, "best_line": best_line,
        "ledger": ledger or {}, "ledger_by_tag": store.get_meta("ledger_by_tag") or {},
        "test_metrics": store.get_meta("test_metrics") or {},
    }
    seed, best = out["seed"], out["best"]
    out["gain_val"] = None if seed["val"] is None or best["val"] is None else best["val"] - seed["val"]
    out["gain_test"] = None if seed["test"] is None or best["test"] is None else best["test"] - seed["test"]
    out["overfit_gap"] = None if best["val"] is None or best["test"] is None else best["val"] - best["test"]
    if with_examples:
        out["examples"] = _examples(store, run_yaml, seed_id, best_id)
    return out


def _prompt_scores(nodes: Sequence[Mapping[str, Any]], cid: str | None) -> dict[str, Any]:
    n = next((n for n in nodes if n["id"] == cid), None)
    if n is None:
        return {"id": cid, "prompt": "", "val": None, "test": None, "val_checks": {}, "test_checks": {}}
    return {k: n[k] for k in ("id", "prompt", "val", "test", "val_checks", "test_checks", "operator")}


def _count_status(nodes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        out[n["status"]] = out.get(n["status"], 0) + 1
    return out


def _read_run_yaml(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "run.yaml"
    if not p.exists():
        return {}
    try:
        import yaml

        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except Exception:  # noqa: BLE001 - a damaged run.yaml must not stop the report
        return {}


def _user_turns(run_yaml: Mapping[str, Any], run_dir: Path) -> dict[str, list[str]]:
    """User messages per example id, when the task file the run was made with can still be loaded unchanged."""
    task_file = run_yaml.get("task_file")
    if not task_file:
        return {}
    for cand in (Path(task_file), run_dir / task_file, run_dir.parent / task_file, run_dir.parent.parent / task_file):
        if cand.exists():
            break
    else:
        return {}
    try:
        from promptlearn.task import load_task

        task = load_task(cand)
        if run_yaml.get("fingerprint") and task.fingerprint() != run_yaml["fingerprint"]:
            return {}
        return {e.id: [t.user for t in e.turns if t.given is None] for e in task.examples("all")}
    except Exception:  # noqa: BLE001 - user text is a nicety; the report works without it
        return {}


def _examples(store: RunStore, run_yaml: Mapping[str, Any], seed_id: str | None,
              best_id: str | None) -> dict[str, Any]:
    """Seed vs best per example on test (val when test was not scored): fixed / broken / same."""
    seed_res = store.results(seed_id) if seed_id else {}
    best_res = store.results(best_id) if best_id else {}
    splits = (run_yaml or {}).get("splits") or {}
    split, ids = "all", sorted(set(seed_res) & set(best_res))
    for name in ("test", "val"):
        want = [i for i in splits.get(name) or [] if i in seed_res and i in best_res]
        if want:
            split, ids = name, want
            break
    users = _user_turns(run_yaml, store.dir) if ids else {}
    rows = []
    for ex_id in ids:
        s, b = seed_res[ex_id], best_res[ex_id]
        was, now = s.score >= PASS, b.score >= PASS
        status = "fixed" if now and not was else "broken" if was and not now else "same"
        rows.append({"id": ex_id, "status": status, "user": users.get(ex_id, []),
                     "seed": _result_view(s), "best": _result_view(b)})
    order = {"fixed": 0, "broken": 1, "same": 2}
    rows.sort(key=lambda r: (order[r["status"]], r["id"]))
    counts = {k: sum(r["status"] == k for r in rows) for k in order}
    return {"split": split, "rows": rows, "counts": counts}


def _result_view(res: Any) -> dict[str, Any]:
    return {"score": res.score, "turns": [
        {"reply": t.reply, "error": t.error, "score": t.score,
         "failed": [{"check": k, "score": r.score, "feedback": r.feedback} for k, r in t.checks.items()
                    if r.score < 1.0 and not r.judge_error]} for t in res.turns]}


def runs_overview(root: str | Path = "runs") -> list[dict[str, Any]]:
    """One summary (without per-example data) per run under root, oldest first; broken stores are skipped."""
    from promptlearn.store import list_runs

    out = []
    for d in list_runs(root):
        try:
            out.append(run_summary(d, examples=False))
        except Exception as e:  # noqa: BLE001 - one bad run must not hide the others
            out.append({"run_id": d.name, "run_dir": str(d), "error": str(e)})
    return out


# ---- diffs --------------------------------------------------------------------------------------------------

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
        parts.append(e(text) if op == "equal" else f"<del>{e(text)}</del>" if op == "delete" else f"<ins>{e(text)}</ins>")
    return "".join(parts)


# ---- formatting -------------------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_gain(x: float | None) -> str:
    return "" if x is None else f"{x:+.3f}"


def _usd(x: float | None) -> str:
    return "–" if x is None else f"${x:.4f}"


def _cls_gain(x: float | None) -> str:
    return "" if x is None or abs(x) < 1e-12 else "pos" if x > 0 else "neg"


# ---- SVG plots ----------------------------------------------------------------------------------------------


def _nice_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    lo = max(0.0, (int((lo - 0.05) * 10) / 10) if lo > 0.05 else 0.0)
    hi = min(1.0, -int(-(hi + 0.05) * 10) / 10)
    if hi - lo < 0.2:
        lo, hi = max(0.0, lo - 0.1), min(1.0, hi + 0.1)
    return lo, hi


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** int(f"{raw:e}".split("e")[1])
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = -int(-lo // step) * step if lo % step else lo
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def score_plot(summary: Mapping[str, Any], x_key: str) -> str:
    """Val score of every promoted candidate vs cumulative calls (or USD), the best-so-far step line, and
    the test scores of seed and best at the end of the run."""
    w, h, ml, mr, mt, mb = 580, 310, 52, 132, 30, 42
    pw, ph = w - ml - mr, h - mt - mb
    pts, line = summary["points"], summary["best_line"]
    seed, best = summary["seed"], summary["best"]
    x_total = float((summary.get("ledger") or {}).get(x_key) or 0.0)
    xs = [float(p[x_key] or 0.0) for p in pts] + [float(p[x_key] or 0.0) for p in line] + [x_total]
    ys = [p["val"] for p in pts] + [p["best_val"] for p in line if p["best_val"] is not None]
    ys += [v for v in (seed["test"], best["test"]) if v is not None]
    label = "model calls" if x_key == "calls" else "cost (USD)"
    title = f"val score vs {label}"
    if not ys:
        return (f'<svg class="plot" data-plot="{x_key}" viewBox="0 0 {w} {h}" role="img" aria-label="{title}">'
                f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" class="muted">no scored candidates yet</text></svg>')
    x_hi = max(xs) or 0.0
    degenerate = x_hi <= 0
    x_hi = x_hi if not degenerate else 1.0
    y_lo, y_hi = _nice_range(ys)

    def X(v: float) -> float:
        return round(ml + (0.0 if degenerate else float(v or 0.0) / x_hi) * pw, 2)

    def Y(v: float) -> float:
        return round(mt + (1 - (v - y_lo) / (y_hi - y_lo)) * ph, 2)

    e = html.escape
    parts = [f'<svg class="plot" data-plot="{x_key}" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="{e(title)}" preserveAspectRatio="xMidYMid meet">']
    for t in _ticks(y_lo, y_hi):
        parts.append(f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{Y(t)}" y2="{Y(t)}"/>'
                     f'<text class="tick" x="{ml - 6}" y="{Y(t) + 4}" text-anchor="end">{t:.2f}</text>')
    if not degenerate:
        for t in _ticks(0.0, x_hi, 6):
            tl = f"{t:g}" if x_key == "calls" else f"${t:.4g}"
            parts.append(f'<line class="tickmark" x1="{X(t)}" x2="{X(t)}" y1="{mt + ph}" y2="{mt + ph + 4}"/>'
                         f'<text class="tick" x="{X(t)}" y="{mt + ph + 16}" text-anchor="middle">{tl}</text>')
    else:
        parts.append(f'<text class="tick" x="{ml + pw / 2}" y="{mt + ph + 16}" text-anchor="middle">'
                     f'every call cost $0 (local or cached model)</text>')
    parts.append(f'<line class="axis" x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}"/>'
                 f'<line class="axis" x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}"/>'
                 f'<text class="axlabel" x="{ml + pw / 2}" y="{h - 6}" text-anchor="middle">{e(label)}</text>'
                 f'<text class="axlabel" transform="translate(13 {mt + ph / 2}) rotate(-90)" '
                 f'text-anchor="middle">val score</text>')
    # best-so-far step line, extended to the end of the run
    steps = [(float(p[x_key] or 0.0), p["best_val"]) for p in line if p["best_val"] is not None]
    if steps:
        d, prev = [f"M{X(steps[0][0])},{Y(steps[0][1])}"], steps[0][1]
        for x, y in steps[1:]:
            d.append(f"H{X(x)}")
            if y != prev:
                d.append(f"V{Y(y)}")
            prev = y
        d.append(f"H{X(max(x_total, steps[-1][0]))}")
        parts.append(f'<path class="bestline" d="{" ".join(d)}"><title>best val so far</title></path>')
    for p in pts:
        kind = "best" if p["id"] == summary["best_id"] else "seed" if p["id"] == summary["seed_id"] else \
            "accepted" if p["event"] == "accepted" else "promoted"
        xl = f"{p[x_key]:g} calls" if x_key == "calls" else f"${float(p[x_key] or 0):.4f}"
        parts.append(f'<circle class="pt {kind}" r="{5 if kind in ("best", "seed") else 4.5}" cx="{X(p[x_key])}" '
                     f'cy="{Y(p["val"])}" data-id="{e(p["id"])}" data-x="{e(str(p[x_key]))}" '
                     f'data-y="{p["val"]:.4f}"><title>{e(p["id"])} ({e(str(p["operator"]))}): val '
                     f'{p["val"]:.3f} at {e(xl)}</title></circle>')
    # test scores of seed and best, at the end of the run (test is scored once, after the search)
    labels = []
    same = summary["seed_id"] == summary["best_id"]
    for name, s in (("seed", seed), ("best", best)):
        if s["test"] is None or (same and name == "seed"):
            continue
        cx, cy = X(x_total if x_total else x_hi), Y(s["test"])
        r = 6
        parts.append(f'<path class="testpt {name}" d="M{cx},{cy - r} L{cx + r},{cy} L{cx},{cy + r} L{cx - r},{cy} Z" '
                     f'data-test="{name}" data-y="{s["test"]:.4f}"><title>{name} test {s["test"]:.3f}</title></path>')
        labels.append([cy, f"{name} test {s['test']:.3f}", name])
    labels.sort()
    for i in range(1, len(labels)):  # keep the two labels from overlapping
        if labels[i][0] - labels[i - 1][0] < 13:
            labels[i][0] = labels[i - 1][0] + 13
    for cy, text, name in labels:
        if same:  # one diamond for both: say so on a second line
            text = f'{e(text)}<tspan x="{ml + pw + 10}" dy="13">(seed = best)</tspan>'
        else:
            text = e(text)
        parts.append(f'<text class="testlabel {name}" x="{ml + pw + 10}" y="{cy + 4}">{text}</text>')
    # legend: one row above the plot area, clear of the test labels in the right margin
    x, y, items = ml, 12, []
    for shape, text in (('<circle class="pt seed" r="4" cx="{x}" cy="{y}"/>', "seed val"),
                        ('<circle class="pt promoted" r="4" cx="{x}" cy="{y}"/>', "candidate val"),
                        ('<circle class="pt best" r="4" cx="{x}" cy="{y}"/>', "best val"),
                        ('<line class="bestline" x1="{x0}" x2="{x1}" y1="{y}" y2="{y}"/>', "best so far"),
                        ('<path class="testpt best" d="M{x},{y0} l5,5 l-5,5 l-5,-5 Z"/>', "test score")):
        items.append(shape.format(x=x + 4, y=y, x0=x - 1, x1=x + 9, y0=y - 5) +
                     f'<text x="{x + 13}" y="{y + 4}">{text}</text>')
        x += 13 + int(6.2 * len(text)) + 16
    parts.append(f'<g class="legend">{"".join(items)}</g>')
    parts.append("</svg>")
    return "".join(parts)


# ---- HTML sections ------------------------------------------------------------------------------------------


def _cards(s: Mapping[str, Any]) -> str:
    led = s["ledger"]
    seed, best = s["seed"], s["best"]
    items = [
        ("seed val / test", f"{fmt(seed['val'])} / {fmt(seed['test'])}", ""),
        ("best val / test", f"{fmt(best['val'])} / {fmt(best['test'])}", ""),
        ("gain val / test", f"{fmt_gain(s['gain_val']) or '–'} / {fmt_gain(s['gain_test']) or '–'}",
         _cls_gain(s["gain_test"] if s["gain_test"] is not None else s["gain_val"])),
        ("overfit gap (best val − test)", fmt(s["overfit_gap"]), ""),
        ("model calls (cached)", f"{led.get('calls', 0)} ({led.get('cached_calls', 0)})", ""),
        ("cost", _usd(led.get("usd")), ""),
        ("wall time", f"{float(led.get('seconds') or 0):.0f} s", ""),
    ]
    e = html.escape
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(s["counts"].items(), key=lambda kv: -kv[1]))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{e(k)}</div><div class="v {c}">{e(v)}</div></div>' for k, v, c in items
    ) + (f'<div class="card"><div class="k">candidates</div><div class="v">{sum(s["counts"].values())}</div>'
         f'<div class="k">{e(counts)}</div></div></div>')


def _best_prompt(s: Mapping[str, Any]) -> str:
    e = html.escape
    seed, best = s["seed"], s["best"]
    same = seed["id"] == best["id"]
    out = [f'<section id="best"><h2>Best prompt <code>{e(str(best["id"]))}</code></h2>']
    if same:
        out.append('<p class="muted">No candidate beat the seed prompt with enough confidence; the best prompt is '
                   "the seed.</p>")
    out.append(f'<pre class="prompt">{e(best["prompt"])}</pre>')
    if not same:
        out.append(f'<h3>Change from the seed</h3><div class="diff">{diff_html(seed["prompt"], best["prompt"])}</div>')
    out.append("</section>")
    return "".join(out)


def _plots(s: Mapping[str, Any]) -> str:
    return ('<section id="progress"><h2>Progress</h2><p class="muted">Each dot is a candidate scored on the full '
            "val split, placed at the run's cumulative model calls (left) or cost (right) when it was scored; the "
            "line is the best val so far. Diamonds: seed and best on the held-out test split, scored once at the end.</p>"
            f'<div class="plots"><figure>{score_plot(s, "calls")}</figure><figure>{score_plot(s, "usd")}</figure>'
            "</div></section>")


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
        score = (f'val <b>{fmt(n["val"])}</b>' if n["val"] is not None else
                 f'screen {fmt(n["screen"]["score"], 2)} vs parent {fmt(n["screen"]["parent"], 2)}'
                 if n["screen"] else "not scored")
        gain = f' <span class="gain {_cls_gain(n["gain"])}">{e(fmt_gain(n["gain"]))}</span>' if n["gain"] is not None else ""
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
            f'<p class="muted">Children under their (first) parent; the highlighted path leads from the seed to the best '
            f'prompt: {path or "–"}. Open a node for its prompt and the word diff from its parent '
            '(<del>removed</del>, <ins>added</ins>). Candidates screened out on a train minibatch never reached val.</p>'
            f'<div class="tree-controls"><label><input type="checkbox" id="path-only"> path to best only</label> '
            '<label><input type="checkbox" id="hide-unscored"> hide candidates not scored on val</label></div>'
            f'<ul class="tree">{"".join(items)}</ul></section>')


def _rate_cell(x: float | None) -> str:
    if x is None:
        return "<td>–</td>"
    return f'<td><span class="bar"><span style="width:{max(0.0, min(1.0, x)) * 100:.0f}%"></span></span>{x:.3f}</td>'


def _checks(s: Mapping[str, Any]) -> str:
    e = html.escape
    seed, best = s["seed"], s["best"]
    names = sorted(set(seed["val_checks"]) | set(best["val_checks"]) | set(seed["test_checks"]) |
                   set(best["test_checks"]))
    rows = []
    for name in names:
        sv, bv = seed["val_checks"].get(name), best["val_checks"].get(name)
        st, bt = seed["test_checks"].get(name), best["test_checks"].get(name)
        dv = None if sv is None or bv is None else bv - sv
        dt = None if st is None or bt is None else bt - st
        rows.append(f'<tr><th>{e(name)}</th>{_rate_cell(sv)}{_rate_cell(bv)}<td class="{_cls_gain(dv)}">'
                    f'{fmt_gain(dv)}</td>{_rate_cell(st)}{_rate_cell(bt)}<td class="{_cls_gain(dt)}">{fmt_gain(dt)}</td></tr>')
    table = ('<table class="checks"><thead><tr><th>check</th><th>seed val</th><th>best val</th><th>Δ</th>'
             '<th>seed test</th><th>best test</th><th>Δ</th></tr></thead><tbody>'
             f'{"".join(rows) or "<tr><td colspan=7>no check rates stored</td></tr>"}</tbody></table>')
    return '<section id="checks"><h2>Checks: seed vs best</h2>' + table + _metrics(s) + "</section>"


def flat_metrics(m: Mapping[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if not m:
        return out
    for k in ("score", "loose_score", "judge_errors"):
        if isinstance(m.get(k), (int, float)):
            out[k] = float(m[k])
    for group, label in (("ifeval", "IFEval"), ("sysbench", "SysBench")):
        for k, v in (m.get(group) or {}).items():
            if isinstance(v, (int, float)):
                out[f"{label} {k.upper() if group == 'sysbench' else k}"] = float(v)
            elif isinstance(v, Mapping):
                for kk, vv in v.items():
                    if isinstance(vv, (int, float)):
                        out[f"{label} {k} {kk}"] = float(vv)
    return out


def _metrics(s: Mapping[str, Any]) -> str:
    tm = s.get("test_metrics") or {}
    seed, best = flat_metrics(tm.get("seed")), flat_metrics(tm.get("best"))
    keys = list(dict.fromkeys([*seed, *best]))
    if not keys:
        return ""
    e = html.escape
    rows = []
    for k in keys:
        a, b = seed.get(k), best.get(k)
        d = None if a is None or b is None else b - a
        fm = (lambda x: "–" if x is None else f"{x:.0f}") if k == "judge_errors" else fmt
        rows.append(f'<tr><th>{e(k)}</th><td>{fm(a)}</td><td>{fm(b)}</td><td class="{_cls_gain(d)}">'
                    f'{fmt_gain(d) if k != "judge_errors" else ""}</td></tr>')
    return ('<h3>Test-split metrics</h3><table class="metrics"><thead><tr><th>metric</th><th>seed</th><th>best</th>'
            f'<th>Δ</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _reply_html(view: Mapping[str, Any]) -> str:
    e = html.escape
    out = []
    for i, t in enumerate(view["turns"], 1):
        mark = "ok" if t["score"] >= PASS else "bad"
        head = f'<div class="turnhead {mark}">{"turn " + str(i) + " · " if len(view["turns"]) > 1 else ""}' \
               f'score {t["score"]:.2f}</div>'
        err = f'<div class="err">error: {e(t["error"])}</div>' if t["error"] else ""
        fails = "".join(f'<li><b>{e(f["check"])}</b>: {e(f["feedback"] or "failed")}</li>' for f in t["failed"])
        out.append(f'{head}<pre class="reply">{e(t["reply"])}</pre>{err}'
                   f'{"<ul class=fails>" + fails + "</ul>" if fails else ""}')
    return "".join(out)


def _examples_html(s: Mapping[str, Any]) -> str:
    e = html.escape
    ex = s.get("examples")
    if not ex:
        return ""
    rows, same_shown = [], 0
    for r in ex["rows"]:
        if r["status"] == "same":
            same_shown += 1
            if same_shown > MAX_SAME_ROWS:
                continue
        user = "".join(f'<pre class="user">{e(u)}</pre>' for u in r["user"])
        rows.append(f'<tr class="ex {r["status"]}"><td><code>{e(r["id"])}</code><span class="badge {r["status"]}">'
                    f'{r["status"]}</span>{user}</td><td>{_reply_html(r["seed"])}</td>'
                    f'<td>{_reply_html(r["best"])}</td></tr>')
    c = ex["counts"]
    more = (f'<p class="muted">{c["same"] - MAX_SAME_ROWS} more unchanged examples not shown.</p>'
            if c["same"] > MAX_SAME_ROWS else "")
    note = {"test": "held-out test split", "val": "val split (test was not scored)",
            "all": "every example both prompts were run on"}[ex["split"]]
    return (f'<section id="examples"><h2>Examples: seed vs best ({e(note)})</h2>'
            f'<p><span class="badge fixed">{c["fixed"]} fixed</span> <span class="badge broken">{c["broken"]} '
            f'broken</span> <span class="badge same">{c["same"]} same</span> '
            f'<label><input type="checkbox" id="changed-only"> changed only</label></p>'
            '<table class="examples"><thead><tr><th>example</th><th>seed reply</th><th>best reply</th></tr></thead>'
            f'<tbody>{"".join(rows) or "<tr><td colspan=3>no examples scored by both prompts</td></tr>"}</tbody>'
            f'</table>{more}</section>')


def _ledger_html(s: Mapping[str, Any]) -> str:
    e = html.escape
    cols = (("calls", "calls", "{:.0f}"), ("cached_calls", "cached", "{:.0f}"), ("tokens", "tokens", "{:.0f}"),
            ("usd", "USD", "${:.4f}"), ("seconds", "seconds", "{:.1f}"))

    def row(name: str, d: Mapping[str, Any], cls: str = "") -> str:
        cells = "".join(f"<td>{f.format(float(d[k])) if d.get(k) is not None else '–'}</td>" for k, _, f in cols)
        return f'<tr class="{cls}"><th>{e(name)}</th>{cells}</tr>'

    by_tag = s.get("ledger_by_tag") or {}
    body = "".join(row(k, v) for k, v in sorted(by_tag.items(), key=lambda kv: -float(kv[1].get("calls") or 0)))
    body += row("total", s.get("ledger") or {}, "total")
    return ('<section id="ledger"><h2>Ledger</h2><p class="muted">By tag: the operator that made a candidate, '
            '<code>seed</code>, <code>screen-parent</code> (re-scoring a parent on a minibatch), <code>proposer</code> '
            '(the model writing candidates), <code>test</code>. Cached calls cost nothing. Seconds per tag add up '
            'call time; the total is wall time.</p>'
            '<table class="ledger"><thead><tr><th>tag</th>' + "".join(f"<th>{h}</th>" for _, h, _ in cols) +
            f"</tr></thead><tbody>{body}</tbody></table></section>")


CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#d9dee7;--bg:#fff;--soft:#f5f7fa;--acc:#2563eb;--good:#15803d;
--bad:#b91c1c;--path:#f59e0b}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
background:var(--bg);margin:0;padding:20px 28px;max-width:1280px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0}
.muted{color:var(--muted)}.sub{color:var(--muted);margin-bottom:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px;margin:12px 0}
.card{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.card .k{color:var(--muted);font-size:12px}.card .v{font-size:17px;font-weight:600}
.pos{color:var(--good)}.neg{color:var(--bad)}
pre.prompt{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:8px}
.diff{font:12.5px/1.5 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;
background:#fffdf5;border:1px solid #f1e7c4;border-radius:4px;padding:8px;margin:4px 0}
ins{background:#d1fadf;color:#05603a;text-decoration:none;padding:0 1px}
del{background:#fee4e2;color:#912018;padding:0 1px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:4px}
svg.plot{width:100%;height:auto;display:block;font-size:11px}
svg .grid{stroke:#eef1f5}svg .axis,svg .tickmark{stroke:#98a2b3}svg .tick{fill:var(--muted)}
svg .axlabel{fill:#344054;font-size:12px}svg text{fill:#344054}
svg .bestline{fill:none;stroke:var(--acc);stroke-width:2}
svg .pt{fill:#8794a8;stroke:#fff;stroke-width:1}svg .pt.accepted{fill:#60a5fa}svg .pt.seed{fill:#475467}
svg .pt.best{fill:var(--acc);stroke:#1e3a8a}
svg .testpt{fill:var(--path);stroke:#92400e}svg .testpt.seed{fill:#fde68a}
svg .testlabel{font-size:11px}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:18px}
ul.tree{padding-left:0}ul.tree ul{border-left:1px dashed #c5ccd8;margin-left:8px}
ul.tree li{margin:3px 0}
.node{border:1px solid var(--line);border-radius:5px;background:#fff;padding:2px 8px}
.node summary{cursor:pointer}.node .body{padding:4px 0 6px}
.node .op{background:#eef4ff;color:#1e40af;border-radius:3px;padding:0 5px;font-size:12px}
.node .status{color:var(--muted);font-size:12px}
.node.st-rejected,.node.st-screened_out{opacity:.62}
.node.on-path{border:2px solid var(--path);background:#fffbeb}
.node.is-best{box-shadow:0 0 0 2px var(--acc)}
.tag{display:inline-block;margin-left:6px;font-size:11px;font-weight:600;border-radius:3px;padding:0 5px;
background:var(--path);color:#fff}.tag.best{background:var(--acc)}
.tree.path-only li:not(:has(> .on-path)){display:none}
.tree.hide-unscored li:has(> .node.unscored){display:none}
.tree-controls label{margin-right:16px}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600}
table.checks td,table.metrics td,table.ledger td{text-align:right;white-space:nowrap}
table.checks,table.metrics,table.ledger{width:auto;min-width:520px}
tr.total th,tr.total td{font-weight:700;border-top:2px solid #98a2b3}
.bar{display:inline-block;width:60px;height:8px;background:#eef1f5;border-radius:4px;margin-right:6px;
vertical-align:middle;overflow:hidden}.bar span{display:block;height:100%;background:var(--acc)}
table.examples td{width:40%}table.examples td:first-child{width:20%}
pre.user{color:#344054;background:var(--soft);padding:4px;border-radius:3px}
pre.reply{background:#fbfcfe;border:1px solid var(--line);border-radius:3px;padding:4px}
.turnhead{font-size:12px}.turnhead.ok{color:var(--good)}.turnhead.bad{color:var(--bad)}
ul.fails{margin:2px 0;padding-left:18px;font-size:12px;color:var(--bad)}.err{color:var(--bad);font-size:12px}
.badge{display:inline-block;margin-left:6px;font-size:11px;font-weight:600;border-radius:9px;padding:0 7px}
.badge.fixed{background:#d1fadf;color:#05603a}.badge.broken{background:#fee4e2;color:#912018}
.badge.same{background:#eef1f5;color:#475467}
table.examples.changed-only tr.same{display:none}
nav a{margin-right:12px}
"""

JS = """
(function(){
  var pathOnly = document.getElementById('path-only');
  var tree = document.querySelector('ul.tree');
  if (pathOnly && tree) pathOnly.addEventListener('change', function(){ tree.classList.toggle('path-only', pathOnly.checked); });
  var unscored = document.getElementById('hide-unscored');
  if (unscored && tree) unscored.addEventListener('change', function(){ tree.classList.toggle('hide-unscored', unscored.checked); });
  var changed = document.getElementById('changed-only');
  var table = document.querySelector('table.examples');
  if (changed && table) changed.addEventListener('change', function(){ table.classList.toggle('changed-only', changed.checked); });
  document.querySelectorAll('svg.plot circle.pt[data-id]').forEach(function(c){
    c.style.cursor = 'pointer';
    c.addEventListener('click', function(){
      var node = document.getElementById('c-' + c.getAttribute('data-id'));
      if (!node) return;
      var d = node.querySelector('details'); if (d) d.open = true;
      node.scrollIntoView({behavior: 'smooth', block: 'center'});
    });
  });
})();
"""


def render_report(run_dir: str | Path) -> str:
    """The run's report as one self-contained HTML document."""
    s = run_summary(run_dir)
    e = html.escape
    stop = f" · stopped: {e(str(s['stop_reason']))}" if s["stop_reason"] else ""
    meta = (f"task <b>{e(s['task'])}</b> · optimizer <b>{e(str(s['optimizer']))}</b> · model "
            f"<b>{e(str(s['model']))}</b> · rng seed {e(str(s['rng_seed']))} · status <b>{e(s['status'])}</b>{stop}"
            f" · started {e(s['created'])} UTC")
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    data = json.dumps({k: s[k] for k in ("run_id", "seed_id", "best_id", "path")})
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>promptlearn run {e(s['run_id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Run <code>{e(s['run_id'])}</code></h1><div class=\"sub\">{meta}</div>",
        f"<p>{e(s['description'])}</p>" if s["description"] else "",
        '<nav><a href="#best">best prompt</a><a href="#progress">progress</a><a href="#lineage">lineage</a>'
        '<a href="#checks">checks</a><a href="#examples">examples</a><a href="#ledger">ledger</a></nav>',
        _cards(s), _best_prompt(s), _plots(s), _lineage(s), _checks(s), _examples_html(s), _ledger_html(s),
        f'<script type="application/json" id="run-data">{_json_for_script(data)}</script>',
        f"<script>{JS}</script></body></html>\n",
    ])


def _json_for_script(text: str) -> str:
    """JSON safe inside a <script> element: no '</' or '<!--' can end it early."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default <run_dir>/report.html) atomically and return its path."""
    from promptlearn.store import atomic_write

    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    atomic_write(path, render_report(run_dir))
    return path
