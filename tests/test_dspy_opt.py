"""The `dspy` optimizer: DSPy's teleprompters compile the system prompt on promptlearn's engine.

FakeLM scripts both models. The target says Ahoy only when its system prompt says "Always" (or shows a worked
example that does); the proposer answers in whatever format DSPy asked for (ChatAdapter's field headers, or
JSON for GEPA's reflection). One test runs COPRO with the embedded SmolLM2 as target and proposer.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

dspy = pytest.importorskip("dspy")

from promptlearn.engine import Evaluator  # noqa: E402
from promptlearn.errors import ModelError, TaskError  # noqa: E402
from promptlearn.loop import Options, RunContext  # noqa: E402
from promptlearn.optimizers import get_optimizer  # noqa: E402
from promptlearn.optimizers.dspy_opt import DSPyOptimizer, EngineLM, PromptAdapter, _Bridge  # noqa: E402
from promptlearn.run import optimize  # noqa: E402
from promptlearn.store import SQLiteRunStore  # noqa: E402
from promptlearn.task import load_task, task_from_dict  # noqa: E402
from promptlearn.testing import FakeLM  # noqa: E402

from conftest import requires_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = "Answer briefly. {rules}"
BETTER = "Always start every reply with Ahoy. {rules}"


def proposer_reply(messages, value: str = BETTER) -> str:
    """Fill every output field DSPy asked for, in its format (JSON when the system message asks for JSON)."""
    system = messages[0]["content"]
    block = re.search(r"Your output fields are:\n(.*?)\n(?:All interactions|Outputs will be)", system, re.S)
    names = re.findall(r"^\d+\. `(\w+)`", block.group(1) if block else "", re.M)
    if "JSON" in system:
        return json.dumps({n: value for n in names})
    return "\n\n".join(f"[[ ## {n} ## ]]\n{value}" for n in names) + "\n\n[[ ## completed ## ]]"


def is_proposer(messages) -> bool:
    return any("[[ ## " in m["content"] for m in messages)


def target_reply(messages) -> str:
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    user = messages[-1]["content"]
    if "Always" in system or "Assistant: Ahoy" in system or user.endswith(" 1"):
        return f"Ahoy! About {user}"
    return f"Hello, about {user}"


def responder(messages) -> str:
    return proposer_reply(messages) if is_proposer(messages) else target_reply(messages)


def make_task(n: int = 10, **extra):
    rows = [{"id": f"ex{i}", "user": f"question {i}", "vars": {"rules": f"Rule {i}."}} for i in range(n)]
    raw = {"name": "dspy-fake", "model": {"name": "fake/target", "retries": 0},
           "proposer": {"name": "fake/proposer", "temperature": 0.7}, "prompt": SEED, "protected": ["Ahoy"],
           "data": [{"examples": rows}], "splits": {"train": 0.5, "val": 0.3, "test": 0.2, "seed": 0},
           "checks": [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}], **extra}
    return task_from_dict(raw)


def target_requests(fake: FakeLM) -> list[list[dict[str, str]]]:
    return [h for h in fake.history if not is_proposer(h) and h[0]["role"] == "system"]


def candidates(result) -> list[dict]:
    return SQLiteRunStore(result.run_dir, create=False).candidates()


def dspy_event(result) -> dict:
    return SQLiteRunStore(result.run_dir, create=False).events("dspy")[-1]


@pytest.fixture
def fake():
    with FakeLM(responder) as f:
        yield f


# ---- options ----------------------------------------------------------------------------------------------------


def test_registered_under_dspy():
    assert get_optimizer("dspy") is DSPyOptimizer and DSPyOptimizer().teleprompter == "copro"


@pytest.mark.parametrize("options, field", [({"teleprompter": "bootstrap"}, "optimizer.teleprompter"),
                                            ({"breadth": 1}, "optimizer.breadth"),
                                            ({"compile_share": 0}, "optimizer.compile_share")])
def test_bad_options_are_task_errors(options, field):
    with pytest.raises(TaskError) as e:
        DSPyOptimizer(**options)
    assert e.value.field == field


# ---- the adapter: exactly the prompt the app sends ------------------------------------------------------------------

SIG = dspy.Signature({"user": (str, dspy.InputField()), "vars": (dict, dspy.InputField()),
                      "reply": (str, dspy.OutputField())}, "Be {tone}.")


def test_adapter_sends_plain_system_and_verbatim_user():
    demos = [{"user": "hi", "reply": "Ahoy hi"}, {"user": "no reply"}]
    msgs = PromptAdapter().format(SIG, demos, {"user": "  What is {tone}?\n", "vars": {"tone": "brief"}})
    assert msgs == [{"role": "system", "content": "Be brief.\n\nExample:\nUser: hi\nAssistant: Ahoy hi"},
                    {"role": "user", "content": "  What is {tone}?\n"}]
    no_system = dspy.Signature({"user": (str, dspy.InputField()), "reply": (str, dspy.OutputField())}, "")
    no_system = no_system.with_instructions("")
    assert PromptAdapter().format(no_system, [], {"user": "hi"}) == [{"role": "user", "content": "hi"}]
    raw = "[[ ## reply ## ]]\nnot a field header to us"
    assert PromptAdapter().parse(SIG, raw) == {"reply": raw}


@pytest.fixture
def bridge(tmp_path):
    task = make_task()
    ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
    ctx = RunContext(task, ev, SQLiteRunStore(tmp_path / "run"), seed=0, options=Options())
    yield _Bridge(ctx, None)
    ev.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_predict_goes_through_the_engine_lm(fake, bridge):
    fake.responder = lambda msgs: "Ahoy, **raw** reply" if not is_proposer(msgs) else proposer_reply(msgs)
    task = bridge.ctx.task
    target = EngineLM(bridge, task.model, "dspy-test", target=True)
    proposer = EngineLM(bridge, task.proposer, "proposer", target=False)
    with dspy.context(lm=target, adapter=PromptAdapter()):
        pred = dspy.Predict(SIG)(user="question", vars={"tone": "kind"}, config={"temperature": 1.3})
        assert pred.reply == "Ahoy, **raw** reply"
        assert fake.history[-1] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "question"}]
        assert fake.params[-1]["temperature"] == 0  # the target answers as the app's model would
        out = dspy.Predict("question -> answer", n=3)(question="q?", lm=proposer, config={"temperature": 1.1})
    assert out.completions.answer == [BETTER] * 3
    assert "[[ ## question ## ]]" in fake.history[-1][-1]["content"]  # non-target signatures: ChatAdapter
    assert [p["temperature"] for p in fake.params[-3:]] == [1.1] * 3  # the proposer honours DSPy's temperature
    assert [p["seed"] for p in fake.params[-3:]] == [0, 1, 2]  # n samples are samples 0..n-1
    ledger = bridge.ctx.evaluator.ledger
    assert ledger.total.calls == 4 and set(ledger.by_tag) == {"dspy-test", "proposer"}


# ---- full runs --------------------------------------------------------------------------------------------------


def test_copro_end_to_end_within_budget(fake, tmp_path):
    budget = 200
    res = optimize(make_task(), "dspy", budget=budget, run_dir=tmp_path / "run",
                   options={"breadth": 3, "depth": 2})
    assert res.stop_reason == "optimizer finished"
    assert res.ledger.calls <= budget and fake.calls <= budget
    assert res.best.prompt == BETTER and res.best.val == 1.0 and res.seed.val < 1.0
    ops = {c["prompt"]: c for c in candidates(res)}
    assert ops[BETTER]["operator"] == "dspy-copro" and ops[BETTER]["status"] == "accepted"
    assert ops[BETTER]["meta"]["dspy_score"] == 1.0 and ops[BETTER]["parents"] == [res.seed.id]
    sent = target_requests(fake)
    assert all("{rules}" not in m[0]["content"] for m in sent)  # every example got its own vars rendered
    assert len({json.dumps(m) for m in sent}) == len(sent)  # DSPy and the engine share one cache: no repeats
    event = dspy_event(res)
    assert event["verdicts"] == {"accepted": 1} and event["compile_error"] is None


def test_budget_stop_ends_the_run_cleanly(fake, tmp_path):
    budget = 12  # test reserve 4, seed on val 3, then DSPy's calls hit the hard limit mid-compile
    res = optimize(make_task(), "dspy", budget=budget, run_dir=tmp_path / "run",
                   options={"compile_share": 1.0})
    assert "budget stop: max_calls" in res.stop_reason
    assert res.ledger.calls <= budget and fake.calls == res.ledger.calls
    assert [c["operator"] for c in candidates(res)] == ["seed"]
    assert "max_calls" in dspy_event(res)["compile_error"]


def test_compile_share_leaves_budget_to_score_what_dspy_found(fake, tmp_path):
    versions = itertools.count(1)  # every proposal is new, so each costs DSPy a full train evaluation
    fake.responder = lambda m: proposer_reply(m, f"{BETTER} (v{next(versions)})") if is_proposer(m) else target_reply(m)
    res = optimize(make_task(), "dspy", budget=40, run_dir=tmp_path / "run",
                   options={"breadth": 3, "depth": 3, "compile_share": 0.3})
    event = dspy_event(res)
    assert "share of the budget" in event["compile_error"]
    assert event["proposed"] >= 1 and event["verdicts"].get("accepted") == 1
    assert res.best.prompt.startswith(BETTER)  # scored by DSPy before its share ran out, then proposed
    assert res.stop_reason == "optimizer finished" and res.ledger.requests <= 40


def test_unparsable_proposer_is_survived(fake, tmp_path):
    fake.responder = lambda msgs: "I like ships." if is_proposer(msgs) else target_reply(msgs)
    res = optimize(make_task(), "dspy", budget=100, run_dir=tmp_path / "run")
    assert res.stop_reason == "optimizer finished" and res.best.id == res.seed.id
    assert "proposer reply not parsable" in dspy_event(res)["compile_error"]


def test_failing_target_fails_the_run_instead_of_scoring_zero(fake, tmp_path):
    def flaky(msgs):
        if not is_proposer(msgs) and "Always" in msgs[0]["content"]:
            raise RuntimeError("provider down")
        return responder(msgs)

    fake.responder = flaky
    with pytest.raises(ModelError, match="provider down"):
        optimize(make_task(), "dspy", budget=100, run_dir=tmp_path / "run")


def test_mipro_with_bootstrapped_demos(fake, tmp_path):
    opts = {"teleprompter": "mipro", "num_candidates": 2, "num_trials": 4, "max_bootstrapped_demos": 1}
    fake.responder = lambda m: proposer_reply(m, SEED + " Say Ahoy.") if is_proposer(m) else target_reply(m)
    res = optimize(make_task(), "dspy", budget=300, run_dir=tmp_path / "run", options=opts)
    assert res.ledger.calls <= 300
    pick = next(c for c in candidates(res) if c["meta"].get("dspy_pick"))
    assert pick["operator"] == "dspy-mipro" and pick["meta"]["dspy_score"] == 1.0
    # the demo is plain text in the system prompt, as DSPy scored it
    assert pick["prompt"] == SEED + " Say Ahoy.\n\nExample:\nUser: question 1\nAssistant: Ahoy! About question 1"
    assert res.best.id == pick["id"] and res.best.val == 1.0


def test_mipro_reads_a_prose_proposer_reply_as_its_one_field(fake, tmp_path):
    # a small proposer ignores ChatAdapter's "[[ ## field ## ]]" format: MIPROv2's questions each ask for one text
    # field, so its prose is that field (before, the compile ended at the first proposer call, no instruction made)
    fake.responder = lambda m: BETTER if is_proposer(m) else target_reply(m)
    opts = {"teleprompter": "mipro", "num_candidates": 2, "num_trials": 4, "max_bootstrapped_demos": 0}
    res = optimize(make_task(), "dspy", budget=300, run_dir=tmp_path / "run", options=opts)
    event = dspy_event(res)
    assert event.get("compile_error") is None and event["scored_prompts"] >= 2
    assert res.best.prompt == BETTER and res.best.val == 1.0 and res.seed.val == 0.0


def test_plain_field_only_for_one_text_field():
    from dspy.utils.exceptions import AdapterParseError

    one = dspy.Signature("question -> answer")
    two = dspy.Signature("question -> answer, reason")
    err = AdapterParseError("ChatAdapter", one, "[[ ## answer ## ]]\nIt is blue.")
    assert PromptAdapter.plain_field(one, {}, err) == {"answer": "It is blue."}
    for sig, kwargs, reply in ((two, {}, "It is blue."), (one, {"n": 2}, "It is blue."), (one, {}, "  ")):
        with pytest.raises(AdapterParseError):
            PromptAdapter.plain_field(sig, kwargs, AdapterParseError("ChatAdapter", sig, reply))


def test_gepa_reflects_on_promptlearn_check_feedback(fake, tmp_path):
    res = optimize(make_task(), "dspy", budget=300, run_dir=tmp_path / "run",
                   options={"teleprompter": "gepa", "max_metric_calls": 30})
    assert res.best.prompt == BETTER and res.ledger.calls <= 300
    reflections = [h for h in fake.history if is_proposer(h) and "new_instruction" in h[0]["content"]]
    assert any("expected to start with 'Ahoy'" in h[-1]["content"] for h in reflections)
    assert {c["operator"] for c in candidates(res)} == {"seed", "dspy-gepa"}


def test_gepa_reads_a_prose_reflection(fake, tmp_path):
    fake.responder = lambda m: BETTER if is_proposer(m) else target_reply(m)  # no field headers, no JSON
    res = optimize(make_task(), "dspy", budget=300, run_dir=tmp_path / "run",
                   options={"teleprompter": "gepa", "max_metric_calls": 30})
    assert dspy_event(res).get("compile_error") is None
    assert res.best.prompt == BETTER and res.best.val == 1.0 and res.seed.val == 0.0


def test_only_single_turn_examples_reach_dspy(fake, tmp_path):
    rows = [{"id": f"one{i}", "user": f"question {i}", "vars": {"rules": "R."}} for i in range(6)]
    rows += [{"id": f"two{i}", "messages": [{"role": "user", "content": f"first {i}"},
                                            {"role": "assistant", "content": "Ahoy", "generate": True},
                                            {"role": "user", "content": f"second {i}"}]} for i in range(4)]
    task = make_task(data=[{"examples": rows}])
    opt = DSPyOptimizer()
    opt.with_vars = True
    ids = [e.pl_id for e in opt._dspy_examples(task.examples("all"))]
    assert sorted(ids) == [f"one{i}" for i in range(6)]
    res = optimize(task, "dspy", budget=200, run_dir=tmp_path / "run")
    assert res.stop_reason == "optimizer finished"


def test_interrupted_run_resumes_without_repeating_calls(tmp_path):
    task = make_task()
    opts = {"breadth": 3, "depth": 2}
    with FakeLM(responder) as fake:
        first = optimize(task, "dspy", budget=200, run_dir=tmp_path / "a", cache_path=tmp_path / "c1.sqlite",
                         options=opts)
        calls_first = fake.calls

    def interrupting(msgs):
        if fake.calls == calls_first // 2:
            raise KeyboardInterrupt
        return responder(msgs)

    with FakeLM(interrupting) as fake:
        with pytest.raises(KeyboardInterrupt):
            optimize(task, "dspy", budget=200, run_dir=tmp_path / "r", cache_path=tmp_path / "c2.sqlite",
                     options=opts)
        fake.responder = responder
        resumed = optimize(task, resume=tmp_path / "r", cache_path=tmp_path / "c2.sqlite")
        assert fake.calls - 1 == calls_first  # the interrupted call never returned
    assert resumed.best.prompt == first.best.prompt and resumed.ledger.calls == first.ledger.calls


# ---- the embedded model ---------------------------------------------------------------------------------------


def real_pirate():
    """tasks/pirate.yaml cut small, with SmolLM2 as target and proposer."""
    return load_task(REPO / "tasks" / "pirate.yaml", overrides={
        "model": {"max_tokens": 16}, "proposer": {"name": "local/smollm2", "max_tokens": 64, "temperature": 0.7},
        "data": [{"file": "data/pirate.jsonl", "limit": 8}]})


@pytest.mark.model
@pytest.mark.slow
@requires_model
def test_real_model_copro_finishes_within_budget(tmp_path):
    task, budget = real_pirate(), 80
    res = optimize(task, "dspy", budget=budget, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                   options={"teleprompter": "copro", "breadth": 2, "depth": 1})
    assert res.ledger.calls <= budget
    assert res.stop_reason == "optimizer finished" or "budget" in res.stop_reason
    assert 0.0 <= res.seed.val <= 1.0 and res.seed.test is not None
    # Fresh cache: SmolLM2's first proposal is not in ChatAdapter's field format, so COPRO compiles nothing and
    # the run ends with the seed alone (a pinned outcome: if DSPy starts to parse it, pin the new lineage here).
    event = dspy_event(res)
    assert event["compile_error"].startswith("proposer reply not parsable") and event["proposed"] == 0
    assert [(n["operator"], n["status"]) for n in res.lineage["nodes"]] == [("seed", "seed")]
    assert res.best.id == res.seed.id and res.stop_reason == "optimizer finished"


@pytest.mark.model
@pytest.mark.slow
@requires_model
def test_real_model_mipro_proposes_instructions_from_prose_replies(tmp_path):
    # SmolLM2 answers MIPROv2's dataset, program and instruction questions in prose, not in ChatAdapter's fields;
    # read as the one field each question asks for, they give MIPROv2 instructions to try (before: it stopped at
    # the first proposer reply with the seed alone, as COPRO above still does)
    task, budget = real_pirate(), 80
    res = optimize(task, "dspy", budget=budget, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                   options={"teleprompter": "mipro", "num_candidates": 2, "num_trials": 2,
                            "max_bootstrapped_demos": 0})
    assert res.ledger.calls <= budget
    event = dspy_event(res)
    assert event["compile_error"] is None or event["compile_error"].startswith("CompileBudget"), event
    assert event["scored_prompts"] >= 2  # the seed's instruction and at least one SmolLM2 wrote
    assert all("Ahoy" in c["prompt"] or c["status"] == "rejected" for c in candidates(res))
