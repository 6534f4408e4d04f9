"""The data of one run: `run_summary` reads the run store into plain JSON-able dicts.

The HTML report and the terminal views (`promptlearn runs` / `show`, promptlearn/views.py) draw from the same
dicts, so both always show the same scores, lineage and ledger.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from promptlearn.store import RunStore, iter_parents

#: The loop's default acceptance confidence (loop.Options.confidence), for runs that did not set it.
DEFAULT_CONFIDENCE = 0.8

#: Progress events of a candidate that got a full val score (what the loop logs, see loop.Verdict).
SCORED_EVENTS = ("seed", "promoted", "accepted")


def run_summary(run: str | Path, *, examples: bool = True, store: str | Path | None = None,
                root: str | Path = "runs") -> dict[str, Any]:
    """Everything the report and the `runs` / `show` commands show about one run, as plain JSON-able data.

    `run`: a run folder, or an id / prefix / `latest` of a run under `root` or in the store at `store` (a
    postgresql:// URL). examples=False skips the per-example comparison (the only part that reads every stored
    result).
    """
    from promptlearn.store.locate import locate_run

    ref = locate_run(run, store=store, root=root)
    try:
        rs = ref.open()
        try:
            return summarize(rs, ref.files_dir, examples)
        finally:
            rs.close()
    finally:
        ref.close()


def summarize(store: RunStore, files_dir: Path, with_examples: bool = True) -> dict[str, Any]:
    """run_summary of an open run store; `files_dir` is the folder of its user-facing files."""
    run_yaml = _read_run_yaml(store, files_dir)
    config = store.get_meta("config") or {}
    scores = store.scores()
    cands = store.candidates()
    by_id = {c["id"]: c for c in cands}
    seed_id = store.get_meta("seed") or next((c["id"] for c in cands if c["operator"] == "seed"), None)
    best_id = store.get_meta("best") or seed_id
    events = store.events()
    screens = {e["id"]: e for e in events if e["kind"] == "screen"}
    races = {e["id"]: e for e in events if e["kind"] == "race"}  # dropped part-way through val (Options.race)
    progress = [e for e in events if e["kind"] == "progress"]

    nodes = []
    for c in cands:
        s = scores.get(c["id"], {})
        val = s.get("val", {}).get("score")
        parent = c["parents"][0] if c["parents"] and c["parents"][0] in by_id else None
        pval = scores.get(parent, {}).get("val", {}).get("score") if parent else None
        scr = screens.get(c["id"])
        nodes.append({
            "id": c["id"], "seq": c["seq"], "prompt": c["prompt"], "parents": c["parents"], "parent": parent,
            "operator": c["operator"], "status": c["status"], "meta": c["meta"],
            "val": val, "test": s.get("test", {}).get("score"), "train": s.get("train", {}).get("score"),
            "val_n": s.get("val", {}).get("n"), "test_n": s.get("test", {}).get("n"),
            "val_checks": s.get("val", {}).get("checks") or {}, "test_checks": s.get("test", {}).get("checks") or {},
            "gain": None if val is None or pval is None else val - pval,
            "screen": None if scr is None else {"score": scr.get("score"), "parent": scr.get("parent"),
                                                # how many it was scored on, when the screen race stopped it
                                                **({"examples": scr["examples"]} if "examples" in scr else {})},
            "race": None if (r := races.get(c["id"])) is None else {"score": r.get("score"),
                                                                    "examples": r.get("examples"),
                                                                    "reason": r.get("reason")},
        })
    threshold = float((config.get("options") or {}).get("confidence", DEFAULT_CONFIDENCE))
    promotes = {e["id"]: e for e in events if e["kind"] == "promote"}  # the last verdict on each candidate
    best_val = scores.get(best_id, {}).get("val", {}).get("score") if best_id else None
    for n in nodes:
        n["not_accepted"] = None
        if (best_val is not None and n["val"] is not None and n["val"] > best_val and n["id"] != best_id):
            n["not_accepted"] = not_accepted_reason(promotes.get(n["id"]), threshold)
    path = [n["id"] for n in iter_parents(nodes, best_id)] if best_id is not None and best_id in by_id else []
    on_path = set(path)
    for n in nodes:
        n["on_path"] = n["id"] in on_path
        n["is_seed"], n["is_best"] = n["id"] == seed_id, n["id"] == best_id

    points, best_line = [], []
    for e in progress:
        best_line.append({"calls": e.get("calls", 0), "usd": e.get("usd", 0.0), "best_val": e.get("best_val"),
                          "best": e.get("best"), "seconds": e.get("seconds", 0.0)})
        if e.get("event") in SCORED_EVENTS and e.get("id") in scores and "val" in scores[e["id"]]:
            points.append({"id": e["id"], "calls": e.get("calls", 0), "usd": e.get("usd", 0.0),
                           "val": scores[e["id"]]["val"]["score"], "event": e.get("event"),
                           "operator": by_id.get(e["id"], {}).get("operator")})

    ledger = store.get_meta("ledger")
    if ledger is None and progress:  # a run still going (or killed): the last progress event has the totals
        last = progress[-1]
        ledger = {"calls": last.get("calls", 0), "usd": last.get("usd", 0.0), "seconds": last.get("seconds", 0.0)}
    task = (run_yaml.get("task") or {}) if run_yaml else {}
    created = events[0]["time"] if events else store.created()
    out: dict[str, Any] = {
        "run_id": store.run_id, "run_dir": str(files_dir),
        "task": task.get("name") or "?", "description": task.get("description") or "",
        "model": (task.get("model") or {}).get("name"),
        "optimizer": config.get("optimizer") or (task.get("optimizer") or {}).get("name") or "?",
        "rng_seed": config.get("seed", run_yaml.get("seed") if run_yaml else None),
        "options": config.get("options") or {},
        "status": store.get_meta("status") or "?", "stop_reason": store.get_meta("stop_reason"),
        "created": datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "seed_id": seed_id, "best_id": best_id, "path": path,
        "seed": _prompt_scores(nodes, seed_id), "best": _prompt_scores(nodes, best_id),
        "candidates": nodes,
        "counts": _count_status(nodes),
        "points": points, "best_line": best_line,
        "ledger": ledger or {}, "ledger_by_tag": store.get_meta("ledger_by_tag") or {},
        "budget": store.get_meta("budget"),
        "test_metrics": store.get_meta("test_metrics") or {},
        "targets": store.get_meta("targets"), "migration": store.get_meta("migration"),
    }
    seed, best = out["seed"], out["best"]
    out["gain_val"] = None if seed["val"] is None or best["val"] is None else best["val"] - seed["val"]
    out["gain_test"] = None if seed["test"] is None or best["test"] is None else best["test"] - seed["test"]
    out["overfit_gap"] = None if best["val"] is None or best["test"] is None else best["val"] - best["test"]
    if with_examples:
        out["examples"] = _examples(store, files_dir, run_yaml, seed_id, best_id)
    return out


def not_accepted_reason(promote: Mapping[str, Any] | None, threshold: float) -> str:
    """Why a candidate with a higher val score than the best is not the best: the acceptance rule of loop.py
    (no violated side-effect constraint, and confidence >= the threshold that it beats the best of the time)."""
    if promote is None:
        return "never compared with the best (the run stopped first)"
    if promote.get("violations"):
        return "violates " + "; ".join(map(str, promote["violations"]))
    if promote.get("worse"):  # several targets (promptlearn.targets.decide)
        return "significantly worse on " + "; ".join(map(str, promote["worse"]))
    conf, then = promote.get("confidence"), promote.get("best")
    than = f" the best of the time (val {then:.3f})" if isinstance(then, (int, float)) else " the best of the time"
    if isinstance(conf, (int, float)) and conf < threshold:
        return f"confidence {conf:.2f} that it beats{than} is below {threshold:.2f}"
    return f"not better than{than} when it was compared"


def _prompt_scores(nodes: Sequence[Mapping[str, Any]], cid: str | None) -> dict[str, Any]:
    n = next((n for n in nodes if n["id"] == cid), None)
    if n is None:
        return {"id": cid, "prompt": "", "val": None, "test": None, "val_checks": {}, "test_checks": {}}
    return {k: n[k] for k in ("id", "prompt", "val", "test", "val_checks", "test_checks", "operator")}


def _count_status(nodes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        out[n["status"]] = out.get(n["status"], 0) + 1
    return out


def _read_run_yaml(store: RunStore, run_dir: Path) -> dict[str, Any]:
    """run.yaml as the store keeps it; a run made before the store kept it: the file in its folder."""
    from promptlearn.store.files import RUN_YAML

    text = store.get_meta(RUN_YAML)
    if text is not None:
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except Exception:  # noqa: BLE001 - a damaged run.yaml must not stop the report
            return {}
    p = run_dir / "run.yaml"
    if not p.exists():
        return {}
    try:
        import yaml

        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except Exception:  # noqa: BLE001 - a damaged run.yaml must not stop the report
        return {}


def _user_turns(run_yaml: Mapping[str, Any], run_dir: Path) -> dict[str, list[str]]:
    """User messages per example id, when the task file the run was made with can still be loaded unchanged."""
    task_file = run_yaml.get("task_file")
    if not task_file:
        return {}
    for cand in (Path(task_file), run_dir / task_file, run_dir.parent / task_file, run_dir.parent.parent / task_file):
        if cand.exists():
            break
    else:
        return {}
    try:
        from promptlearn.task import load_task

        task = load_task(cand)
        if run_yaml.get("fingerprint") and task.fingerprint() != run_yaml["fingerprint"]:
            return {}
        return {e.id: [t.user for t in e.turns if t.given is None] for e in task.examples("all")}
    except Exception:  # noqa: BLE001 - user text is a nicety; the report works without it
        return {}


def _examples(store: RunStore, files_dir: Path, run_yaml: Mapping[str, Any], seed_id: str | None,
              best_id: str | None) -> dict[str, Any]:
    """Seed vs best per example on test (val when test was not scored): fixed / broken / same."""
    seed_res = store.results(seed_id) if seed_id else {}
    best_res = store.results(best_id) if best_id else {}
    splits = (run_yaml or {}).get("splits") or {}
    split, ids = "all", sorted(set(seed_res) & set(best_res))
    for name in ("test", "val"):
        want = [i for i in splits.get(name) or [] if i in seed_res and i in best_res]
        if want:
            split, ids = name, want
            break
    users = _user_turns(run_yaml, files_dir) if ids else {}
    rows: list[dict[str, Any]] = []
    for ex_id in ids:
        s, b = seed_res[ex_id], best_res[ex_id]
        was, now = s.passed, b.passed
        status = "fixed" if now and not was else "broken" if was and not now else "same"
        rows.append({"id": ex_id, "status": status, "user": users.get(ex_id, []),
                     "seed": _result_view(s), "best": _result_view(b)})
    order = {"fixed": 0, "broken": 1, "same": 2}
    rows.sort(key=lambda r: (order[r["status"]], r["id"]))
    counts = {k: sum(r["status"] == k for r in rows) for k in order}
    return {"split": split, "rows": rows, "counts": counts}


def _result_view(res: Any) -> dict[str, Any]:
    return {"score": res.score, "turns": [
        {"reply": t.reply, "error": t.error, "score": t.score,
         "failed": [{"check": k, "score": r.score, "feedback": r.feedback} for k, r in t.checks.items()
                    if not r.passed and not r.judge_error]} for t in res.turns]}


#: Files of a run folder; a folder holding any of them but no readable store is listed as unreadable.
RUN_FILES = ("store.sqlite", "run.yaml", "lineage.json", "best_prompt.txt")


def runs_overview(root: str | Path = "runs", *, store: str | Path | None = None) -> list[dict[str, Any]]:
    """One summary (without per-example data) per run under root (or in the database at `store`), oldest first.
    A run that cannot be read (no store, a damaged one) gets {"run_id", "run_dir", "status": "unreadable",
    "error"}."""
    from promptlearn.store import is_db_url, open_store, run_started

    if is_db_url(store):
        backend = open_store(str(store))
        try:
            out = []
            for run_id in backend.run_ids():
                try:
                    out.append(summarize(backend.open_run(run_id), Path(root) / run_id, False))
                except Exception as e:  # noqa: BLE001 - one bad run must not hide the others
                    out.append({"run_id": run_id, "run_dir": str(Path(root) / run_id), "status": "unreadable",
                                "error": " ".join(str(e).split())})
            return out
        finally:
            backend.close()

    root = Path(root)
    dirs = [p for p in root.iterdir() if p.is_dir() and any((p / f).exists() for f in RUN_FILES)] \
        if root.is_dir() else []
    out = []
    for d in sorted(dirs, key=lambda p: (run_started(p), p.name)):
        try:
            if not (d / "store.sqlite").exists():
                raise FileNotFoundError("no store.sqlite (the run's store is missing)")
            out.append(run_summary(d, examples=False))
        except Exception as e:  # noqa: BLE001 - one bad run must not hide the others
            out.append({"run_id": d.name, "run_dir": str(d), "status": "unreadable", "error": " ".join(str(e).split())})
    return out
