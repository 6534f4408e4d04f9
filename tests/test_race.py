"""Racing on val (`optimizer.race`): a promoted proposal is scored first on the val examples the best prompt
misses and dropped there when the acceptance rule could not take it whatever the rest scored. It must never
change what is accepted, only what a loser costs."""

import hashlib
import random
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conftest import requires_model
from promptlearn.loop import bootstrap_confidence, paired_confidence
from promptlearn.optimizers import _PLUGINS, register_optimizer
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import task_from_dict
from promptlearn.testing import FakeLM

TASKS = Path(__file__).resolve().parent.parent / "tasks"
VARIANTS = [f"You are a pirate. Variant {k}: greet the user." for k in range(14)]


def test_a_vector_larger_everywhere_gets_at_least_the_confidence_with_the_same_draws():
    rng = random.Random(7)
    for trial in range(100):
        m = rng.randint(1, 20)
        low = [rng.choice((-1.0, -0.5, 0.0, 0.0, 0.5, 1.0)) for _ in range(m)]
        high = [d + rng.choice((0.0, 0.0, 0.5, 1.0)) for d in low]
        a = bootstrap_confidence(low, 300, random.Random(trial))
        b = bootstrap_confidence(high, 300, random.Random(trial))
        assert b >= a, (low, high)


class _FixedList:
    """Proposes VARIANTS in order, each a child of the best so far: the same proposals whatever is accepted."""

    name: ClassVar[str] = "fixed-list-race-test"

    def run(self, ctx: Any) -> None:
        for prompt in VARIANTS[1:]:
            ctx.propose(prompt, (ctx.best[0].id,), "fixed")


@pytest.fixture
def fixed_list():
    register_optimizer(_FixedList)
    yield _FixedList.name
    _PLUGINS.pop(_FixedList.name, None)


RATES = (40, 35, 40, 30, 50, 50, 45, 65, 55, 38, 65, 60, 80, 45)  # variant k passes about RATES[k] % of examples
OVERFIT = {1, 3, 6, 9, 13}  # ...and these pass every train example as well: they win screening, then lose on val
BREAK = {7, 11}  # ...and these fail the examples every other variant passes: better on val, but they break some
EXAMPLES = [{"id": f"q{i}", "user": f"Question {i}?"} for i in range(40)]


def _passes(system: str, user: str, train: set[str]) -> bool:
    """Variant k passes the examples under its rate on one shared order (so a better variant mostly passes what a
    worse one does), plus a few of its own; OVERFIT and BREAK variants as they say."""
    k = next((i for i, v in enumerate(VARIANTS) if v in system), 0)
    shared = int(hashlib.sha256(user.encode()).hexdigest(), 16) % 100
    own = int(hashlib.sha256(f"{k}|{user}".encode()).hexdigest(), 16) % 100
    if k in BREAK and shared < 15:
        return False
    return shared < RATES[k] or own < 8 or (k in OVERFIT and user in train)


def _task(name: str, race: bool, constraints: dict[str, str] | None = None, **options: Any):
    return task_from_dict({
        "name": "race", "model": {"name": "fake/target", "max_tokens": 16}, "prompt": VARIANTS[0],
        "data": [{"examples": EXAMPLES}], "checks": [{"type": "starts_with", "value": "Ahoy", "name": "rule"}],
        "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
        "objective": {"constraints": constraints or {}},
        "optimizer": {"name": name, "race": race, "minibatch": 4, **options}})


def _run(tmp_path: Path, name: str, race: bool, constraints: dict[str, str] | None = None, **options: Any):
    task = _task(name, race, constraints, **options)
    train = {e.turns[0].user for e in task.splits["train"]}

    def responder(messages: list[dict[str, str]]) -> str:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        return "Ahoy, matey." if _passes(system, messages[-1]["content"], train) else "Hello there, matey."

    run_dir = tmp_path / f"run-{race}"
    with FakeLM(responder) as fake:
        result = optimize(task, budget=2000, seed=0, run_dir=run_dir, cache_path=tmp_path / f"c-{race}.sqlite")
    store = SQLiteRunStore(run_dir, create=False)
    cands = {c["id"]: c["status"] for c in store.candidates()}
    races = store.events("race")
    val_n = {c: len(store.results(c)) for c in cands}
    store.close()
    return result, cands, races, val_n, fake.calls


@pytest.mark.parametrize("constraints", [None, {"broken": "<= 0"}])
def test_racing_accepts_exactly_what_the_full_split_accepts_for_fewer_calls(tmp_path, fixed_list, constraints):
    full, full_status, no_races, _, full_calls = _run(tmp_path, fixed_list, False, constraints)
    raced, raced_status, races, val_n, raced_calls = _run(tmp_path, fixed_list, True, constraints)
    assert not no_races
    assert races, "no proposal was dropped part-way through val"
    accepted = sorted(c for c, s in full_status.items() if s == "accepted")
    assert accepted and sorted(c for c, s in raced_status.items() if s == "accepted") == accepted
    assert raced.best.id == full.best.id and raced.best.val == full.best.val and raced.best.test == full.best.test
    for r in races:  # dropped with only part of val scored, and promoted (not accepted) on the full split
        assert raced_status[r["id"]] == "screened_out" and full_status[r["id"]] == "promoted"
        assert r["examples"] < len(_task(fixed_list, True).splits["val"])
    if constraints:
        assert any(r["reason"].startswith("val so far violates broken") for r in races)
    assert raced_calls < full_calls
    assert sum(val_n.values()) < full_calls


@pytest.mark.parametrize("value", ["maybe", "3"])
def test_a_bad_race_is_one_line_exit_2_before_any_call(value, tmp_path, monkeypatch, capsys):
    from test_cli_export_check import cli, write_task

    path = write_task(tmp_path / "task.yaml")
    with FakeLM(lambda m: "Ahoy"):
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "-o", f"race={value}", "--run-dir", tmp_path / "r")
    assert code == 2 and "optimizer.race" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.model
@pytest.mark.slow
@requires_model
def test_on_the_embedded_model_every_raced_out_prompt_would_have_lost_on_the_whole_split(tmp_path):
    """tasks/rules/max_words.yaml on SmolLM2: evolve with race. Each prompt dropped part-way through val is then
    scored on all of val (the replies the race saved, now made), and the acceptance rule, applied to the whole
    split against the best of its time with the bootstrap the engine would have drawn, turns it down too."""
    from promptlearn.engine import evaluate
    from promptlearn.metrics import side_effects, violated
    from promptlearn.task import load_task

    task = load_task(TASKS / "rules" / "max_words.yaml", overrides={"optimizer": {"name": "evolve", "race": True}})
    cache = tmp_path / "c.sqlite"
    optimize(task, budget=90, seed=0, run_dir=tmp_path / "run", cache_path=cache, options={"minibatch": 4})
    store = SQLiteRunStore(tmp_path / "run", create=False)
    prompts = {c["id"]: c["prompt"] for c in store.candidates()}
    races, seed_id = store.events("race"), store.get_meta("seed")
    val_ids = {e.id for e in task.splits["val"]}
    partial = {r["id"]: len(val_ids & set(store.results(r["id"]))) for r in races}
    store.close()
    assert races, "no proposal was dropped part-way through val"
    n_val = len(task.splits["val"])
    seed_ev = evaluate(task, prompts[seed_id], split="val", cache_path=cache)
    for r in races:
        assert partial[r["id"]] == r["examples"] < n_val
        mine = evaluate(task, prompts[r["id"]], split="val", cache_path=cache)
        best = evaluate(task, prompts[r["best"]], split="val", cache_path=cache)
        assert len(mine.results) == n_val
        bad = violated(task.spec.objective.constraints, side_effects(mine, seed_ev, task.splits["val"]))
        conf = paired_confidence(mine, best, 2000, random.Random(0 + r["proposal"]))
        assert bad or not (mine.score > best.score and conf >= 0.8), (r, mine.score, best.score, conf)


def test_the_builtin_searches_race_by_default_and_a_task_can_turn_it_off():
    from promptlearn.run import _build_optimizer

    assert _build_optimizer("evolve", {})[1].race is True  # Evolution.loop_defaults: what the suite measured
    assert _build_optimizer("evolve", {"race": False})[1].race is False
    assert _build_optimizer("optuna", {})[1].race is True
    assert _build_optimizer("optuna", {"race": False})[1].race is False
    assert _build_optimizer("mutate", {})[1].race is True and _build_optimizer("dspy", {})[1].race is False


def test_race_halves_drops_a_proposal_with_no_gain_on_a_random_half_of_what_the_best_misses(tmp_path, fixed_list,
                                                                                             monkeypatch):
    """Near a floor the exact bounds let every loser run to the end; with race_halves a proposal is first scored
    on half of the examples the best misses and dropped with no gain there: fewer calls, and what it drops is
    only what it says. (This task's val has 12 examples, so the threshold is lowered to reach it.)"""
    monkeypatch.setattr("promptlearn.loop.HALVE_FROM", 4)
    HALVE_FROM = 4
    _, exact_status, exact_races, _, exact_calls = _run(tmp_path / "exact", fixed_list, True)
    _, halved_status, races, _, halved_calls = _run(tmp_path / "halved", fixed_list, True, race_halves=True)
    halved = [r for r in races if r["reason"].startswith("no gain on a random")]
    assert halved, "no proposal was dropped on half of the examples the best misses"
    for r in halved:
        n_head = int(r["reason"].split(" of the ")[1].split()[0])
        assert n_head >= HALVE_FROM and r["examples"] == n_head // 2
        assert exact_status[r["id"]] != "accepted"  # on this task none of them would have been the new best
    assert halved_calls < exact_calls
    assert not any(r["reason"].startswith("no gain on a random") for r in exact_races)
