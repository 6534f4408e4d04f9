"""LLM-judge checklists: prompt shape, parsing, retries, judge failures, majority vote, SysBench task end to end."""

import json

import pytest

from promptlearn.checks import CheckContext, build_check
from promptlearn.checks.judge import parse_verdicts
from promptlearn.engine import Evaluator
from promptlearn.metrics import adherence
from promptlearn.task import load_task, task_from_dict
from promptlearn.testing import FakeLM

from conftest import requires_model

CRITERIA = [{"id": "1", "content": "Declines politely", "type": "Action"},
            {"id": "2", "content": "Under 50 words", "type": "Format"}]


def test_parse_verdicts_accepts_yes_no_bool_and_rejects_partial():
    ids = ["1", "2"]
    assert parse_verdicts('{"reason": "r", "verdicts": {"1": "yes", "2": "no"}}', ids) == {"1": True, "2": False}
    assert parse_verdicts('noise {"verdicts": {"1": true, "2": "No"}} tail', ids) == {"1": True, "2": False}
    assert parse_verdicts('{"verdicts": {"1": "yes"}}', ids) is None          # a criterion is missing
    assert parse_verdicts('{"verdicts": {"1": "maybe", "2": "no"}}', ids) is None
    assert parse_verdicts("no json here", ids) is None
    assert parse_verdicts("{broken json", ids) is None


def _judge_task(judge_replies_dir=None):
    return task_from_dict({
        "name": "j", "model": "fake/target", "judge": "fake/judge", "prompt": "Be a Lisbon guide.",
        "data": [{"examples": [{"id": "c1", "messages": [
            {"role": "user", "content": "Madrid?", "checks": [{"type": "checklist", "criteria": CRITERIA}]},
            {"role": "user", "content": "Lisbon food?", "checks": [{"type": "checklist", "criteria": CRITERIA}]}]}]}],
        "splits": {"train": 0, "val": 1, "test": 0}})


def test_judge_prompt_shows_system_history_turn_and_numbered_criteria():
    check = build_check({"type": "checklist", "criteria": CRITERIA})
    from promptlearn.types import Message

    ctx = CheckContext("SYS PROMPT", (Message("system", "SYS PROMPT"), Message("user", "earlier q"),
                                      Message("assistant", "earlier a")), "current q", 2)
    text = check.prompt("THE REPLY", ctx)
    for part in ("SYS PROMPT", "user: earlier q", "assistant: earlier a", "current q", "THE REPLY",
                 "1. [Action] Declines politely", "2. [Format] Under 50 words", '"verdicts"'):
        assert part in text


def test_malformed_judge_output_is_retried_then_reported_as_judge_error(tmp_path):
    task = _judge_task()

    def responder(messages):
        if "strict verifier" in messages[0]["content"]:
            return "I think it is fine."  # never JSON
        return "Sorry, I only help with Lisbon."

    with FakeLM(responder) as fake:
        ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
        result = ev.evaluate(task.prompt, task.examples("val"))
        ev.close()
    turn = result.results["c1"].turns[0]
    r = turn.checks["checklist"]
    assert r.judge_error and r.score == 0.0
    judge_calls = [h for h in fake.history if "strict verifier" in h[0]["content"]]
    assert len(judge_calls) == 2 * 3  # 2 turns x (1 try + 2 retries)
    assert result.judge_errors() == 2
    assert result.check_rates() == {}  # judge failures are neither passes nor fails
    assert not turn.scored and result.results["c1"].score == 0.0  # nothing scored: no free pass


def test_judge_verdicts_score_and_sysbench_aggregates(tmp_path):
    task = _judge_task()

    def responder(messages):
        if "strict verifier" in messages[0]["content"]:
            ok = "Madrid" in messages[0]["content"].split("[Current user turn]")[1][:30]
            return json.dumps({"reason": "x", "verdicts": {"1": "yes" if ok else "no", "2": "yes"}})
        return "Sorry, I only help with Lisbon."

    with FakeLM(responder):
        ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
        result = ev.evaluate(task.prompt, task.examples("val"))
        ev.close()
    turns = result.results["c1"].turns
    assert [t.checks["checklist"].score for t in turns] == [1.0, 0.5]
    assert "Declines politely" in turns[1].checks["checklist"].feedback
    agg = adherence(result, task.examples("val"))["sysbench"]
    assert agg["csr"] == pytest.approx(3 / 4)
    assert agg["isr"] == pytest.approx(1 / 2)
    assert agg["ssr"] == pytest.approx(1 / 2)  # turn 1 satisfied, turn 2 not: 1 of 2 turns
    assert agg["csr_by_type"] == {"Action": 0.5, "Format": 1.0}


def test_majority_vote_over_samples(tmp_path):
    task = task_from_dict({
        "name": "j", "model": "fake/target", "judge": {"name": "fake/judge", "temperature": 0.7},
        "prompt": "p", "splits": {"train": 0, "val": 1, "test": 0},
        "data": [{"examples": [{"id": "a", "user": "q"}]}],
        "checks": [{"type": "checklist", "criteria": ["is polite"], "samples": 3}]})
    votes = iter(["yes", "no", "yes"])

    def responder(messages):
        if "strict verifier" in messages[0]["content"]:
            return json.dumps({"reason": "", "verdicts": {"1": next(votes)}})
        return "hello"

    with FakeLM(responder) as fake:
        ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
        r = ev.evaluate(task.prompt, task.examples("val")).results["a"].turns[0].checks["checklist"]
        ev.close()
    assert r.score == 1.0 and r.details["samples"] == 3
    assert sum("strict verifier" in h[0]["content"] for h in fake.history) == 3


def test_shipped_sysbench_task_runs_with_a_fake_judge(tmp_path):
    """The multi-turn judge task: every turn generated with its own history, judged, CSR/ISR/SSR reported."""
    task = load_task("tasks/sysbench_persona.yaml", overrides={"model": "fake/target", "judge": "fake/judge"})

    def responder(messages):
        if "strict verifier" in messages[0]["content"]:
            n = messages[0]["content"].count("\n", messages[0]["content"].index("[Criteria]"))
            ids = [line.split(".")[0] for line in messages[0]["content"].split("[Criteria]\n")[1].split("\n\n")[0]
                   .splitlines()]
            return json.dumps({"reason": "", "verdicts": {i: "yes" for i in ids}}) if n else "{}"
        return f"reply to: {messages[-1]['content'][:20]}"

    with FakeLM(responder) as fake:
        ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
        result = ev.evaluate(task.prompt, task.examples("val"))
        ev.close()
    assert len(result.results) == 2
    assert all(len(r.turns) == 5 for r in result.results.values())
    # the 5th target call of a dialogue carries 4 earlier generated replies as history
    target_calls = [h for h in fake.history if h[0]["role"] == "system"]
    assert max(sum(m["role"] == "assistant" for m in h) for h in target_calls) == 4
    agg = adherence(result, task.examples("val"))["sysbench"]
    assert agg["csr"] == 1.0 and agg["isr"] == 1.0 and agg["ssr"] == 1.0
    assert set(agg["ssr_by_dependency"]) <= {"dependent", "parallel"}


@pytest.mark.model
@requires_model
def test_local_judge_waits_for_the_target_replies(tmp_path):
    """A judge on the in-process model scores only after every conversation has its replies (the judge's prompt
    would otherwise evict the target's system prompt from the KV cache between conversations), one conversation
    at a time; scores are those of an evaluation whose judge is called right after each reply."""
    from promptlearn.local import get_model

    criteria = [{"content": "Mentions Lisbon", "type": "Content"}, {"content": "Is polite", "type": "Style"}]
    convs = [["Where should I eat?", "And after dinner?"], ["What is the best museum?", "Is it open on Monday?"]]
    task = task_from_dict({
        "name": "j", "model": {"name": "local/smollm2", "max_tokens": 12},
        "judge": {"name": "local/smollm2", "max_tokens": 48}, "prompt": "You are a Lisbon city guide.",
        "data": [{"examples": [{"id": f"c{i}", "messages": [
            {"role": "user", "content": u, "checks": [{"type": "checklist", "criteria": criteria}]} for u in c]}
            for i, c in enumerate(convs)]}],
        "splits": {"train": 0.0, "val": 1.0, "test": 0.0}})
    model = get_model("smollm2")
    calls = []
    real = model.chat

    def spy(messages, **kw):
        calls.append("judge" if "strict verifier" in messages[0]["content"] else messages[1]["content"])
        return real(messages, **kw)

    results = {}
    for deferred in (True, False):
        model.chat = spy
        calls.clear()
        ev = Evaluator(task, cache_path=tmp_path / f"c{deferred}.sqlite")
        ev.defer_local_judge = deferred  # off: each reply is judged right after it, as for a remote judge
        try:
            res = ev.evaluate(task.prompt, task.examples("val"))
        finally:
            ev.close()
            model.chat = real
        results[deferred] = {k: [(t.reply, {n: c.score for n, c in t.checks.items()}) for t in r.turns]
                             for k, r in res.results.items()}
        if deferred:
            targets = [i for i, c in enumerate(calls) if c != "judge"]
            assert len(targets) == 4 and targets == list(range(4))  # all four replies first
            assert calls.count("judge") >= 4  # one per turn (retries on unparsable verdicts come right after)
    assert results[True] == results[False]
