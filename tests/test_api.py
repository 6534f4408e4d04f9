"""The Python API: `promptlearn.optimize / evaluate / check_prompt / make_task` on a scripted fake model.

Tasks are built in code (conversations as strings, lists of strings, Messages or row dicts; checks as spec dicts
or plain callables), optimized, exported into a config and gated, all in process and in seconds.
"""

from __future__ import annotations

import pytest

import promptlearn
from promptlearn import (
    CheckReport,
    ConfigError,
    Evaluation,
    Message,
    ModelConfig,
    PromptlearnError,
    PromptScores,
    Result,
    Task,
    TaskError,
    check_prompt,
    evaluate,
    make_task,
    optimize,
    read_prompt,
)
from promptlearn.checks.assertions import register_callable
from promptlearn.store import iter_parents
from promptlearn.testing import FakeLM, wording_sensitive_responder

SEED = "You are a pirate. Start every reply with the word Ahoy."
USERS = [f"Question number {i}: tell me about topic {i * 7 % 11}" for i in range(15)]


def starts_with_ahoy(reply: str, ctx) -> bool:
    return reply.startswith("Ahoy")


def pirate_task(**spec) -> Task:
    spec.setdefault("budget", {"max_calls": 120})
    return make_task("api", SEED, USERS, [starts_with_ahoy], model={"name": "fake/target", "max_tokens": 16},
                     protected=["Ahoy"], splits={"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0}, **spec)


def by_marker(messages) -> str:
    """Replies 'Ahoy' unless the system prompt contains BAD; a user turn with 'long' gets a long reply."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = messages[-1]["content"]
    head = "Sure" if "BAD" in system else "Ahoy"
    return f"{head}, about {user}" + (" with many more words here" if "long" in user else "")


# ---- the public surface -------------------------------------------------------------------------------------


def test_public_api_names_resolve():
    for name in ("optimize", "evaluate", "check_prompt", "CheckReport", "Result", "PromptScores", "make_task",
                 "export_prompt", "read_prompt", "export_run", "ConfigError"):
        assert name in promptlearn.__all__
        assert getattr(promptlearn, name) is not None
    assert promptlearn.optimize.__module__ == "promptlearn.run"
    assert promptlearn.check_prompt.__module__ == "promptlearn.gate"
    with pytest.raises(AttributeError):
        promptlearn.not_a_thing  # noqa: B018


def test_result_and_evaluation_fields_are_documented():
    import inspect

    for cls in (Result, PromptScores, Evaluation, CheckReport):
        assert inspect.getdoc(cls), cls
    src = inspect.getsource(Result)
    for field in ("run_id", "run_dir", "seed", "best", "front", "lineage", "ledger", "stop_reason", "candidates"):
        assert f"    {field}: " in src and "#:" in src.split(f"    {field}: ", 1)[1].splitlines()[0], field


# ---- make_task ---------------------------------------------------------------------------------------------


def test_make_task_accepts_every_conversation_shape():
    convs = [
        "one turn",
        ["first turn", "second turn"],
        [Message("user", "hi"), Message("assistant", "given reply"), Message("user", "and then?")],
        [{"role": "user", "content": "dict message"}],
        {"id": "row", "user": "a row dict", "checks": [{"type": "contains", "value": "x"}]},
        Message("user", "a lone message"),
    ]
    task = make_task("shapes", "Be brief.", convs, [{"type": "min_words", "value": 1}], model="fake/x",
                     splits={"train": 0.0, "val": 1.0, "test": 0.0})
    exs = {e.id: e for e in task.examples("val")}
    assert len(exs) == 6 and "row" in exs
    turns = {len(e.turns) for e in exs.values()}
    assert turns == {1, 2}
    multi = next(e for e in exs.values() if e.turns[0].user == "hi")
    assert multi.turns[0].given == "given reply" and multi.turns[1].given is None
    assert exs["row"].checks == ({"type": "contains", "value": "x"},)
    assert task.model.name == "fake/x"


def test_make_task_models_as_string_config_or_mapping():
    a = make_task("m", "p", ["hi"], model="fake/x")
    b = make_task("m", "p", ["hi"], model=ModelConfig(name="fake/x", max_tokens=9), proposer=ModelConfig(name="fake/p"))
    c = Task.build("m", "p", ["hi"], model={"name": "fake/x", "max_tokens": 9})
    assert a.model.name == "fake/x" and a.model.max_tokens == 128
    assert b.model.max_tokens == 9 and b.proposer.name == "fake/p"
    assert c.model == b.model
    assert make_task("m", "p", ["hi"]).model.name == "local/smollm2"


def test_callable_checks_all_return_kinds(fake_lm):
    def is_ahoy(reply):  # one-argument form
        return reply.startswith("Ahoy")

    def length_score(reply, ctx):
        return min(1.0, len(reply.split()) / 10)

    def with_feedback(reply, ctx):
        return (1.0, "") if "pirate" in ctx.system_prompt else (0.0, f"system prompt was {ctx.system_prompt!r}")

    def explodes(reply, ctx):
        raise RuntimeError("boom")

    fake_lm.responder = lambda messages: "Ahoy there matey"
    task = make_task("c", "You are a pirate.", ["hi", ["a", "b"]], [is_ahoy, length_score, with_feedback, explodes],
                     model="fake/x", splits={"train": 0.0, "val": 1.0, "test": 0.0})
    ev = evaluate(task, split="val")
    assert isinstance(ev, Evaluation) and ev.complete
    assert ev.check_rates() == {"explodes": 0.0, "is_ahoy": 1.0, "length_score": pytest.approx(0.3),
                                "with_feedback": 1.0}
    res = next(iter(ev.results.values()))
    assert "raised RuntimeError: boom" in res.turns[0].checks["explodes"].feedback
    ev2 = evaluate(task, "Be a robot.", split="val")
    fb = next(iter(ev2.results.values())).turns[0].checks["with_feedback"].feedback
    assert fb == "system prompt was 'Be a robot.'"


def test_callable_refs_are_stable_and_distinct():
    def make(word):
        return lambda reply, ctx: word in reply

    assert register_callable(starts_with_ahoy) == register_callable(starts_with_ahoy)
    a, b = make("x"), make("y")
    ra, rb = register_callable(a)["ref"], register_callable(b)["ref"]
    assert ra != rb and register_callable(a)["ref"] == ra
    assert register_callable(a)["name"] == "check"
    assert register_callable(starts_with_ahoy, "named")["name"] == "named"


def test_check_objects_are_accepted(fake_lm):
    from promptlearn.checks import build_check

    fake_lm.responder = lambda messages: "Ahoy"
    task = make_task("o", "p", ["hi"], [build_check({"type": "starts_with", "value": "Ahoy", "name": "ahoy"})],
                     model="fake/x", splits={"train": 0.0, "val": 1.0, "test": 0.0})
    assert evaluate(task).check_rates() == {"ahoy": 1.0}


def test_unregistered_callable_ref_is_a_task_error():
    with pytest.raises(TaskError, match="no callable 'nowhere:fn' is registered"):
        promptlearn.task_from_dict({"name": "t", "model": "fake/x", "prompt": "p", "data": [{"examples": [
            {"user": "hi"}]}], "checks": [{"type": "python_callable", "ref": "nowhere:fn"}]})


@pytest.mark.parametrize("kwargs, match", [
    ({"conversations": [42]}, r"conversations\[0\].*a conversation must be"),
    ({"conversations": [[]]}, r"conversations\[0\]"),
    ({"conversations": [["hi", 3]]}, r"conversations\[0\]\[1\].*a message must be"),
    ({"conversations": []}, "conversations: no conversations"),
    ({"checks": [42]}, r"checks\[0\].*spec mapping or a callable"),
    ({"checks": [{"type": "starts_wth", "value": "A"}]}, "did you mean 'starts_with'"),
    ({"spec": {"budgte": {"max_calls": 3}}}, "did you mean 'budget'"),
    ({"conversations": [{"id": "r", "messages": [{"role": "assistant", "content": "x"}]}]}, "assistant message"),
])
def test_make_task_errors_are_typed(kwargs, match):
    args = {"conversations": ["hi"], "checks": [], "model": "fake/x", "spec": {}}
    args.update(kwargs)
    spec = args.pop("spec")
    with pytest.raises(TaskError, match=match) as e:
        make_task("t", "p", args["conversations"], args["checks"], args["model"], **spec)
    assert isinstance(e.value, PromptlearnError) and "\n" not in str(e.value)


# ---- optimize / export / check_prompt ------------------------------------------------------------------------


@pytest.fixture
def optimized(tmp_path):
    task = pirate_task()
    with FakeLM(wording_sensitive_responder) as fake:
        result = optimize(task, "evolve", budget=120, seed=2, run_dir=tmp_path / "run",
                          cache_path=tmp_path / "cache.sqlite", parallel=1)  # the serial search (its lineage below)
    return task, result, fake, tmp_path


def test_optimize_returns_a_result(optimized):
    task, result, fake, tmp_path = optimized
    assert isinstance(result, Result) and isinstance(result.best, PromptScores)
    assert result.run_dir == tmp_path / "run" and (result.run_dir / "store.sqlite").exists()
    assert result.seed.prompt == SEED and "Ahoy" in result.best.prompt
    assert result.seed.val == 0.0 and result.best.val == 1.0 and result.best.test is not None
    # Seed 2, fresh cache: after the two opening moves a 120-call budget affords (state_check, quote_format),
    # a paraphrase and then add_example were accepted, each beating the best before it. (The seed passes no val
    # example, so fixed_example is among the draws until the first acceptance; before it joined them, as_list
    # then add_example won here.)
    path = [(n["operator"], n["status"]) for n in iter_parents(result.lineage["nodes"], result.best.id)]
    assert path == [("seed", "seed"), ("paraphrase", "accepted"), ("add_example", "accepted")]
    assert result.ledger.calls <= 120 and fake.calls == result.ledger.calls
    assert set(result.best.val_checks) == {"starts_with_ahoy"}
    assert result.overfit_gap == pytest.approx(result.best.val - result.best.test)
    assert result.lineage["best"] == result.best.id


def test_optimize_missing_task_file_is_a_task_error(tmp_path):
    with pytest.raises(TaskError, match="file not found"):
        optimize(tmp_path / "missing.yaml")


def test_result_export_and_check_prompt_reproduce(optimized):
    task, result, _, tmp_path = optimized
    cfg = tmp_path / "app.yaml"
    cfg.write_text("# app settings\nassistant:\n  # written by promptlearn\n  system_prompt: old\n  temperature: 0\n")
    result.export(cfg, "assistant.system_prompt")
    text = cfg.read_text()
    assert "# app settings" in text and "# written by promptlearn" in text and "temperature: 0" in text
    assert read_prompt(cfg, "assistant.system_prompt") == result.best.prompt
    assert f"  # promptlearn: run_id={result.run_id} " in text and "_provenance" not in text
    prov = promptlearn.read_provenance(cfg, "assistant.system_prompt")
    assert prov["run_id"] == result.run_id and prov["sha256"] == promptlearn.prompt_sha256(result.best.prompt)
    with FakeLM(wording_sensitive_responder) as fake:
        report = check_prompt(task, read_prompt(cfg, "assistant.system_prompt"), "test",
                              cache_path=tmp_path / "cache.sqlite")
    assert fake.calls == 0, "everything the check needs was cached by the run"
    assert report.score == result.best.test and report.seed_score == result.seed.test
    assert report.checks == result.best.test_checks
    assert report.broken == result.best.test_side_effects["broken"]
    assert report.fixed == result.best.test_side_effects["fixed"]
    assert report.passed and report.usage.cached_calls > 0


def test_result_export_errors_are_config_errors(optimized):
    _, result, _, tmp_path = optimized
    with pytest.raises(ConfigError, match="unknown config format 'xml'"):
        result.export(tmp_path / "a.yaml", "k", fmt="xml")
    (tmp_path / "b.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="holds a number"):
        result.export(tmp_path / "b.yaml", "a.b")


def test_check_prompt_gates_on_score_and_broken(fake_lm):
    fake_lm.responder = by_marker
    task = make_task("g", "Start with Ahoy.", [f"q{i}" for i in range(4)] + ["a long one"],
                     [starts_with_ahoy, {"type": "max_words", "value": 4, "name": "short"}], model="fake/x",
                     splits={"train": 0.0, "val": 0.0, "test": 1.0})
    seed = check_prompt(task, None, "test")
    assert seed.prompt == task.prompt and seed.broken == 0 and seed.passed
    assert seed.score == pytest.approx(0.9) and seed.checks == {"short": 0.8, "starts_with_ahoy": 1.0}
    assert [f["id"] for f in seed.failures] == ["inline-5"] and "short" in seed.failures[0]["feedback"]

    bad = check_prompt(task, "BAD. Start with Ahoy.", "test", min_score=0.8, max_broken=1)
    assert not bad.passed and bad.broken == 4 and bad.fixed == 0
    assert len(bad.reasons) == 2
    assert bad.reasons[0].startswith("score 0.4000 is below the minimum 0.8")
    assert bad.reasons[1].startswith("breaks 4 test example(s) the seed prompt passed (allowed 1)")
    assert all(f["broken"] for f in bad.failures if f["id"] != "inline-5")
    assert check_prompt(task, "BAD. Start with Ahoy.", "test", min_score=0.4, max_broken=4).passed
    assert bad.to_json()["passed"] is False and bad.to_json()["broken_ids"] == list(bad.broken_ids)


def test_check_prompt_incomplete_evaluation_fails_the_gate(fake_lm):
    fake_lm.responder = by_marker
    task = make_task("b", "Start with Ahoy.", [f"q{i}" for i in range(5)], [starts_with_ahoy], model="fake/x",
                     splits={"train": 0.0, "val": 0.0, "test": 1.0}, budget={"max_calls": 3})
    report = check_prompt(task, "Ahoy! " + task.prompt, "test", min_score=0.0)
    assert not report.passed and not report.complete
    assert report.reasons[0].startswith("evaluation incomplete (budget stop")


def test_check_prompt_bad_arguments(fake_lm):
    task = make_task("b", "p", ["q"], [], model="fake/x")
    with pytest.raises(TaskError, match="unknown split 'tset'"):
        check_prompt(task, "x", "tset")
    with pytest.raises(ConfigError, match="max_broken must be >= 0"):
        check_prompt(task, "x", "val", max_broken=-1)
    with pytest.raises(ConfigError, match="must be a string"):
        check_prompt(task, 3, "val")  # type: ignore[arg-type]


# ---- discoverability ----------------------------------------------------------------------------------------


def test_dir_shows_the_public_names():
    names = dir(promptlearn)
    assert {"optimize", "evaluate", "make_task", "check_prompt", "export_prompt", "Result"} <= set(names)
    assert "importlib" not in names and "os" not in names and "annotations" not in names


def test_optimize_documents_every_argument():
    import inspect

    doc = inspect.getdoc(promptlearn.optimize)
    for name in inspect.signature(promptlearn.optimize).parameters:
        assert f"{name}:" in doc, name


def test_export_prompt_errors_name_python_arguments(tmp_path):
    with pytest.raises(ValueError) as e:
        promptlearn.export_prompt(tmp_path / "settings.conf", "system_prompt", "Be brief.")
    assert "fmt=" in str(e.value)
    promptlearn.export_prompt(tmp_path / "settings.conf", "system_prompt", "Be brief.", fmt="yaml")
