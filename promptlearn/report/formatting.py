"""Number formatting shared by the HTML report and the terminal views, so both print a score the same way."""

from __future__ import annotations

from typing import Any, Mapping


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_gain(x: float | None) -> str:
    return "" if x is None else f"{x:+.3f}"


def _usd(x: float | None) -> str:
    return "–" if x is None else f"${x:.4f}"


def _cls_gain(x: float | None) -> str:
    return "" if x is None or abs(x) < 1e-12 else "pos" if x > 0 else "neg"


def budget_text(budget: Mapping[str, Any] | None, used: int | None) -> str:
    """The call budget, stated one way everywhere (terminal and report): asked, the search's share, the
    reserve held back to score seed and best on test, and the requests used (cache hits count, as for
    max_calls). "" when the run had no max_calls."""
    if not budget or budget.get("max_calls") is None:
        return ""
    text = (f"budget {budget['max_calls']} calls: {budget['search']} for the search, "
            f"{budget['test_reserve']} held back for test")
    return text + (f"; {used} used" if used is not None else "")
