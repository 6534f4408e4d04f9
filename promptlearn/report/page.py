"""The report page: one self-contained HTML document built from `run_summary`, and `write_report`.

The report has no network dependency at all: CSS and the few lines of JS are inline, plots are inline SVG drawn
in Python, and a Content-Security-Policy forbids loading anything. Every piece of run data (prompts,
replies, ids, check names) goes through `html.escape`, so a prompt holding `<script>` is shown, never run.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping

from promptlearn.report.formatting import _cls_gain, _usd, budget_text, fmt, fmt_gain
from promptlearn.report.lineage import _lineage, diff_html
from promptlearn.report.plots import _plots
from promptlearn.report.summary import run_summary
from promptlearn.report.tables import _checks, _examples_html, _ledger_html
from promptlearn.report.transfer import targets_section


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
    led_used = led.get("requests", (led.get("calls") or 0) + (led.get("cached_calls") or 0))
    budget = budget_text(s.get("budget"), led_used if led else None)
    budget_html = f'<p class="budget">{e(budget)}</p>' if budget else ""
    return budget_html + '<div class="cards">' + "".join(
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
    passed_over = sorted((n for n in s["candidates"] if n.get("not_accepted")), key=lambda n: -n["val"])
    if passed_over:
        items = "".join(f'<li><a href="#c-{e(n["id"])}"><code>{e(n["id"])}</code></a> {e(str(n["operator"]))} · '
                        f'val {fmt(n["val"])}: {e(n["not_accepted"])}</li>' for n in passed_over)
        out.append(f'<p id="not-accepted">Higher val score than the best ({fmt(best["val"])}) but not accepted:</p>'
                   f'<ul class="not-accepted">{items}</ul>')
    if not same:
        out.append(f'<h3>Change from the seed</h3><div class="diff">{diff_html(seed["prompt"], best["prompt"])}</div>')
    out.append("</section>")
    return "".join(out)


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
  if (pathOnly && tree) pathOnly.addEventListener('change', function(){
    tree.classList.toggle('path-only', pathOnly.checked);
  });
  var unscored = document.getElementById('hide-unscored');
  if (unscored && tree) unscored.addEventListener('change', function(){
    tree.classList.toggle('hide-unscored', unscored.checked);
  });
  var changed = document.getElementById('changed-only');
  var table = document.querySelector('table.examples');
  if (changed && table) changed.addEventListener('change', function(){
    table.classList.toggle('changed-only', changed.checked);
  });
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


def render_report(run: str | Path, *, store: str | Path | None = None, root: str | Path = "runs") -> str:
    """The run's report as one self-contained HTML document (`run`, `store`, `root` as for run_summary)."""
    return render_summary(run_summary(run, store=store, root=root))


def render_summary(s: Mapping[str, Any]) -> str:
    """The report page of a run_summary."""
    e = html.escape
    stop = f" · stopped: {e(str(s['stop_reason']))}" if s["stop_reason"] else ""
    models = ", ".join(t["key"] for t in s["targets"]["targets"]) if s.get("targets") else str(s["model"])
    meta = (f"task <b>{e(s['task'])}</b> · optimizer <b>{e(str(s['optimizer']))}</b> · "
            f"{'targets' if s.get('targets') else 'model'} <b>{e(models)}</b>"
            f" · rng seed {e(str(s['rng_seed']))} · status <b>{e(s['status'])}</b>{stop}"
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
        _cards(s), targets_section(s), _best_prompt(s), _plots(s), _lineage(s), _checks(s), _examples_html(s),
        _ledger_html(s),
        f'<script type="application/json" id="run-data">{_json_for_script(data)}</script>',
        f"<script>{JS}</script></body></html>\n",
    ])


def _json_for_script(text: str) -> str:
    """JSON safe inside a <script> element: no '</' or '<!--' can end it early."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(run: str | Path, out: str | Path | None = None, *, store: str | Path | None = None,
                 root: str | Path = "runs") -> Path:
    """Write the report (default report.html in the run's folder of files; `out` a directory: report.html in it)
    atomically and return its path. Works from any store: a database run's report goes to `root/<id>/`. A path
    that cannot be written is a PromptlearnError in one line."""
    from promptlearn.errors import PromptlearnError
    from promptlearn.store import atomic_write

    summary = run_summary(run, store=store, root=root)
    page = render_summary(summary)
    path = Path(out) if out is not None else Path(summary["run_dir"]) / "report.html"
    if path.is_dir():
        path = path / "report.html"
    try:
        atomic_write(path, page)
    except OSError as e:
        raise PromptlearnError(f"cannot write the report to {path}: {e.strerror or e}") from None
    return path
