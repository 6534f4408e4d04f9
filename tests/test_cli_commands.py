"""The commands a new user reaches for: --version, --help, `checks`, `runs`, `show` and run ids (prefix, latest).

Runs are stores built by hand (tests/test_report.py's build_store); the CLI runs in this process.
"""

from __future__ import annotations

import json
import sys

import pytest

from test_report import build_store


def cli(monkeypatch, capsys, *args: str, columns: int = 80) -> tuple[int, str, str]:
    """Run `promptlearn ARGS` in this process at COLUMNS wide; returns (exit code, stdout, stderr)."""
    from promptlearn import cli as cli_mod

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys, "argv", ["promptlearn", *map(str, args)])
    code = 0
    try:
        cli_mod.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- --version, --help ----------------------------------------------------------------------------------------


def test_version(monkeypatch, capsys):
    import promptlearn

    code, out, _ = cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"promptlearn {promptlearn.__version__}"


def test_help_shows_boolean_flags_as_plain_flags(monkeypatch, capsys):
    for command in ("eval", "optimize", "check", "export"):
        code, out, _ = cli(monkeypatch, capsys, command, "--help")
        assert code == 0 and "--json" in out or "--no-provenance" in out, out
        assert "<bool>" not in out, out
        assert "<path>" in out  # options that take a value still say what kind
