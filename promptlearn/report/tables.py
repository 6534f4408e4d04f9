"""The report's tables: check rates and test metrics (seed vs best), examples seed vs best, the ledger.

Tables rather than plots: these are the numbers a reader compares cell by cell.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from promptlearn.report.formatting import _cls_gain, fmt, fmt_gain
from promptlearn.types import passes

MAX_SAME_ROWS = 200


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
                    f'{fmt_gain(dv)}</td>{_rate_cell(st)}{_rate_cell(bt)}<td class="{_cls_gain(dt)}">{fmt_gain(dt)}'
                    '</td></tr>')
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
        mark = "ok" if passes(t["score"]) else "bad"
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
