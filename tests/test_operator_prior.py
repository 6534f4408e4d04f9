"""evolve's operator prior: the shipped table is the suite's stats, leave-one-out tables leave the task out, the
prior steers draws from the first one, bad tables fail early, and a prior run works on the embedded model."""

import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.operator_prior import read, table
from conftest import requires_model
from promptlearn.errors import TaskError
from promptlearn.optimizers.evolve import Evolution, operator_prior_table
from promptlearn.optimizers.prior import SUITE_PRIOR
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def test_the_shipped_prior_is_the_committed_suite_stats():
    assert {op: tuple(v) for op, v in table(read()).items()} == SUITE_PRIOR


def test_a_leave_one_out_table_has_none_of_that_tasks_tries():
    stats = read()
    task = "rules_keyword"
    full, without = table(stats), table(stats, leave_out=task)
    for op, (w, t) in stats["tasks"][task].items():
        assert full[op][1] - without.get(op, [0, 0])[1] == t and full[op][0] - without.get(op, [0, 0])[0] == w


def test_leaving_out_a_task_the_stats_do_not_hold_is_an_error():
    with pytest.raises(ValueError, match="no task 'keyword'"):
        table(read(), leave_out="keyword")  # the stats name it rules_keyword: a slip must not give the full table


def _draws(evo, n=3000):
    ctx = SimpleNamespace(rng=random.Random(0))
    return Counter(evo.pick_operator(ctx) for _ in range(n))


def test_the_prior_steers_the_first_draws_and_the_task_record_takes_over():
    ops = ["add_example", "emphasize", "restate"]
    plain = _draws(Evolution(operators=ops, opening=[]))
    steered = Evolution(operators=ops, opening=[], operator_prior="suite")
    with_prior = _draws(steered)
    # no prior: no track record yet, every operator alike; the suite's prior favours the worked example (18 wins
    # in 16 tries) over emphasis (0 in 19)
    assert max(plain.values()) / min(plain.values()) < 1.15
    assert with_prior["add_example"] > 3 * with_prior["emphasize"]
    steered.wins["emphasize"], steered.tries["emphasize"] = 12, 6  # this task: emphasis works here
    steered.tries["add_example"] = 10
    assert _draws(steered)["emphasize"] > _draws(steered)["add_example"]


def test_an_operator_the_prior_never_saw_gets_its_mean_rate():
    evo = Evolution(operator_prior={"add_example": [3, 1], "emphasize": [1, 3]})
    assert evo.prior_counts("opening_template") == pytest.approx((4.0 * 4 / 4, 4.0))
    assert Evolution().prior_counts("add_example") == (0.0, 0.0)


@pytest.mark.parametrize("value,says", [
    ({"shout": [1, 2]}, "unknown operator"), ({"emphasize": [1, 0]}, "[wins, tries]"),
    ({"emphasize": "often"}, "[wins, tries]"), ("everything", "a table"), ({"emphasize": [True, 2]}, "[wins, tries]"),
    ({"emphasize": [float("inf"), 1]}, "[wins, tries]"), ("Auto", "a table"),
])
def test_a_bad_prior_names_the_field(value, says):
    with pytest.raises(TaskError) as e:
        operator_prior_table(value)
    assert e.value.field == "optimizer.operator_prior" and says in str(e.value)


def test_off_is_no_table():
    assert operator_prior_table(None) == operator_prior_table(False) == {}
    assert operator_prior_table(True) == operator_prior_table("suite") != {}


@pytest.mark.parametrize("model,local", [("local/smollm2", True), ("fake/target", False),
                                         ("openai/gpt-4o-mini", False)])
def test_by_default_the_suite_prior_is_for_a_local_model_only(model, local):
    """`auto` (the default) is the suite's table on a local model, where it was learned, and no prior on an API
    model; a prior the task names is used on any model."""
    from promptlearn.task import task_from_dict

    task = task_from_dict({"name": "t", "model": {"name": model}, "prompt": "Say hi.",
                           "data": [{"examples": [{"id": "a", "user": "hello"}]}],
                           "checks": [{"type": "contains", "value": "hi"}]})
    default, named, off = Evolution(), Evolution(operator_prior="suite"), Evolution(operator_prior=False)
    for evo in (default, named, off):
        evo.resolve_prior(task)
    assert default.prior == (operator_prior_table("suite") if local else {})
    assert named.prior == operator_prior_table("suite") and off.prior == {}


@pytest.mark.model
@requires_model
def test_a_prior_run_on_the_embedded_model_draws_what_the_prior_favours(tmp_path):
    """tasks/rules/keyword.yaml on SmolLM2 with no opening book and a prior that says only reword works: most
    children are rewordings, and the run is recorded with its prior (resume replays it)."""
    from promptlearn.task import load_task

    prior = {"reword": [20, 10], "emphasize": [0, 20], "move_rule": [0, 20], "restate": [0, 20]}
    task = load_task(TASKS / "rules" / "keyword.yaml", overrides={
        "data": [{"file": "../data/rules_users.jsonl", "limit": 20}],
        "optimizer": {"name": "evolve", "opening": [], "crossover_rate": 0,
                      "operators": ["restate", "emphasize", "move_rule", "reword"], "operator_prior": prior}})
    optimize(task, budget=50, seed=0, run_dir=tmp_path / "run", cache_path=tmp_path / "c.sqlite",
             options={"minibatch": 4})
    store = SQLiteRunStore(tmp_path / "run", create=False)
    made = [c["operator"] for c in store.candidates() if c["operator"] != "seed"]
    saved = store.get_meta("config")
    store.close()
    assert len(made) >= 3 and made.count("reword") > len(made) / 2
    assert saved["options"]["operator_prior"] == prior


@pytest.mark.parametrize("value", ["everything", "{shout: [1, 2]}", "{emphasize: [1, 0]}"])
def test_a_bad_prior_on_the_command_line_is_one_line_exit_2_before_any_call(value, tmp_path, monkeypatch, capsys):
    from promptlearn.testing import FakeLM
    from test_cli_export_check import cli, write_task

    path = write_task(tmp_path / "task.yaml")
    with FakeLM(lambda m: "Ahoy"):
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "-o", f"operator_prior={value}",
                           "--run-dir", tmp_path / "r")
    assert code == 2 and "optimizer.operator_prior" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_the_suite_prior_from_the_command_line_runs_and_is_saved(tmp_path, monkeypatch, capsys):
    from promptlearn.testing import FakeLM
    from test_cli_export_check import cli, write_task

    path = write_task(tmp_path / "task.yaml")
    with FakeLM(lambda m: "Ahoy"):
        code, _, err = cli(monkeypatch, capsys, "optimize", path, "-o", "operator_prior=suite", "--budget-calls", "40",
                           "--run-dir", tmp_path / "r")
    store = SQLiteRunStore(tmp_path / "r", create=False)
    saved = store.get_meta("config")
    store.close()
    assert code == 0, err
    assert saved["options"]["operator_prior"] == "suite"
