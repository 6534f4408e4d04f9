"""See a run: one self-contained HTML report, and the data (`run_summary`) the terminal views share with it.

The report has no network dependency at all: CSS and the few lines of JS are inline, plots are inline SVG drawn
here in Python, and a Content-Security-Policy forbids loading anything. Every piece of run data (prompts,
replies, ids, check names) goes through `html.escape`, so a prompt holding `<script>` is shown, never run.

One module per part of the page: the run data in ``summary``, the page and ``write_report`` in ``page``, the
progress plots in ``plots``, the lineage tree and word diffs in ``lineage``, the check / example / ledger tables
in ``tables``, and the number formatting they (and promptlearn/views.py) share in ``formatting``.
"""

from __future__ import annotations

from promptlearn.report.formatting import budget_text, fmt, fmt_gain
from promptlearn.report.lineage import diff_html, word_diff
from promptlearn.report.page import CSS, JS, render_report, write_report
from promptlearn.report.plots import score_plot
from promptlearn.report.summary import SCORED_EVENTS, run_summary, runs_overview
from promptlearn.report.tables import MAX_SAME_ROWS, flat_metrics
from promptlearn.types import PASS

__all__ = [
    "CSS",
    "JS",
    "MAX_SAME_ROWS",
    "PASS",
    "SCORED_EVENTS",
    "budget_text",
    "diff_html",
    "flat_metrics",
    "fmt",
    "fmt_gain",
    "render_report",
    "run_summary",
    "runs_overview",
    "score_plot",
    "word_diff",
    "write_report",
]
