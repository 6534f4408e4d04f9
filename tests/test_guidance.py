"""Classifier-free guidance on the system prompt: the formula and mask, g = 1 is ordinary greedy decoding,
and a guided run through the full engine (own cache key, extra compute in the ledger)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptlearn.guidance import guided_logprobs, log_softmax, plausible, without_system
from promptlearn.testing import FakeLM

from conftest import requires_model

LN = math.log


def test_formula_on_hand_made_vectors():
    # probabilities with / without the system prompt over a 4-token vocabulary
    p_sys = np.array([0.50, 0.30, 0.16, 0.04])
    p_no = np.array([0.70, 0.10, 0.15, 0.05])
    lp_sys, lp_no = np.log(p_sys), np.log(p_no)
    out = guided_logprobs(lp_sys, lp_no, 2.0)
    # token 3 has 0.04 < 0.1 * 0.5: masked; the rest follow no + g * (sys - no)
    assert out[3] == -np.inf
    for i in range(3):
        assert out[i] == pytest.approx(LN(p_no[i]) + 2.0 * (LN(p_sys[i]) - LN(p_no[i])))
    # g = 1 keeps token 0; g = 2 prefers token 1, which the system prompt raised threefold
    assert np.argmax(guided_logprobs(lp_sys, lp_no, 1.0)) == 0
    assert np.argmax(out) == 1
    # g = 0 is the unconditional distribution, within the mask
    assert np.argmax(guided_logprobs(lp_sys, lp_no, 0.0)) == 0
    assert guided_logprobs(lp_sys, lp_no, 0.0)[:3] == pytest.approx(lp_no[:3])


def test_mask_keeps_tokens_at_least_a_tenth_of_the_top():
    p = np.array([0.4, 0.04, 0.0399, 0.2, 0.3201])
    keep = plausible(np.log(p))
    assert keep.tolist() == [True, True, False, True, True]
    out = guided_logprobs(np.log(p), np.log(np.full(5, 0.2)), 1.7)
    assert np.isneginf(out[2]) and np.isfinite(out[[0, 1, 3, 4]]).all()
    # a masked token never wins, however much the system prompt raised it relative to "no system"
    lp_no = np.log(np.array([0.4, 0.04, 1e-12, 0.2, 0.3601 - 1e-12]))
    assert np.argmax(guided_logprobs(np.log(p), lp_no, 10.0)) != 2
    assert plausible(np.log(p), mask_ratio=0.5).tolist() == [True, False, False, True, True]


def test_g_one_is_exactly_logp_sys_on_unmasked_tokens():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lp_sys = log_softmax(rng.normal(size=300).astype(np.float32) * 4)
        lp_no = log_softmax(rng.normal(size=300).astype(np.float32) * 4)
        out = guided_logprobs(lp_sys, lp_no, 1.0)
        keep = plausible(lp_sys)
        assert np.array_equal(out[keep], lp_sys[keep])  # bit for bit, not approximately
        assert np.isneginf(out[~keep]).all()
        assert np.argmax(out) == np.argmax(lp_sys)


def test_impossible_unconditional_token_stays_finite():
    lp_sys = np.log(np.array([0.6, 0.4]))
    lp_no = np.array([0.0, -np.inf])
    assert np.isfinite(guided_logprobs(lp_sys, lp_no, 1.5)).all()
    assert np.array_equal(guided_logprobs(lp_sys, lp_no, 1.0), lp_sys)
    with pytest.raises(ValueError):
        guided_logprobs(lp_sys, np.zeros(3), 1.5)


def test_log_softmax_normalises():
    lp = log_softmax(np.array([1000.0, 999.0, -5.0], dtype=np.float32))
    assert np.exp(lp).sum() == pytest.approx(1.0) and np.argmax(lp) == 0


def test_without_system_drops_only_system_messages():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "v"}]
    assert [m["role"] for m in without_system(msgs)] == ["user", "assistant", "user"]


# ---- real model ------------------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "system", "content": "You are a friendly pirate assistant. Start every reply with the word Ahoy."},
     {"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "Answer in French only."},
     {"role": "user", "content": "What is the capital of Japan?"}],
    [{"role": "system", "content": "Reply in all capital letters."},
     {"role": "user", "content": "Give me three tips for sleeping better."},
     {"role": "assistant", "content": "SLEEP EARLY."},
     {"role": "user", "content": "And two more?"}],
]


@pytest.fixture(scope="module")
def smollm2():
    from promptlearn.local import get_model

    return get_model("smollm2")


@pytest.mark.model
@requires_model
def test_template_injects_its_default_system_prompt_and_we_keep_it(smollm2):
    bare = smollm2.render(without_system(CONVERSATIONS[0]))
    assert "You are a helpful AI assistant named SmolLM" in bare  # what the model sees with no system prompt
    assert "pirate" in smollm2.render(CONVERSATIONS[0]) and "SmolLM" not in smollm2.render(CONVERSATIONS[0])


@pytest.mark.model
@requires_model
@pytest.mark.parametrize("i", range(len(CONVERSATIONS)))
def test_g_one_reproduces_ordinary_greedy_decoding(smollm2, i):
    from promptlearn.guidance import guided_generate

    # Both start from an empty KV cache, so both evaluate the same batches: the comparison is about decoding, not
    # about low-order float differences between a reused prefix and a fresh one.
    with smollm2.lock:
        smollm2.llama.reset()
    ordinary = smollm2.chat(CONVERSATIONS[i], max_tokens=24, guidance=1.0)
    with smollm2.lock:
        smollm2.llama.reset()
        guided = guided_generate(smollm2, CONVERSATIONS[i], max_tokens=24, guidance=1.0)
    assert guided.text == ordinary.text
    assert guided.completion_tokens == ordinary.completion_tokens
    assert guided.finish_reason == ordinary.finish_reason
    # both contexts were run and counted: the conditional prompt, the unconditional one, and its decode steps
    uncond = len(smollm2.tokenize(smollm2.render(without_system(CONVERSATIONS[i]))))
    pushed = guided.completion_tokens - (guided.finish_reason == "length")  # the last token is never evaluated
    assert guided.prompt_tokens == ordinary.prompt_tokens + uncond + pushed


@pytest.mark.model
@requires_model
def test_no_system_message_means_nothing_to_guide(smollm2):
    from promptlearn.guidance import guided_generate

    msgs = CONVERSATIONS[1][1:]
    ordinary = smollm2.chat(msgs, max_tokens=12)
    with smollm2.lock:
        guided = guided_generate(smollm2, msgs, max_tokens=12, guidance=2.0)
    assert guided.text == ordinary.text and guided.prompt_tokens == ordinary.prompt_tokens


@pytest.mark.model
@requires_model
def test_guided_run_through_the_engine(tmp_path):
    from promptlearn.cache import request_key
    from promptlearn.engine import Evaluator
    from promptlearn.local import get_model
    from promptlearn.task import task_from_dict

    def task(g):
        return task_from_dict({
            "name": "cfg", "prompt": "You are a friendly pirate assistant. Start every reply with the word Ahoy.",
            "model": {"name": "local/smollm2", "max_tokens": 12, "guidance": g},
            "data": [{"examples": [{"user": "Write a haiku about the sea."},
                                   {"user": "What is the capital of Japan?"}]}],
            "checks": [{"type": "starts_with", "value": "Ahoy", "ignore_case": True, "skip_punctuation": True}],
            "splits": {"train": 0.0, "val": 1.0, "test": 0.0}})

    plain, guided = task(1.0), task(1.5)
    evs = {g: Evaluator(t, cache_path=tmp_path / f"c{g}.sqlite") for g, t in ((1.0, plain), (1.5, guided))}
    try:
        msgs = [{"role": "system", "content": plain.prompt}, {"role": "user", "content": "hi"}]
        keys = {g: request_key(ev.lm.name, ev.lm.params(), msgs) for g, ev in evs.items()}
        assert keys[1.0] != keys[1.5] and evs[1.5].lm.params()["guidance"] == 1.5
        assert "guidance" not in evs[1.0].lm.params()
        res = {g: ev.evaluate(plain.prompt, ev.task.examples("val"), split="val") for g, ev in evs.items()}
        for r in res.values():
            assert r.complete and r.usage.calls == 2 and all(e.turns[0].reply for e in r.results.values())
        # the guided run paid for the unconditional context: its prompts at least, on top of the same requests
        m = get_model("smollm2")
        uncond = sum(len(m.tokenize(m.render([{"role": "user", "content": e.turns[0].user}])))
                     for e in guided.examples("val"))
        assert res[1.5].usage.prompt_tokens >= res[1.0].usage.prompt_tokens + uncond
        # cached under its own key: a second guided evaluation is all cache hits
        again = evs[1.5].evaluate(plain.prompt, guided.examples("val"), split="val")
        assert again.usage.calls == 0 and again.usage.cached_calls == 2
        assert {k: v.turns[0].reply for k, v in again.results.items()} == \
               {k: v.turns[0].reply for k, v in res[1.5].results.items()}
    finally:
        for ev in evs.values():
            ev.close()


# ---- candidates that carry decoding options (the optimizer tunes g) ------------------------------------------

def test_candidate_id_includes_guidance_only_when_meta_carries_it():
    from promptlearn.types import Candidate, candidate_id, prompt_id

    p = "Start every reply with Ahoy."
    assert Candidate(p).id == prompt_id(p) == Candidate(p, meta={"params": {"rule0": 1}}).id
    a, b = Candidate(p, meta={"guidance": 1.5}), Candidate(p, meta={"guidance": 2.0})
    assert len({Candidate(p).id, a.id, b.id}) == 3
    assert a.model_overrides == {"guidance": 1.5} and Candidate(p).model_overrides == {}
    assert Candidate(p, meta={"guidance": 2}).id == b.id == candidate_id(p, {"guidance": 2.0})
    assert Candidate(p, meta={"guidance": 1.5, "params": {"x": 1}}).id == a.id


class GuidedFake(FakeLM):
    """A FakeLM whose reply depends on the decoding option: with guidance > 1 the pirate rule is kept."""

    def reply(self, messages, params):
        super().reply(messages, params)
        return "Ahoy matey" if float(params.get("guidance", 1.0)) > 1.0 else "Sure thing"


def _fake_task(n=10):
    from promptlearn.task import task_from_dict

    return task_from_dict({"name": "g", "model": "fake/x", "prompt": "Start every reply with Ahoy.",
                           "data": [{"examples": [{"id": f"q{i}", "user": f"Question {i}?"} for i in range(n)]}],
                           "splits": {"train": 0.4, "val": 0.3, "test": 0.3, "seed": 0},
                           "checks": [{"type": "starts_with", "value": "Ahoy"}]})


def test_evaluator_model_overrides_reach_the_model_and_the_cache_key(tmp_path):
    from promptlearn.engine import Evaluator

    task = _fake_task()
    with GuidedFake() as fake:
        ev = Evaluator(task, cache_path=tmp_path / "c.sqlite")
        try:
            exs = task.examples("val")
            guided = ev.evaluate(task.prompt, exs, model_overrides={"guidance": 1.5})
            plain = ev.evaluate(task.prompt, exs)
            again = ev.evaluate(task.prompt, exs, model_overrides={"guidance": 1.5})
        finally:
            ev.close()
    assert guided.score == 1.0 and plain.score == 0.0 and again.score == 1.0
    assert guided.usage.calls == plain.usage.calls == len(exs) and again.usage.cached_calls == len(exs)
    assert [p.get("guidance") for p in fake.params] == [1.5] * len(exs) + [None] * len(exs)
    assert guided.candidate_id != plain.candidate_id and guided.model_overrides == {"guidance": 1.5}


def test_optimizer_can_tune_guidance_through_candidate_meta(tmp_path):
    from promptlearn.optimizers import _PLUGINS, register_optimizer
    from promptlearn.run import optimize
    from promptlearn.store import SQLiteRunStore

    verdicts = []

    class TuneG:
        name = "tune-g-test"

        def run(self, ctx):
            seed = ctx.seed_candidate
            for g in (1.5, 2.0, 1.5):  # same prompt, different decoding; the last one is a duplicate
                verdicts.append(ctx.propose(seed.prompt, (seed.id,), "tune", {"guidance": g}))

    register_optimizer(TuneG)
    try:
        with GuidedFake() as fake:
            res = optimize(_fake_task(), "tune-g-test", budget=200, seed=0, run_dir=tmp_path / "run",
                           cache_path=tmp_path / "c.sqlite", options={"minibatch": 2})
    finally:
        _PLUGINS.pop("tune-g-test", None)
    assert [v.status for v in verdicts] == ["accepted", "promoted", "duplicate"]
    assert verdicts[0].id != verdicts[1].id and verdicts[0].id == verdicts[2].id
    assert res.seed.val == 0.0 and res.best.id == verdicts[0].id and res.best.val == 1.0
    assert res.best.test == 1.0 and res.seed.test == 0.0  # the best candidate is tested with its own g
    store = SQLiteRunStore(res.run_dir, create=False)
    cands = {c["id"]: c for c in store.candidates()}
    assert cands[verdicts[0].id]["meta"] == {"guidance": 1.5} and cands[verdicts[0].id]["prompt"] == res.seed.prompt
    assert len(store.results(verdicts[0].id)) > 0 and len(store.results(verdicts[1].id)) > 0
    assert {p.get("guidance") for p in fake.params} == {None, 1.5, 2.0}


@pytest.mark.model
@requires_model
def test_check_applies_the_guidance_the_prompt_was_scored_with(tmp_path):
    """`check --guidance g` reproduces a guided candidate's score: the prompt decoded with g, the seed without."""
    from promptlearn.engine import Evaluator
    from promptlearn.gate import check_prompt
    from promptlearn.task import task_from_dict

    t = task_from_dict({
        "name": "cfg", "prompt": "You are a friendly pirate assistant. Start every reply with the word Ahoy.",
        "model": {"name": "local/smollm2", "max_tokens": 10},
        "data": [{"examples": [{"user": "Write a haiku about the sea."}, {"user": "What is the capital of Japan?"},
                               {"user": "Name three fruits."}]}],
        "checks": [{"type": "starts_with", "value": "Ahoy", "ignore_case": True, "skip_punctuation": True}],
        "splits": {"train": 0.0, "val": 1.0, "test": 0.0}})
    best = "You are a friendly pirate. Start every reply with the word \"Ahoy\"."
    ev = Evaluator(t, cache_path=tmp_path / "run.sqlite")
    try:  # what the run recorded: the candidate with g = 2, the seed with the task's g = 1
        guided = ev.evaluate(best, t.examples("val"), split="val", model_overrides={"guidance": 2.0})
        plain = ev.evaluate(best, t.examples("val"), split="val")
        seed = ev.evaluate(t.prompt, t.examples("val"), split="val")
    finally:
        ev.close()
    replies = lambda ev_: {k: r.turns[0].reply for k, r in ev_.results.items()}  # noqa: E731
    assert replies(guided) != replies(plain)  # g = 2 changes what SmolLM2 says here, so the test can tell
    fresh = tmp_path / "fresh.sqlite"  # a fresh cache: check runs the model again
    rep = check_prompt(t, best, "val", decoding={"guidance": 2.0}, cache_path=fresh)
    assert rep.score == guided.score and rep.seed_score == seed.score and rep.usage.calls == 6
    assert {f["id"]: f["reply"] for f in rep.failures} == {k: r.turns[0].reply for k, r in guided.results.items()
                                                           if r.score < 1.0}
    assert check_prompt(t, best, "val", cache_path=fresh).score == plain.score


def test_check_refuses_decoding_options_a_remote_model_cannot_apply(tmp_path):
    from promptlearn.errors import ConfigError
    from promptlearn.gate import check_prompt
    from promptlearn.task import task_from_dict

    t = task_from_dict({"name": "x", "prompt": "Say Ahoy.", "model": {"name": "fake/x"},
                        "data": [{"examples": [{"user": "hi"}]}], "checks": [{"type": "contains", "value": "Ahoy"}],
                        "splits": {"train": 0.0, "val": 1.0, "test": 0.0}})
    with pytest.raises(ConfigError, match="need the embedded model"):
        check_prompt(t, "Say Ahoy!", "val", decoding={"guidance": 1.5}, cache_path=tmp_path / "c.sqlite")
    with pytest.raises(ConfigError, match="unknown decoding options"):
        check_prompt(t, "Say Ahoy!", "val", decoding={"top_k": 3}, cache_path=tmp_path / "c.sqlite")
