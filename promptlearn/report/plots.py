"""The progress plots: val score vs model calls and vs cost, drawn as inline SVG in Python.

Inline SVG keeps the report one self-contained file with no JS plotting library to load (the CSP forbids it).
`_nice_range` and `_ticks` are also used by bench/quality.py for its plots.
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

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
                f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" class="muted">no scored candidates yet</text>'
                '</svg>')
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
    labels: list[list[Any]] = []  # [y, text, name]; y moves so labels do not overlap
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


def _plots(s: Mapping[str, Any]) -> str:
    free = not float((s.get("ledger") or {}).get("usd") or 0.0) and not any(
        float(p.get("usd") or 0.0) for p in [*s["points"], *s["best_line"]])
    where = ("model calls (every call cost $0: a local or unpriced model, so there is no cost plot)" if free
             else "model calls (left) or cost (right)")
    figures = f'<figure>{score_plot(s, "calls")}</figure>'
    if not free:
        figures += f'<figure>{score_plot(s, "usd")}</figure>'
    return ('<section id="progress"><h2>Progress</h2><p class="muted">Each dot is a candidate scored on the full '
            f"val split, placed at the run's cumulative {where} when it was scored; the "
            "line is the best val so far. Diamonds: seed and best on the held-out test split, scored once at the "
            "end.</p>"
            f'<div class="plots">{figures}</div></section>')
