"""The transfer report: does a prompt tuned for one model hurt another?

For a task with several `targets:`, run one search per target alone and one over all targets (each a normal,
resumable run under `out_dir`), then score the seed, each target's single-target best and the multi-target best
on the test split of every target. The matrix (prompt x target) is what `promptlearn transfer` prints, writes as
HTML with a plot, and gives as `--json`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from promptlearn.errors import TaskError
from promptlearn.task import Task, load_task


@dataclass(frozen=True)
class TransferReport:
    """Rows: prompts (seed, best for one target, best over all); `test[row][target]`: its test score there."""

    task: str
    aggregate: str  #: how the multi-target run combined targets (min or mean)
    targets: tuple[Mapping[str, Any], ...]  #: key, model, decoding of each target
    rows: tuple[Mapping[str, Any], ...]  #: label, kind (seed / single / multi), target, run, id, prompt, test
    calls: int  #: model requests over every run and the matrix (cache hits included)
    out_dir: Path

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "aggregate": self.aggregate, "targets": [dict(t) for t in self.targets],
                "rows": [dict(r) for r in self.rows], "calls": self.calls, "out_dir": str(self.out_dir)}


def single_target(task: Task, key: str) -> Task:
    """The task with only one of its targets as its model (that target's constraints included)."""
    from promptlearn.targets import target_task

    target = next((t for t in task.spec.targets if t.key == key), None)
    if target is None:
        raise TaskError(f"no target named '{key}'", field="targets",
                        fix="use one of " + ", ".join(t.key for t in task.spec.targets))
    return target_task(task, target)


def transfer_report(task: Task | str | Path, *, budget: int | None = None, seed: int = 0, optimizer: str | None = None,
             out_dir: str | Path = "runs/transfer", cache_path: str | Path | None = None,
             options: Mapping[str, Any] | None = None,
             on_run: Callable[[str], None] | None = None) -> TransferReport:
    """Run the searches (each target alone with `budget` calls, all targets together with `budget` x the number of
    targets, so every target gets the same share) and score the matrix. Runs already finished under `out_dir`
    are replayed from their stores, unfinished ones resumed: the report can be built in pieces."""
    from promptlearn.engine import Evaluation
    from promptlearn.gate import best_of_run
    from promptlearn.run import optimize
    from promptlearn.targets import MultiEvaluation, make_evaluator

    task = task if isinstance(task, Task) else load_task(task)
    if not task.spec.targets:
        raise TaskError("the transfer report needs several targets", file=str(task.path) if task.path else None,
                        field="targets", fix="list two or more models under `targets:`")
    task.require("train", "val", "test", proposer=True)
    out = Path(out_dir)
    keys = [t.key for t in task.spec.targets]
    jobs: list[tuple[str, str, str | None, Task, int | None]] = [
        (f"single-{_slug(k)}", f"best for {k}", k, single_target(task, k), budget) for k in keys]
    jobs.append(("multi", f"best over all ({task.spec.objective.aggregate})", None, task,
                 None if budget is None else budget * len(keys)))
    calls = 0
    rows: list[dict[str, Any]] = []
    for name, label, key, job_task, job_budget in jobs:
        rdir = out / name
        if on_run:
            on_run(name)
        done = (rdir / "store.sqlite").exists()
        result = optimize(job_task, optimizer, budget=job_budget, seed=seed, run_dir=None if done else rdir,
                          resume=rdir if done else None, cache_path=cache_path, options=options)
        calls += result.ledger.requests
        _, cid, prompt, _, _, decoding = best_of_run(rdir)
        rows.append({"label": label, "kind": "single" if key else "multi", "target": key, "run": str(rdir),
                     "id": cid, "prompt": prompt, "decoding": decoding, "stop_reason": result.stop_reason,
                     "candidates": result.candidates, "requests": result.ledger.requests})
    rows.insert(0, {"label": "seed", "kind": "seed", "target": None, "run": None, "id": None, "prompt": task.prompt,
                    "decoding": {}, "stop_reason": None, "candidates": None, "requests": None})
    ev = make_evaluator(task, cache_path=cache_path)
    try:
        test = task.examples("test")
        for row in rows:
            scored: Evaluation = ev.evaluate(row["prompt"], test, split="test", tag="transfer",
                                             model_overrides=row["decoding"] or None)
            assert isinstance(scored, MultiEvaluation)
            row["test"] = scored.target_scores()
            row["test_aggregate"] = scored.score
            row["complete"] = scored.complete
        calls += ev.ledger.total.requests
    finally:
        ev.close()
    targets = tuple({"key": t.key, "model": t.model.name,
                     "decoding": {"guidance": t.model.guidance} if t.model.guidance != 1.0 else {}}
                    for t in task.spec.targets)
    report = TransferReport(task.name, task.spec.objective.aggregate, targets, tuple(rows), calls, out)
    from promptlearn.store import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    import json

    atomic_write(out / "transfer.json", json.dumps(report.to_json(), indent=2, default=str) + "\n")
    write_transfer(report.to_json(), out / "transfer.html")
    return report


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in key)


def transfer_page(data: Mapping[str, Any]) -> str:
    """The transfer report (TransferReport.to_json()) as one self-contained HTML page."""
    from promptlearn.report.page import CSS
    from promptlearn.report.transfer import matrix_plot, matrix_table

    e = html.escape
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    prompts = "".join(f"<h3>{e(str(r['label']))}</h3><pre class=\"prompt\">{e(r['prompt'])}</pre>"
                      for r in data["rows"])
    targets = ", ".join(f"{e(t['key'])} ({e(t['model'])}"
                        + (f", {e(str(t['decoding']))}" if t.get("decoding") else "") + ")" for t in data["targets"])
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        f"<title>promptlearn transfer report: {e(data['task'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Transfer report: {e(data['task'])}</h1>",
        f'<div class="sub">targets: {targets} · {data["calls"]} model requests in all</div>',
        "<p>Each row is a prompt: the seed, the best of a search on one target alone, and the best of a search on "
        f"all targets ({e(data['aggregate'])}). Each column is its test score on one target.</p>",
        matrix_table(data["targets"], data["rows"]), f"<figure>{matrix_plot(data['targets'], data['rows'])}</figure>",
        f"<h2>Prompts</h2>{prompts}</body></html>\n",
    ])


def write_transfer(data: Mapping[str, Any], path: str | Path) -> Path:
    from promptlearn.store import atomic_write

    atomic_write(Path(path), transfer_page(data))
    return Path(path)
