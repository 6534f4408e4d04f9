"""Every setting does what it says: no task-file field is accepted and then ignored, the same command gives the
same run whatever the cache holds, and the Python export writes what `promptlearn export` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from promptlearn import task as task_module
from promptlearn.optimizers import _PLUGINS, register_optimizer
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import TaskSpec, task_from_dict
from promptlearn.testing import FakeLM, contract_task, wording_sensitive_responder

#: Fields no engine object reads, with where they are used instead (each claim is tested below).
USED_ELSEWHERE = {
    "description": "shown in the HTML report, which reads it from the run's run.yaml",
    "splits.test": "the test split is what train and val leave; validation makes the three fractions sum to 1",
}


def full_task_dict(tmp_path: Path) -> dict[str, Any]:
    """A task that sets every field of the schema to something other than its default."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "user": f"Tell me about ships, part {i}."}) + "\n"
                            for i in range(14)))
    model = {"name": "fake/target", "temperature": 0.0, "max_tokens": 32, "seed": 1, "api_base": None,
             "api_key_env": None, "concurrency": 2, "timeout": 30, "retries": 1, "guidance": 1.0, "params": {},
             "transport": "litellm"}
    return {
        "name": "everything", "description": "A task that sets every field.",
        "model": model, "proposer": {**model, "name": "fake/proposer"}, "judge": {**model, "name": "fake/judge"},
        "prompt": "You are a pirate about {topic}. Start every reply with Ahoy. Be brief.",
        "protected": ["Be brief."], "placeholders": ["topic"],
        "data": [{"file": "rows.jsonl", "format": "jsonl", "limit": 12, "offset": 1,
                  "checks": [{"type": "contains", "value": "a", "weight": 0.5, "turns": [1]}],
                  "meta": {"vars": {"topic": "ships"}}},
                 {"examples": [{"id": "inline-1", "user": "hi"}, {"id": "inline-2", "user": "ho"}], "split": "test"}],
        "splits": {"train": 0.5, "val": 0.3, "test": 0.2, "seed": 3},
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "ahoy"}, {"type": "max_words", "value": 50},
                   {"type": "checklist", "name": "tone", "criteria": ["is polite"]}],
        "objective": {"primary": "loose", "constraints": {"broken": "<= 3"}, "weights": {"ahoy": 2.0}},
        "budget": {"max_calls": 400, "max_usd": 1.0, "max_tokens": 1_000_000, "max_seconds": 600},
        "optimizer": {"name": "evolve", "minibatch": 4},
        "cache": "cache.sqlite",
        # a tracker nothing listens on: both fields are read, the tracker fails once and the run goes on
        "tracking": {"mlflow": "http://127.0.0.1:9", "experiment": "everything"},
        "migrate": {"from": {**model, "name": "fake/old-model", "max_tokens": 24}},
    }


def multi_target_dict(tmp_path: Path) -> dict[str, Any]:
    """The same task with several targets (`targets:` replaces `model:` and does not combine with `migrate:`),
    so the fields only a multi-target run reads are set too."""
    raw = full_task_dict(tmp_path)
    model = raw.pop("model")
    raw.pop("migrate")
    raw["targets"] = [{"model": model, "label": "first", "weight": 2.0, "constraints": {"broken": "<= 4"}},
                      {**model, "name": "fake/second"}]
    raw["objective"] = {**raw["objective"], "aggregate": "mean"}
    return raw


def schema_paths(model: type[BaseModel] = TaskSpec, prefix: str = "") -> set[str]:
    """Every field path of the task schema, nested models included (lists as [])."""
    out = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.add(path)
        nested = task_module._model_in(info.annotation)
        if nested is not None:
            listy = "list" in str(info.annotation)
            out |= schema_paths(nested, f"{path}{'[]' if listy else ''}.")
    return out


def instance_paths(obj: Any, prefix: str = "") -> dict[int, str]:
    """id(model instance) -> its path prefix in the spec (lists as [])."""
    out = {id(obj): prefix}
    for name in type(obj).model_fields:
        value = obj.__dict__.get(name)
        if isinstance(value, BaseModel):
            out |= instance_paths(value, f"{prefix}{name}.")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    out |= instance_paths(item, f"{prefix}{name}[].")
    return out


def judge_or_target(messages: Any) -> str:
    if "strict verifier" in messages[-1]["content"]:
        return '{"reason": "ok", "verdicts": {"1": "yes"}}'
    return wording_sensitive_responder(messages)


def test_no_task_field_is_accepted_and_ignored(tmp_path, monkeypatch):
    from promptlearn.gate import check_prompt, export_run

    reads: set[tuple[int, str]] = set()
    spying = [False]
    schema_models = {task_module._model_in(i.annotation) for i in TaskSpec.model_fields.values()} - {None}
    schema_models |= {TaskSpec}

    def spy(self: Any, name: str) -> Any:
        if spying[0] and name in type(self).model_fields:
            reads.add((id(self), name))
        return object.__getattribute__(self, name)

    monkeypatch.chdir(tmp_path)  # the task's relative `cache:` lands here: every request reaches the model
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for cls in schema_models:
        monkeypatch.setattr(cls, "__getattribute__", spy)
    validate = TaskSpec.model_validate.__func__

    def validate_quietly(cls: Any, *a: Any, **k: Any) -> Any:  # validators reading a field is no use of it
        spying[0] = False
        try:
            return validate(cls, *a, **k)
        finally:
            spying[0] = True

    monkeypatch.setattr(TaskSpec, "model_validate", classmethod(validate_quietly))
    read: set[str] = set()
    for n, raw in enumerate((full_task_dict(tmp_path), multi_target_dict(tmp_path))):
        reads.clear()
        spying[0] = True
        task = task_from_dict(raw, base_dir=tmp_path)
        with FakeLM(judge_or_target):
            result = optimize(task, seed=0, run_dir=tmp_path / f"run{n}", runs_root=tmp_path)
            check_prompt(task, result.best.prompt, split="test")
            export_run(tmp_path / f"run{n}", tmp_path / "app.yaml", "assistant.prompt")
        spying[0] = False
        where = instance_paths(task.spec)
        read |= {where[i] + name for i, name in reads if i in where}
    # a nested model counts as read when any of its fields is
    read |= {p.rsplit(".", 2)[0] if p.count(".") > 1 else p.split(".")[0] for p in read}
    read |= {p.split("[]")[0] for p in read if "[]" in p}
    unread = sorted(schema_paths() - read - set(USED_ELSEWHERE))
    assert unread == [], f"task fields accepted but never read: {unread}"


def test_fields_used_elsewhere_are_used_there(tmp_path, monkeypatch):
    from promptlearn.report import write_report

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    task = task_from_dict(full_task_dict(tmp_path), base_dir=tmp_path)
    with FakeLM(judge_or_target):
        optimize(task, seed=0, run_dir=tmp_path / "run", budget=80)
    page = Path(write_report(tmp_path / "run")).read_text()
    assert "A task that sets every field." in page
    bad = full_task_dict(tmp_path)
    bad["splits"] = {"train": 0.5, "val": 0.3, "test": 0.5}
    with pytest.raises(Exception, match="train \\+ val \\+ test must be 1"):
        task_from_dict(bad, base_dir=tmp_path)


# ---- the same command gives the same run ---------------------------------------------------------------------

def lineage(run_dir: Path) -> list[tuple[str, tuple[str, ...], str, str]]:
    return [(c["id"], tuple(c["parents"]), c["operator"], c["status"])
            for c in SQLiteRunStore(run_dir, create=False).candidates()]


def test_a_budget_stopped_run_repeated_with_a_warm_cache_is_the_same_run_at_no_cost(tmp_path):
    task = contract_task(max_calls=70)
    with FakeLM(wording_sensitive_responder) as fake:
        first = optimize(task, "evolve", seed=1, run_dir=tmp_path / "a", cache_path=tmp_path / "c.sqlite")
        calls = fake.calls
        again = optimize(task, "evolve", seed=1, run_dir=tmp_path / "b", cache_path=tmp_path / "c.sqlite")
    assert first.stop_reason.startswith("budget stop: max_calls")
    assert fake.calls == calls and again.ledger.calls == 0  # every request answered by the cache
    assert again.ledger.requests == first.ledger.requests == first.ledger.calls + first.ledger.cached_calls
    assert lineage(tmp_path / "b") == lineage(tmp_path / "a")  # the old ledger let the re-run search further


# ---- Result.export is `promptlearn export` ----------------------------------------------------------------------

class _GuidedProposal:
    name: ClassVar[str] = "guided-proposal-test"

    def run(self, ctx: Any) -> None:
        ctx.propose("You are a pirate. IMPORTANT: Start every reply with the word Ahoy. Rules: each reply.",
                    (ctx.seed_candidate.id,), "fixed", {"guidance": 1.5})


def test_result_export_writes_the_decoding_options_as_promptlearn_export_does(tmp_path):
    from promptlearn.gate import export_run

    register_optimizer(_GuidedProposal)
    try:
        with FakeLM(wording_sensitive_responder):
            res = optimize(contract_task(max_calls=200), _GuidedProposal.name, seed=0, run_dir=tmp_path / "run",
                           cache_path=tmp_path / "c.sqlite")
    finally:
        _PLUGINS.pop(_GuidedProposal.name, None)
    assert res.best.id != res.seed.id
    res.export(tmp_path / "api.yaml", "assistant.prompt")
    export_run(tmp_path / "run", tmp_path / "cli.yaml", "assistant.prompt")
    api, cli = (tmp_path / "api.yaml").read_text(), (tmp_path / "cli.yaml").read_text()
    assert api == cli and 'decoding={"guidance":1.5}' in api  # the old Result.export left the decoding options out
    from promptlearn.export import read_provenance

    assert read_provenance(tmp_path / "api.yaml", "assistant.prompt")["decoding"] == {"guidance": 1.5}
