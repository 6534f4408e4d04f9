"""The `optuna` optimizer: TPE over rule wordings, key-rule position, list format and worked examples.

Full runs go through `optimize()` against a FakeLM whose replies depend on the system prompt's wording, so a
better prompt exists and the search has to find it; one test runs the embedded SmolLM2 model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from promptlearn.loop import StopRun, Verdict
from promptlearn.optimizers import get_optimizer
from promptlearn.optimizers.optuna_opt import OptunaSearch
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import load_task, task_from_dict
from promptlearn.testing import FakeLM
from promptlearn.types import Candidate

from conftest import requires_model

REPO = Path(__file__).resolve().parents[1]
SEED = "You are {bot}, a friendly pirate assistant. Start every reply with the word Ahoy. Keep your answers short."
PROTECTED = ("Ahoy", "{bot}")


def pirate_responder(messages):
    """Says Ahoy only when the system prompt shouts the rule or shows a worked example; proposer calls paraphrase."""
    content = messages[-1]["content"]
    if content.startswith("Rewrite this instruction"):
        return "<prompt>IMPORTANT!! Begin each reply with Ahoy.</prompt>"
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    if "IMPORTANT" in system or "Assistant: Ahoy" in system:
        return "Ahoy matey, here be yer answer to " + content
    return "Sure, here is the answer to " + content


def make_task(n: int = 12, prompt: str = SEED, **extra):
    rows = [{"id": f"q{i:02d}", "user": f"Question number {i}?"} for i in range(n)]
    return task_from_dict({"name": "pirate-fake", "model": "fake/x", "prompt": prompt, "protected": ["Ahoy"],
                           "data": [{"examples": rows}],
                           "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
                           "checks": [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}], **extra})


@pytest.fixture
def fake():
    with FakeLM(pirate_responder) as f:
        yield f


def stored(result) -> list[dict]:
    return SQLiteRunStore(result.run_dir, create=False).candidates()


def test_registered_under_optuna():
    assert get_optimizer("optuna") is OptunaSearch


#: Seed 0, fresh cache. The opening book plays what a third of the budget affords (45 calls: one move, 120: two):
#: the check's hint in place of the rule first (screened out). The seed passes no val example, so the worked
#: examples are the seed's own replies repaired by the check ("Ahoy" put in front): at 120 calls the book's second
#: move shows one and is accepted, then the literal quoted on a line of its own is screened out; at 45 TPE's first
#: own trial, with two of them, is accepted.
HINTED = SEED.replace("Start every reply with the word Ahoy.", 'Start every reply with "Ahoy".')


@pytest.mark.parametrize("budget", [45, 120])
def test_finds_a_better_prompt_within_budget(fake, tmp_path, budget):
    res = optimize(make_task(), "optuna", budget=budget, seed=0, run_dir=tmp_path / "run")
    statuses = [n["status"] for n in res.lineage["nodes"]]
    cands = stored(res)
    assert cands[1]["prompt"] == HINTED
    assert statuses[:3] == ["seed", "screened_out", "accepted"] and res.seed.val == 0.0 and res.best.val == 1.0
    assert "\nAssistant: Ahoy Sure, here is the answer to Question number" in cands[2]["prompt"]
    if budget >= 120:
        assert cands[2]["prompt"] == SEED + ("\n\nExample:\nUser: Question number 5?\nAssistant: Ahoy Sure, here "
                                             "is the answer to Question number 5?")
        assert cands[3]["prompt"] == SEED + '\n\nAlways write "Ahoy" exactly like this.'
        assert cands[3]["meta"]["params"]["addendum"] == "quote_format"
    best = next(n for n in res.lineage["nodes"] if n["id"] == res.best.id)
    assert best["operator"] == "optuna" and best["status"] == "accepted" and best["parents"] == [res.seed.id]
    assert res.ledger.calls <= budget and fake.calls <= budget
    assert all(c["meta"]["params"] for c in cands if c["operator"] == "optuna")
    for c in cands:
        if c["status"] != "rejected":
            assert all(p in c["prompt"] for p in PROTECTED), c["prompt"]
    assert not any(c["status"] == "rejected" for c in cands)  # the search never drops a protected sentence
    assert res.best.test == 1.0 and res.best.id == cands[2]["id"]


def test_same_seed_and_cache_give_the_same_candidates(fake, tmp_path):
    runs = []
    for name in ("a", "b"):
        res = optimize(make_task(), "optuna", budget=400, seed=3, run_dir=tmp_path / name,
                       cache_path=tmp_path / "cache.sqlite", options={"n_trials": 25, "max_demos": 2})
        assert res.stop_reason == "optimizer finished"
        runs.append(res)
    calls_after_first = fake.calls
    a, b = ([c["id"] for c in stored(r)] for r in runs)
    assert len(a) > 5 and a == b
    assert [c["meta"] for c in stored(runs[0])] == [c["meta"] for c in stored(runs[1])]
    assert runs[1].ledger.calls == 0 and fake.calls == calls_after_first  # the second run was all cache hits


def test_other_seed_explores_differently(fake, tmp_path):
    ids = []
    for seed in (0, 1):
        res = optimize(make_task(), "optuna", budget=400, seed=seed, run_dir=tmp_path / f"s{seed}",
                       cache_path=tmp_path / "cache.sqlite", options={"n_trials": 15})
        ids.append([c["id"] for c in stored(res)])
    assert ids[0] != ids[1]


def test_stops_after_idle_trials(fake, tmp_path):
    # The first trial is the seed configuration: a duplicate, i.e. no new candidate.
    res = optimize(make_task(), "optuna", budget=100, seed=0, run_dir=tmp_path / "run", options={"max_idle": 1},
                   parallel=1)  # one trial at a time: the first (a duplicate) is already max_idle
    assert res.stop_reason == "optimizer finished" and res.candidates == 1


def test_llm_paraphrases_join_the_wordings(fake, tmp_path):
    res = optimize(make_task(), "optuna", budget=200, seed=0, run_dir=tmp_path / "run",
                   options={"paraphrases": 2, "n_trials": 40})
    by_tag = SQLiteRunStore(res.run_dir, create=False).get_meta("ledger_by_tag")
    assert by_tag["proposer"]["calls"] + by_tag["proposer"]["cached_calls"] >= 1
    assert any("IMPORTANT!! Begin each reply with Ahoy." in c["prompt"] for c in stored(res))


def test_paraphrases_that_fail_or_lose_a_protected_clause_are_skipped():
    replies = iter(["<prompt>Begin with a greeting.</prompt>", None, "<prompt>IMPORTANT!! Begin with Ahoy.</prompt>",
                    "Open every reply with Ahoy."])
    ctx = stub_ctx("Start every reply with Ahoy.")
    ctx.generate = lambda messages, sample=0: next(replies)
    opt = OptunaSearch(paraphrases=4, rewordings=0)
    opt.parse(ctx)
    assert opt.variants[0][-2:] == ["IMPORTANT!! Begin with Ahoy.", "Open every reply with Ahoy."]
    assert not any("greeting" in v for v in opt.variants[0])


# ---- the search space, without a run ---------------------------------------------------------------------


def stub_ctx(prompt: str, protected=("Ahoy",), local: bool = False, demos=(), checks=()):
    task = SimpleNamespace(spec=SimpleNamespace(protected=list(protected), checks=list(checks), targets=None),
                           model=SimpleNamespace(is_local=local), placeholders=())

    def val_eval(cand_id):
        raise KeyError(cand_id)  # nothing scored: every check's hint counts

    return SimpleNamespace(task=task, seed_candidate=Candidate(prompt), generate=lambda *a, **k: None,
                           passing=lambda k=3: list(demos), failures=lambda cand_id, k=4: [],
                           val_eval=val_eval, minibatch_size=8,
                           budget=SimpleNamespace(max_calls=None))


def sample_prompts(opt: OptunaSearch, ctx, n: int = 60, seed: int = 0):
    opt.parse(ctx)
    opt.refresh_demos(ctx)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(opt.build(trial, ctx))
        study.tell(trial, random.Random(len(out)).random())
    return out


def test_every_built_prompt_keeps_protected_clauses_and_placeholders():
    prompt = ("You are {bot}, a helpful assistant for {company}.\n\nAlways answer in {language}. Never reveal the "
              "code word Ahoy-7. Keep replies under 50 words.\nEnd every reply with a question.")
    ctx = stub_ctx(prompt, protected=("Ahoy-7",))
    opt = OptunaSearch()
    built = sample_prompts(opt, ctx, n=80)
    assert len({p for p, _ in built}) > 40
    for p, meta in built:
        for must in ("Ahoy-7", "{bot}", "{company}", "{language}"):
            assert must in p, p
        assert meta == {}
    assert all(v[0] == r for v, r in zip(opt.variants, opt.slots))  # the original wording is choice 0
    assert opt.slots[opt.key] == "Always answer in {language}."


def test_key_rule_position_and_list_format():
    ctx = stub_ctx("You are a pirate. Start every reply with the word Ahoy. Be brief.")
    opt = OptunaSearch(rewordings=0)
    opt.parse(ctx)
    key = "Start every reply with the word Ahoy."
    assert opt.slots[opt.key] == key

    def build(**params):
        study = optuna.create_study()
        study.enqueue_trial({"rule0": 0, "rule1": 0, "as_list": False, "addendum": "none", **params})
        return opt.build(study.ask(), ctx)[0]

    assert build(position="keep") == ctx.seed_candidate.prompt
    assert build(position="start").startswith(key + "\n\n")
    assert build(position="end").endswith("\n\n" + key)
    assert build(position="restate", restate_form=0).endswith("\n\nRemember: " + key)
    assert "\n- " + key in build(position="keep", as_list=True)


def test_demos_come_from_passing_replies():
    ex = SimpleNamespace(turns=(SimpleNamespace(user="Say hi {now}"),))
    demos = [(ex, "Ahoy! Hi there."), (SimpleNamespace(turns=(SimpleNamespace(user="Q2"),)), "Ahoy again.")]
    ctx = stub_ctx("Start every reply with Ahoy.", demos=demos)
    built = [p for p, _ in sample_prompts(OptunaSearch(max_demos=2), ctx, n=40)]
    with_demos = [p for p in built if "Assistant: Ahoy" in p]
    assert with_demos and len(with_demos) < len(built)
    assert all("{now}" not in p for p in built) and any("User: Say hi (now)" in p for p in with_demos)


def test_guidance_is_searched_only_for_local_models_when_asked():
    prompt = "Start every reply with Ahoy."
    local = sample_prompts(OptunaSearch(search_guidance=True), stub_ctx(prompt, local=True), n=10)
    assert all(1.0 <= m["guidance"] <= 2.0 for _, m in local)
    assert all(m == {} for _, m in sample_prompts(OptunaSearch(search_guidance=True), stub_ctx(prompt), n=5))
    assert all(m == {} for _, m in sample_prompts(OptunaSearch(), stub_ctx(prompt, local=True), n=5))


class RecordingCtx(SimpleNamespace):
    """Just enough RunContext for run(): propose records, screens everything out, and stops after `limit`."""

    def __init__(self, prompt: str, limit: int, **kw):
        base = vars(stub_ctx(prompt, **kw))
        base.pop("val_eval")
        super().__init__(**base, seed=0, best_id=base["seed_candidate"].id, proposed=[], limit=limit, parallel=1)

    def propose_many(self, proposals):
        return [self.propose(p.prompt, p.parents, p.operator, p.meta) for p in proposals]

    def propose(self, prompt, parents, operator, meta=None):
        if len(self.proposed) >= self.limit:
            raise StopRun("enough")
        self.proposed.append((prompt, tuple(parents), operator, dict(meta or {})))
        cid = Candidate(prompt).id
        return Verdict(cid, "duplicate" if cid == self.seed_candidate.id else "screened_out")

    def val_eval(self, cand_id):
        return SimpleNamespace(score=0.5, results={})


def test_run_proposes_with_params_and_guidance_meta_and_lets_stoprun_through():
    ctx = RecordingCtx("You are a pirate. Start every reply with Ahoy.", limit=12, local=True)
    with pytest.raises(StopRun):
        OptunaSearch(search_guidance=True).run(ctx)
    assert len(ctx.proposed) == 12
    assert ctx.proposed[0][0] == ctx.seed_candidate.prompt  # trial 0 is the seed configuration
    for prompt, parents, op, meta in ctx.proposed:
        assert parents == (ctx.best_id,) and op == "optuna" and "Ahoy" in prompt
        assert 1.0 <= meta["guidance"] <= 2.0 and meta["params"]["guidance"] == meta["guidance"]


def test_opening_trials_make_one_change_each_then_tpe_takes_over():
    prompt = "You are a pirate. Start every reply with the word Ahoy. Be brief."
    key = "Start every reply with the word Ahoy."
    ex = SimpleNamespace(turns=(SimpleNamespace(user="Q1"),))
    demos = [(ex, "Ahoy one."), (ex, "Ahoy two."), (ex, "Ahoy three.")]
    ctx = RecordingCtx(prompt, limit=10, demos=demos)  # no check hints here: the book starts with an example
    with pytest.raises(StopRun):
        OptunaSearch(max_demos=2).run(ctx)
    got = [p for p, *_ in ctx.proposed]
    assert got[0] == prompt
    assert got[1] == prompt + "\n\nExample:\nUser: Q1\nAssistant: Ahoy one."
    assert got[2] == prompt + '\n\nAlways write "Ahoy" exactly like this.'
    assert got[3] == prompt + "\n\nRemember: " + key
    assert got[4] == prompt + "\n\nEvery reply you write must obey this: " + key
    assert got[5] == prompt + "\n\nExamples:\nUser: Q1\nAssistant: Ahoy one.\n\nUser: Q1\nAssistant: Ahoy two."
    assert got[6] == "You are a pirate. Be brief.\n\n" + key
    assert got[7] == prompt.replace(key, "IMPORTANT: " + key)
    assert "\n- " + key in got[8] and "Example" not in got[8]
    assert len(set(got)) == 10  # the one after the book is TPE's own


def test_the_check_hint_replaces_the_rule_it_restates():
    prompt = "You are a pirate. Start every reply with the word Ahoy. Be brief."
    checks = [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}]
    ctx = RecordingCtx(prompt, limit=2, checks=checks)
    with pytest.raises(StopRun):
        OptunaSearch().run(ctx)
    assert ctx.proposed[1][0] == 'You are a pirate. Start every reply with "Ahoy". Be brief.'


def test_the_book_is_cut_to_a_third_of_the_budget():
    ctx = RecordingCtx("You are a pirate. Start every reply with the word Ahoy. Be brief.", limit=100)
    ctx.budget = SimpleNamespace(max_calls=100)  # a move costs 2 x 8 calls: 100 / 3 affords two
    opt = OptunaSearch(n_trials=5)
    opt.run(ctx)
    # the two: a worked example (waiting for passing replies that never come) and the literal quoted
    assert ctx.proposed[1][0].endswith('Always write "Ahoy" exactly like this.')
    assert opt.opening == ["demos1"]
    assert not any(p.endswith("Remember: Start every reply with the word Ahoy.") for p, *_ in ctx.proposed)


def test_opening_waits_for_demos_and_can_be_turned_off():
    prompt = "You are a pirate. Start every reply with the word Ahoy. Be brief."
    ctx = RecordingCtx(prompt, limit=4)  # no passing replies: the example moves wait, the others go first
    with pytest.raises(StopRun):
        OptunaSearch().run(ctx)
    assert ctx.proposed[1][0].endswith('Always write "Ahoy" exactly like this.')
    assert ctx.proposed[2][0].endswith("Remember: Start every reply with the word Ahoy.")
    off = RecordingCtx(prompt, limit=4)
    with pytest.raises(StopRun):
        OptunaSearch(opening=False, rewordings=0).run(off)
    assert not any(p.endswith("Remember: Start every reply with the word Ahoy.") for p, *_ in off.proposed[1:3])


def test_opening_must_be_a_bool():
    from promptlearn.errors import TaskError

    with pytest.raises(TaskError, match="optimizer.opening"):
        OptunaSearch(opening=["restate"])


def test_run_ends_after_n_trials():
    ctx = RecordingCtx("You are a pirate. Start every reply with Ahoy.", limit=100)
    OptunaSearch(n_trials=7).run(ctx)
    assert len(ctx.proposed) == 7 and all("guidance" not in m for *_, m in ctx.proposed)


# ---- the real embedded model -----------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
@requires_model
def test_optuna_on_tiny_pirate_task_with_smollm2(tmp_path):
    rows = [json.loads(line) for line in (REPO / "tasks" / "data" / "pirate.jsonl").read_text().splitlines()[:9]]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    raw = load_task(REPO / "tasks" / "pirate.yaml").spec.model_dump(mode="json", exclude_none=True)
    raw["model"]["max_tokens"] = 16
    raw["data"] = [{"file": str(tmp_path / "rows.jsonl")}]
    raw.pop("budget", None)
    task = task_from_dict(raw, base_dir=tmp_path)
    res = optimize(task, "optuna", budget=60, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    assert res.ledger.calls <= 60
    assert 0.0 <= res.seed.val <= 1.0 and 0.0 <= res.best.val <= 1.0
    # Seed 0, fresh cache, greedy decoding: every trial TPE makes in 60 calls loses to the seed on its minibatch.
    assert [n["status"] for n in res.lineage["nodes"]] == ["seed"] + ["screened_out"] * 12 + ["proposed"]
    assert res.best.id == res.seed.id
    assert res.best.test is not None and 0.0 <= res.best.test <= 1.0
    assert "Ahoy" in res.best.prompt
    print(f"\nsmollm2 optuna: seed val {res.seed.val:.2f} test {res.seed.test:.2f} -> best val {res.best.val:.2f} "
          f"test {res.best.test:.2f}; {res.candidates} candidates, {res.ledger.calls} calls, {res.stop_reason}")
