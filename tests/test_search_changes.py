"""Issue 15's search changes: the operators a person tries first, the loose tie-break in screening, the opening
book, harvested demos (real model) and guidance as a candidate option in evolve."""

import random
from pathlib import Path

import pytest

from conftest import requires_model
from promptlearn.optimizers.evolve import OPENING, Evolution
from promptlearn.optimizers.operators import MUTATIONS, every_reply, key_rule, quote_format, sandwich, state_check
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import task_from_dict
from promptlearn.testing import FakeLM

BULLETS = "You are a helpful assistant. Answer with exactly 3 bullet points."
TITLE = ("You are a helpful assistant. Give every reply a title wrapped in double angular brackets, such as "
         "<<my title>>.")
FRIEND = "You are a warm, friendly assistant. Address the user as 'friend' in every reply."


def test_key_rule_prefers_the_protected_rule_over_the_persona():
    # 'friend' is inside "friendly" too: only a whole-word match marks a sentence as holding the clause
    for k in range(5):
        assert key_rule(FRIEND, random.Random(k), ["'friend'"]) == "Address the user as 'friend' in every reply."
        assert key_rule(BULLETS, random.Random(k), ["3 bullet points"]) == "Answer with exactly 3 bullet points."


def test_sandwich_puts_the_key_rule_first_and_last():
    out = sandwich(BULLETS, random.Random(0), protected=["3 bullet points"])
    assert out == ("Answer with exactly 3 bullet points.\n\nYou are a helpful assistant.\n\n"
                   "Answer with exactly 3 bullet points.")
    assert sandwich("Answer with exactly 3 bullet points.", random.Random(0)) is None  # nothing to wrap it around


def test_every_reply_adds_an_explicit_line_once():
    outs = {every_reply(BULLETS, random.Random(k), protected=["3 bullet points"]) for k in range(12)}
    assert "Every reply must answer with exactly 3 bullet points." in {o.split("\n\n")[-1] for o in outs}
    assert all(o.startswith(BULLETS + "\n\n") and o.count("3 bullet points") == 2 for o in outs)
    done = BULLETS + "\n\nEvery reply must answer with exactly 3 bullet points."
    assert every_reply(done, random.Random(1), protected=["3 bullet points"]) in (None, *[
        done + "\n\n" + f.format(s="Answer with exactly 3 bullet points.") for f in
        ("Every reply must follow this rule: {s}", "Every reply you write must obey this: {s}",
         "In every reply, without exception: {s}")])


def test_quote_format_quotes_each_literal_once_and_leaves_bans_alone():
    out = quote_format(TITLE, random.Random(0), protected=["<<"])
    assert out.startswith(TITLE + "\n\n") and '"<<my title>>"' in out.split("\n\n")[-1]
    assert '"<<"' not in out  # "<<" is part of the longer literal
    out = quote_format(FRIEND, random.Random(0), protected=["'friend'"])
    assert out.split("\n\n")[-1].count("friend") == 1
    # a ban or a limit: copying its literal would break the rule
    assert quote_format("You are a helpful assistant. Never use the word 'that'.", random.Random(0),
                        protected=["'that'"]) is None
    assert quote_format("You are a helpful assistant. Keep every reply under 20 words.", random.Random(0),
                        protected=["20 words"]) is None


def test_opening_book_names_registered_operators_and_bad_names_fail_early():
    assert set(OPENING) <= set(MUTATIONS)
    from promptlearn.errors import TaskError

    with pytest.raises(TaskError, match="opening"):
        Evolution(opening=["nosuch"])


def _quote_task(**options):
    """Replies must be wrapped in double quotes. The seed's replies are bare; a prompt that says "Every reply"
    gets replies with an extra first line, which IFEval's loose variant (first line dropped) accepts."""
    users = [f"Tell me about topic {i}" for i in range(20)]
    return task_from_dict({
        "name": "quoted", "model": {"name": "fake/target", "max_tokens": 16},
        "prompt": "You are a helpful assistant. Wrap the reply in double quotes.",
        "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "startend:quotation", "name": "rule"}],
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0}, "budget": {"max_calls": 60},
        "optimizer": {"name": "evolve", "operators": ["every_reply"], "opening": [], **options}})


def _loose_responder(messages):
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    return 'Here it is:\n"topic info"' if "Every reply" in system else "topic info"


@pytest.mark.parametrize("loose,status", [(True, "promoted"), (False, "screened_out")])
def test_screening_breaks_a_strict_tie_on_the_loose_score(loose, status, tmp_path):
    with FakeLM(_loose_responder):
        optimize(_quote_task(screen_loose=loose), budget=60, seed=0, run_dir=tmp_path / "run",
                 cache_path=tmp_path / "c.sqlite")
    store = SQLiteRunStore(tmp_path / "run", create=False)
    made = [c for c in store.candidates() if c["operator"] == "every_reply"]
    store.close()
    assert made and made[0]["status"] in ((status, "accepted") if loose else (status,))


TASKS = Path(__file__).resolve().parent.parent / "tasks"


@pytest.mark.model
@requires_model
def test_evolve_harvests_demos_with_guidance_when_nothing_passes(tmp_path):
    """tasks/rules/bullets.yaml: no train reply passes (seed and sandwich), so add_example has no material; evolve
    decodes the best prompt with guidance on a minibatch and keeps only replies that pass every check."""
    from promptlearn.task import load_task
    from promptlearn.types import candidate_id

    task = load_task(TASKS / "rules" / "bullets.yaml", overrides={
        "data": [{"file": "../data/rules_users.jsonl", "limit": 20}],
        "optimizer": {"name": "evolve", "opening": ["sandwich", "add_example"]}})
    result = optimize(task, budget=45, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
                      options={"minibatch": 4})
    store = SQLiteRunStore(tmp_path / "run", create=False)
    by_tag = store.get_meta("ledger_by_tag") or {}
    assert 0 < by_tag["harvest"]["requests"] <= 4
    guided = store.results(candidate_id(task.prompt, {"guidance": 2.0}))
    assert len(guided) == by_tag["harvest"]["requests"]
    passed = [r.turns[0].reply for r in guided.values() if r.passed]
    demos = [c for c in store.candidates() if c["operator"] == "add_example"]
    store.close()
    assert bool(demos) == bool(passed)  # a demo only from a reply that passed; one whenever some reply did
    for c in demos:
        assert any(" ".join(reply.split()[:25]) in c["prompt"] for reply in passed)
    assert result.ledger.calls <= 45 + 20


@pytest.mark.parametrize("reply,demos", [("Ahoy, the answer is near.", True),
                                         ("Ahoy a friend is a friend is a friend is a friend is a friend", False)])
def test_a_looping_reply_is_never_demo_material_even_when_it_passes(reply, demos, tmp_path):
    users = [f"Tell me about topic {i}" for i in range(20)]
    task = task_from_dict({
        "name": "ahoy", "model": {"name": "fake/target", "max_tokens": 16},
        "prompt": "You are a pirate. Start every reply with the word Ahoy.", "protected": ["Ahoy"],
        "data": [{"examples": [{"id": f"q{i}", "user": u} for i, u in enumerate(users)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "rule"}],
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0}, "budget": {"max_calls": 40},
        # serial: add_example is drawn after sandwich was screened, so the replies it saw are there as material
        "optimizer": {"name": "evolve", "opening": ["sandwich", "add_example"], "parallel": 1}})
    with FakeLM(lambda m: reply):
        optimize(task, budget=40, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    store = SQLiteRunStore(tmp_path / "run", create=False)
    made = [c for c in store.candidates() if c["operator"] == "add_example"]
    store.close()
    assert bool(made) == demos


def _hint_task():
    """Replies start with "Ahoy" only when the prompt says so in the check's own words."""
    return task_from_dict({
        "name": "hinted", "model": {"name": "fake/target", "max_tokens": 16},
        "prompt": "You are a pirate. Greet the user like a pirate.",
        "data": [{"examples": [{"id": f"h{i}", "user": f"Question {i}?"} for i in range(20)]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "name": "rule"},
                   {"type": "min_words", "value": 1, "name": "answers"}],
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0}, "budget": {"max_calls": 60},
        "optimizer": {"name": "evolve", "operators": ["state_check"], "opening": []}})


def _hint_responder(messages):
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    return "Ahoy, matey." if 'Start every reply with "Ahoy".' in system else "Hello there, matey."


def test_state_check_adds_the_hint_of_the_check_that_fails(tmp_path):
    """The failing check's hint (starts_with) goes in; the guard that never fails (min_words) does not."""
    with FakeLM(_hint_responder):
        result = optimize(_hint_task(), budget=60, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    store = SQLiteRunStore(tmp_path / "run", create=False)
    made = [c for c in store.candidates() if c["operator"] == "state_check"]
    store.close()
    assert made, "state_check proposed nothing"
    assert 'Start every reply with "Ahoy".' in made[0]["prompt"].split("\n\n")[-1]
    assert not any("at least 1 words" in c["prompt"] for c in made)
    assert result.best.id == made[0]["id"] and result.best.test == 1.0 and result.seed.test == 0.5  # rule 0, guard 1


def test_a_hint_that_raises_is_no_hint():
    from promptlearn.checks.hints import check_hint

    class Plugin:
        name = "mine"

        def hint(self):
            raise RuntimeError("boom")

    assert check_hint(Plugin()) is None and check_hint(object()) is None
    assert "state_check" in MUTATIONS and Evolution().opening[0] == "state_check"  # the suite put it first


@pytest.mark.model
@requires_model
def test_state_check_on_the_embedded_model_states_the_bullet_format(tmp_path):
    """tasks/rules/bullets.yaml on SmolLM2: the failing check is the bullet count, so the hint added is the
    verifier's own wording (exactly 3 bullet points starting with "* "), and the candidate is screened on train."""
    from promptlearn.task import load_task

    task = load_task(TASKS / "rules" / "bullets.yaml", overrides={
        "data": [{"file": "../data/rules_users.jsonl", "limit": 20}],
        "optimizer": {"name": "evolve", "operators": ["state_check"], "opening": ["state_check"]}})
    optimize(task, budget=60, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
             options={"minibatch": 4})
    store = SQLiteRunStore(tmp_path / "run", create=False)
    made = [c for c in store.candidates() if c["operator"] == "state_check"]
    results = store.results(made[0]["id"]) if made else {}
    store.close()
    assert made and 'exactly 3 bullet points, each on its own line starting with "* "' in made[0]["prompt"]
    assert made[0]["status"] in ("screened_out", "promoted", "accepted") and len(results) >= 4


@pytest.mark.parametrize("confirm,status", [(0, "promoted"), (12, "accepted")])
def test_confirm_judges_a_one_reply_val_gain_again_on_unscreened_train_examples(confirm, status, tmp_path):
    """The hinted prompt fixes every train reply but only one val reply: on val alone that is confidence
    1 - (4/5)^5 = 0.67 < 0.8 (5 val examples), so it stays promoted; with `confirm` the train examples it was not
    screened on join the bootstrap, and it is accepted."""
    task = _hint_task()
    train = {e.turns[0].user for e in task.splits["train"]}
    val_one = task.splits["val"][0].turns[0].user

    def responder(messages):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        hinted = 'Start every reply with "Ahoy".' in system
        return "Ahoy, matey." if hinted and (user in train or user == val_one) else "Hello there, matey."

    task = task_from_dict({**_hint_task().spec.model_dump(exclude_none=True),
                           "optimizer": {"name": "evolve", "operators": ["state_check"], "opening": [],
                                         "confirm": confirm}})
    with FakeLM(responder):
        result = optimize(task, budget=80, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite")
    store = SQLiteRunStore(tmp_path / "run", create=False)
    made = [c for c in store.candidates() if c["operator"] == "state_check"]
    confirms = store.events("confirm")
    store.close()
    assert made[0]["status"] == status
    assert (result.best.id == made[0]["id"]) == (status == "accepted")
    if confirm:
        assert confirms and confirms[0]["examples"] == len(train) - 8  # the 8 screening examples are left out
        assert confirms[0]["confidence"] >= 0.8
    else:
        assert not confirms


@pytest.mark.parametrize("value", ["-1", "many", "true"])
def test_a_bad_confirm_is_one_line_exit_2_before_any_call(value, tmp_path, monkeypatch, capsys):
    from test_cli_export_check import cli, write_task

    path = write_task(tmp_path / "task.yaml")
    with FakeLM(lambda m: "Ahoy"):
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "-o", f"confirm={value}", "--run-dir", tmp_path / "r")
    assert code == 2 and "optimizer.confirm" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_state_check_replaces_the_vaguer_rule_unless_that_loses_a_protected_clause():
    from types import SimpleNamespace

    def ctx(checks):
        def no_val(_):
            raise KeyError(_)
        return SimpleNamespace(task=SimpleNamespace(spec=SimpleNamespace(checks=checks)), val_eval=no_val)

    bullets = ctx([{"type": "detectable_format:number_bullet_lists", "num_bullets": 3}])
    hint = 'Answer with exactly 3 bullet points, each on its own line starting with "* ".'
    outs = {state_check(BULLETS, random.Random(k), ["3 bullet points"], ctx=bullets) for k in range(20)}
    assert "You are a helpful assistant. " + hint in outs  # the rule sentence swapped for the hint
    assert any(o.startswith(BULLETS + "\n\n") and o.endswith(hint) for o in outs)  # or a line of its own
    friend = ctx([{"type": "keywords:existence", "keywords": ["friend"]}])
    outs = {state_check(FRIEND, random.Random(k), ["'friend'"], ctx=friend) for k in range(20)}
    assert outs and all(o.startswith(FRIEND + "\n\n") for o in outs)  # swapping would lose 'friend'


def test_a_parallel_round_puts_the_books_worked_example_off_until_replies_were_screened():
    """At P>1 a round's children are drawn before any of them is screened: the book's add_example would have no
    material (no passing train reply yet) and be lost, so it waits for the next round; a serial draw (P=1)
    plays it at once, as before."""
    from types import SimpleNamespace

    from promptlearn.types import Candidate

    seed = Candidate(BULLETS, (), "seed")
    replies: list = []
    ctx = SimpleNamespace(pool=[seed], best=(seed, None), rng=random.Random(0), passing=lambda k=3: list(replies),
                          task=SimpleNamespace(spec=SimpleNamespace(protected=["3 bullet points"], checks=[]),
                                               model=SimpleNamespace(is_local=False)))
    evo = Evolution(opening=["sandwich", "add_example", "every_reply"], operators=["sandwich", "add_example",
                                                                                    "every_reply", "emphasize"])
    first = [op for _, op, _, _ in evo.draw(ctx, 3)]
    assert first[:2] == ["sandwich", "every_reply"] and "add_example" not in first
    replies.append((SimpleNamespace(turns=[SimpleNamespace(user="Name three fruits.")]), "* a\n* b\n* c"))
    second = evo.draw(ctx, 3)
    assert second[0][1] == "add_example" and "* a" in second[0][2]
    serial = Evolution(opening=["add_example"], operators=["add_example", "emphasize"])
    replies.clear()
    serial.draw(ctx, 1)
    assert serial.tries["add_example"] == 1 and not serial.deferred  # played (and failed) at once
