"""Number formatting shared by the HTML report and the terminal views, so both print a score the same way."""

from __future__ import annotations


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_gain(x: float | None) -> str:
    return "" if x is None else f"{x:+.3f}"


def _usd(x: float | None) -> str:
    return "–" if x is None else f"${x:.4f}"


def _cls_gain(x: float | None) -> str:
    return "" if x is None or abs(x) < 1e-12 else "pos" if x > 0 else "neg"
