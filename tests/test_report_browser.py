"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol (aiohttp websocket).

Needs the Debian packages `chromium` (and `chromium-driver` for CI parity); skipped when no chromium is on PATH.
The real-run test makes a small evolve run on the embedded model, renders its report, checks that the plots and
the lineage tree are drawn without console errors, and saves a screenshot (to
bench/results/report_screenshot.png too when PROMPTLEARN_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import requires_model

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "bench" / "results" / "report_screenshot.png"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("PROMPTLEARN_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


requires_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="needs headless Chromium: apt-get install -y chromium chromium-driver")

# Inspect the page once it has loaded: what the tests assert on.
PROBE = """(() => {
  const pts = [...document.querySelectorAll('svg.plot circle.pt[data-id]')];
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    title: document.title,
    plots: [...document.querySelectorAll('svg.plot')].map(s => ({
      kind: s.dataset.plot, size: box(s), points: s.querySelectorAll('circle.pt[data-id]').length,
      tests: s.querySelectorAll('[data-test]').length, bestline: s.querySelectorAll('path.bestline').length})),
    pointsVisible: pts.filter(p => box(p)[0] > 0).length,
    nodes: document.querySelectorAll('ul.tree .node').length,
    pathNodes: document.querySelectorAll('ul.tree .node.on-path').length,
    bestNode: document.querySelectorAll('ul.tree .node.is-best').length,
    treeSize: box(document.querySelector('ul.tree')),
    diffs: document.querySelectorAll('ul.tree .diff').length,
    checkRows: document.querySelectorAll('table.checks tbody tr').length,
    exampleRows: document.querySelectorAll('table.examples tr.ex').length,
    ledgerRows: document.querySelectorAll('table.ledger tbody tr').length,
    scripts: document.scripts.length,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    height: document.documentElement.scrollHeight,
  };
})()"""


class Browser:
    """A throwaway headless Chromium with an empty profile, spoken to over one page's DevTools websocket."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0")

    def __init__(self, exe: str):
        self.exe = exe
        self.profile = tempfile.mkdtemp(prefix="promptlearn-chromium-")
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def __enter__(self) -> "Browser":
        self.proc = subprocess.Popen([self.exe, *self.FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text().split()[0])
                return self
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {err[-2000:]}")
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("chromium did not open its DevTools port within 30 s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def visit(self, url: str, *, width: int = 1280, height: int = 900, probe: str = PROBE,
              screenshot_height: int | None = None) -> dict[str, Any]:
        return asyncio.run(self._visit(url, width, height, probe, screenshot_height))

    async def _visit(self, url: str, width: int, height: int, probe: str,
                     screenshot_height: int | None) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                targets = await r.json(content_type=None)
            page = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _CDP(ws)
                reader = asyncio.create_task(cdp.read())
                try:
                    for domain in ("Runtime", "Log", "Page"):
                        await cdp.call(f"{domain}.enable")
                    await cdp.call("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
                    loaded = cdp.wait_for("Page.loadEventFired")
                    await cdp.call("Page.navigate", {"url": url})
                    await asyncio.wait_for(loaded, 30)
                    res = await cdp.call("Runtime.evaluate", {"expression": probe, "returnByValue": True})
                    if "exceptionDetails" in res:
                        raise AssertionError(f"probe failed: {res['exceptionDetails']}")
                    await asyncio.sleep(0.2)  # let late console messages arrive
                    shot = await cdp.call("Page.captureScreenshot", {
                        "format": "png", "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": screenshot_height or height, "scale": 1}})
                finally:
                    reader.cancel()
        return {"probe": res["result"]["value"], "errors": cdp.errors, "console": cdp.console,
                "png": base64.b64decode(shot["data"])}


class _CDP:
    def __init__(self, ws: Any):
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.errors: list[str] = []
        self.console: list[str] = []

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        msg = await asyncio.wait_for(fut, 30)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    def wait_for(self, event: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(event, []).append(fut)
        return fut

    async def read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw.data)
            if "id" in msg:
                fut = self.pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            method, params = msg.get("method"), msg.get("params", {})
            for fut in self.waiters.pop(method, []):
                if not fut.done():
                    fut.set_result(params)
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.console.append(f"{params.get('type')}: {text}")
                if params.get("type") in ("error", "assert", "warning"):
                    self.errors.append(f"console.{params.get('type')}: {text}")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.errors.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") in ("error", "warning"):
                    self.errors.append(f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')}")


def assert_report_drawn(probe: dict[str, Any], *, min_points: int = 1, min_nodes: int = 1,
                        free: bool = False) -> None:
    kinds = {p["kind"]: p for p in probe["plots"]}
    assert set(kinds) == ({"calls"} if free else {"calls", "usd"}), probe["plots"]  # no cost plot for a $0 model
    for plot in kinds.values():
        assert plot["size"][0] > 200 and plot["size"][1] > 100, plot
        assert plot["points"] >= min_points, plot
        assert plot["bestline"] == 1, plot
    assert probe["pointsVisible"] >= len(kinds) * min_points
    assert probe["nodes"] >= min_nodes and probe["pathNodes"] >= 1 and probe["bestNode"] == 1, probe
    assert probe["treeSize"][0] > 200 and probe["treeSize"][1] > 20, probe
    assert probe["checkRows"] >= 1 and probe["ledgerRows"] >= 1, probe


# ---- tests ----------------------------------------------------------------------------------------------------


@requires_chromium
def test_hand_built_report_in_browser(tmp_path):
    """No model needed: a hand-made store (with a hostile prompt) renders, draws, and runs no injected script."""
    from promptlearn.report import write_report
    from test_report import build_store

    run_dir = build_store(tmp_path / "run")
    path = write_report(run_dir)
    with Browser(find_chromium()) as browser:
        out = browser.visit(path.resolve().as_uri())
    probe = out["probe"]
    assert out["errors"] == [], out["errors"]
    assert probe["pwned"] is None, "a <script> from a prompt ran"
    assert probe["scripts"] == 2  # the report's own JSON data and JS, nothing injected
    assert_report_drawn(probe, min_points=3, min_nodes=5)
    assert probe["exampleRows"] == 3
    (tmp_path / "hand_built.png").write_bytes(out["png"])
    assert out["png"][:8] == b"\x89PNG\r\n\x1a\n"


def small_pirate_task(dirpath: Path, n: int = 8) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((REPO / "tasks" / "pirate.yaml").read_text())
    rows = (REPO / "tasks" / "data" / "pirate.jsonl").read_text().splitlines()[:n]
    (dirpath / "rows.jsonl").write_text("\n".join(rows) + "\n")
    spec["data"] = [{"file": "rows.jsonl"}]
    spec["model"]["max_tokens"] = 12
    path = dirpath / "pirate.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.model
@pytest.mark.slow
@requires_model
@requires_chromium
def test_real_run_report_in_browser(tmp_path):
    from promptlearn.report import run_summary, write_report
    from promptlearn.run import optimize

    task = small_pirate_task(tmp_path / "task")
    result = optimize(task, "evolve", budget=40, run_dir=tmp_path / "run", cache_path=tmp_path / "cache.sqlite")
    assert result.ledger.calls <= 40
    summary = run_summary(result.run_dir)
    path = write_report(result.run_dir)
    assert path == result.run_dir / "report.html"

    with Browser(find_chromium()) as browser:
        out = browser.visit(path.resolve().as_uri(), width=1200, height=900, screenshot_height=1500)
    probe = out["probe"]
    assert out["errors"] == [], out["errors"]
    assert probe["title"] == f"promptlearn run {result.run_id}"
    assert_report_drawn(probe, min_points=len(summary["points"]), min_nodes=len(summary["candidates"]),
                        free=not result.ledger.usd)
    assert all(p["points"] == len(summary["points"]) for p in probe["plots"])
    assert all(p["tests"] == (1 if result.best.id == result.seed.id else 2) for p in probe["plots"]), probe["plots"]
    assert probe["pathNodes"] == len(summary["path"])
    assert probe["exampleRows"] == len(summary["examples"]["rows"]) > 0

    png = out["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 600_000, len(png)
    (tmp_path / "report.png").write_bytes(png)
    if os.environ.get("PROMPTLEARN_UPDATE_SCREENSHOT"):  # refresh the committed artifact only when asked
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(png)
