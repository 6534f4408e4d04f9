"""Prompt x target matrices as HTML: the table and plot the transfer report's page (promptlearn.transfer) uses,
and the per-target section of a run's report.

A matrix is plain data: `targets` (each with a `key`) and `rows` (each with a `label` and `test`: target key ->
test score, None when not measured). The plot is a grouped bar chart in inline SVG, one group per prompt, one bar
per target, like the run report's plots (no JS plotting library; the page's CSP forbids loading one).
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

from promptlearn.report.formatting import fmt

COLORS = ("#2563eb", "#f59e0b", "#15803d", "#b91c1c", "#7c3aed", "#0891b2")


def matrix_table(targets: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """The matrix as an HTML table: one row per prompt, one column per target; the best cell per column bold."""
    e = html.escape
    keys = [t["key"] for t in targets]
    best = {k: max((r["test"].get(k) for r in rows if r["test"].get(k) is not None), default=None) for k in keys}
    head = "".join(f"<th>{e(k)}</th>" for k in keys)
    body = []
    for r in rows:
        cells = []
        for k in keys:
            v = r["test"].get(k)
            strong = v is not None and v == best[k]
            cells.append(f"<td>{'<b>' if strong else ''}{fmt(v)}{'</b>' if strong else ''}</td>")
        body.append(f"<tr><th>{e(str(r['label']))}</th>{''.join(cells)}</tr>")
    return (f'<table class="metrics transfer"><thead><tr><th>prompt \\ test score on</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def matrix_plot(targets: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """Grouped bars: for each prompt, its test score on every target (0 to 1)."""
    e = html.escape
    keys = [t["key"] for t in targets]
    w, h, ml, mr, mt, mb = 620, 300, 44, 150, 24, 56
    pw, ph = w - ml - mr, h - mt - mb
    group = pw / max(1, len(rows))
    bar = group * 0.8 / max(1, len(keys))
    out = [f'<svg class="plot" data-plot="transfer" viewBox="0 0 {w} {h}" role="img" '
           'aria-label="test score of each prompt on each target">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = mt + ph * (1 - tick)
        out.append(f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="tick" x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for i, r in enumerate(rows):
        x0 = ml + i * group + group * 0.1
        for j, k in enumerate(keys):
            v = r["test"].get(k)
            if v is None:
                continue
            bh = ph * float(v)
            out.append(f'<rect x="{x0 + j * bar:.1f}" y="{mt + ph - bh:.1f}" width="{bar * 0.92:.1f}" '
                       f'height="{bh:.1f}" fill="{COLORS[j % len(COLORS)]}"><title>{e(str(r["label"]))} on '
                       f'{e(k)}: {float(v):.3f}</title></rect>')
        out.append(f'<text class="tick" x="{ml + i * group + group / 2:.1f}" y="{mt + ph + 16}" '
                   f'text-anchor="middle">{e(str(r["label"]))[:28]}</text>')
    out.append(f'<line class="axis" x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}"/>')
    for j, k in enumerate(keys):
        y = mt + 10 + j * 18
        out.append(f'<rect x="{ml + pw + 14}" y="{y - 9}" width="12" height="12" fill="{COLORS[j % len(COLORS)]}"/>'
                   f'<text x="{ml + pw + 32}" y="{y + 1}">{e(k)[:18]}</text>')
    out.append(f'<text class="axlabel" x="{ml + pw / 2}" y="{h - 8}" text-anchor="middle">prompt (test score on '
               "each target)</text></svg>")
    return "".join(out)


def targets_section(s: Mapping[str, Any]) -> str:
    """The run report's section for a run with several targets (and for a migration): the seed and the best
    prompt scored on every target's test split, the ledger per target, and the migration verdict."""
    e = html.escape
    info, mig = s.get("targets"), s.get("migration")
    if not info and not mig:
        return ""
    out = ['<section id="targets"><h2>Targets</h2>']
    if info:
        cands = info.get("candidates", {})
        rows = [{"label": label, "test": (cands.get(cid) or {}).get("test") or {}}
                for label, cid in (("seed", s.get("seed_id")), ("best", s.get("best_id"))) if cid]
        out.append(f'<p class="muted">objective: {e(info["aggregate"])} over the targets</p>')
        out.append(matrix_table(info["targets"], rows))
        out.append(f"<figure>{matrix_plot(info['targets'], rows)}</figure>")
        led = "".join(f"<tr><th>{e(t['key'])}</th><td>{e(t['model'])}</td><td>{t['calls']}</td>"
                      f"<td>{t['cached_calls']}</td><td>{float(t['usd'] or 0):.4f}</td></tr>" for t in info["targets"])
        out.append('<h3>Ledger by target</h3><table class="ledger"><thead><tr><th>target</th><th>model</th>'
                   f"<th>calls</th><th>cached</th><th>USD</th></tr></thead><tbody>{led}</tbody></table>")
    if mig:
        verdict = "reaches" if mig.get("reaches_bar") else "does not reach"
        out.append(f"<h3>Migration {e(mig['from'])} → {e(mig['to'])}</h3><p>The new prompt on {e(mig['to'])} "
                   f"scores {fmt(mig['best_on_to'])} on test; the old prompt on {e(mig['from'])} (the bar) "
                   f"{fmt(mig['bar'])}: it <b>{verdict}</b> the bar. The old prompt on {e(mig['to'])}: "
                   f"{fmt(mig.get('seed_on_to'))}. Against the old model: {mig.get('fixed', 0)} fixed, "
                   f"{mig.get('broken', 0)} broken"
                   + (f" ({e(', '.join(mig.get('broken_ids') or []))})" if mig.get("broken_ids") else "") + ".</p>")
    out.append("</section>")
    return "".join(out)
