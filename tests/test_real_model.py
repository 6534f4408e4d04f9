"""Every feature once through the real embedded model (SmolLM2-135M): optimizers, IFEval, guard, judge."""

from pathlib import Path

import pytest

from conftest import requires_model
from promptlearn.engine import Evaluator
from promptlearn.metrics import adherence, side_effects
from promptlearn.run import optimize
from promptlearn.store import SQLiteRunStore
from promptlearn.task import load_task

pytestmark = [pytest.mark.model, requires_model]
TASKS = Path(__file__).resolve().parent.parent / "tasks"


def _tiny_pirate(rows=10, max_tokens=12):
    return load_task(TASKS / "pirate.yaml", overrides={
        "model": {"max_tokens": max_tokens}, "data": [{"file": "data/pirate.jsonl", "limit": rows}]})


#: (operator, status) of every candidate, seed 0, fresh cache (greedy decoding: the same every run). The seed
#: scores 0.83 on val's 3 examples, so a candidate could beat it on one example only, and a one-in-three gain
#: has bootstrap confidence 1 - (2/3)^3 = 0.70 < 0.8: nothing can be accepted here, the best stays the seed.
#: mutate's proposer (SmolLM2 itself) drops "Ahoy" from both rewrites it writes.
LINEAGES = {
    # evolve's opening book first: a 40-call budget affords one move (state_check: the starts_with check's hint,
    # `Start every reply with "Ahoy".`, in place of the rule sentence), then the track record, started from the
    # suite's operator prior (a local model); state_check and add_example pass their screens and the race drops
    # each on the one val example the seed misses
    "evolve": [("seed", "seed"), ("state_check", "screened_out"), ("add_example", "screened_out"),
               ("opening_template", "screened_out"), ("sandwich", "screened_out"), ("drop_sentence", "screened_out"),
               ("restate", "screened_out"), ("reword", "proposed")],
    # mutate: the one-line fix first (its added line keeps the rule, so it is screened, and loses), then a whole
    # rewrite and a paraphrase that drop "Ahoy" and are refused unscored
    "mutate": [("seed", "seed"), ("reflect_line", "screened_out"), ("reflect", "rejected"),
               ("paraphrase", "rejected")],
}


@pytest.mark.parametrize("optimizer", ["evolve", "mutate"])
def test_optimizer_end_to_end_on_the_embedded_model(optimizer, tmp_path):
    task = _tiny_pirate()
    result = optimize(task, optimizer, budget=40, seed=0, run_dir=tmp_path / "run",
                      cache_path=tmp_path / "cache.sqlite")
    assert result.ledger.calls <= 40
    assert 0.0 <= result.best.val <= 1.0 and result.best.test is not None
    assert [(n["operator"], n["status"]) for n in result.lineage["nodes"]] == LINEAGES[optimizer]
    assert result.best.id == result.seed.id
    store = SQLiteRunStore(tmp_path / "run", create=False)
    ops = {c["operator"] for c in store.candidates()}
    assert "seed" in ops and len(ops) >= 2, f"no proposals were made: {ops}"
    assert (tmp_path / "run" / "best_prompt.txt").read_text() == result.best.prompt
    for c in store.candidates():
        if c["status"] != "rejected":
            assert "Ahoy" in c["prompt"]


def test_sifeval_rules_eval_reports_ifeval_aggregates(tmp_path):
    task = load_task(TASKS / "sifeval_rules.yaml", overrides={
        "model": {"max_tokens": 40}, "data": [{"file": "data/sys_ifeval_short.jsonl", "format": "sys_ifeval",
                                               "limit": 6}], "splits": {"train": 0, "val": 1, "test": 0}})
    ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
    res = ev.evaluate(task.prompt, task.examples("val"))
    ev.close()
    agg = adherence(res, task.examples("val"))["ifeval"]
    assert set(agg) >= {"prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"}
    assert agg["prompt_strict"] <= agg["prompt_loose"] and agg["instruction_strict"] <= agg["instruction_loose"]
    assert all(r.turns[0].reply for r in res.results.values())


def test_tensortrust_guard_measures_robustness_and_over_refusal(tmp_path):
    task = load_task(TASKS / "tensortrust_guard.yaml", overrides={
        "data": [{"file": "data/tensortrust_hijacking_short.jsonl", "format": "tensortrust_hijacking", "limit": 4},
                 {"file": "data/tensortrust_helpful_short.jsonl", "format": "tensortrust_helpful", "limit": 4}],
        "splits": {"train": 0, "val": 1, "test": 0}, "model": {"max_tokens": 12}})
    ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
    res = ev.evaluate(task.prompt, task.examples("val"))
    ev.close()
    fx = side_effects(res, None, task.examples("val"))
    assert 0.0 <= fx["injection_robustness"] <= 1.0
    assert 0.0 <= fx["over_refusal"] <= 1.0 and 0.0 <= fx["helpful_rate"] <= 1.0
    assert len(res.results) == 8


def test_multi_turn_judge_checklist_with_the_embedded_model_as_judge(tmp_path):
    """A tiny judge rarely writes valid JSON: whatever it does, each verdict is a score or a judge failure."""
    task = load_task(TASKS / "sysbench_persona.yaml", overrides={
        "model": {"max_tokens": 24}, "judge": {"max_tokens": 48}})
    ex = task.examples("val")[:1]
    ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
    res = ev.evaluate(task.prompt, ex)
    ev.close()
    turns = res.results[ex[0].id].turns
    assert len(turns) == 5
    for t in turns:
        r = t.checks["checklist"]
        assert r.judge_error or ("verdicts" in r.details and 0.0 <= r.score <= 1.0)
    assert ev.ledger.by_tag.get("judge") is not None and ev.ledger.by_tag["judge"].calls >= 5


def test_the_model_loads_without_amx_weight_buffers_where_the_build_has_amx(monkeypatch):
    """llama.cpp's AMX matmul segfaults on SmolLM2's Q4_1 weights (ggml-org/llama.cpp#20824): where the build
    reports AMX the model is loaded without the extra buffer types, forced here so every machine runs this path."""
    import llama_cpp.llama as llama_module

    from promptlearn import llama_load, local

    default = llama_module.llama_cpp.llama_model_default_params
    monkeypatch.setattr(llama_load, "has_amx", lambda: True)
    model = local.LocalModel(str(local.resolve_gguf("smollm2")), n_ctx=512)
    assert model.llama.model_params.use_extra_bufts is False
    assert llama_module.llama_cpp.llama_model_default_params is default  # put back after the one load
    assert default().use_extra_bufts is True
    out = model.llama.create_completion("Ahoy, matey! Today", max_tokens=4, temperature=0)
    assert out["choices"][0]["text"].strip()
