"""Pay for the system prompt once: run order that maximises prefix reuse without changing results, KV-cache reuse
on the embedded model, cacheable system blocks for Anthropic, and cached input tokens priced at their real price."""

from __future__ import annotations

import random
from typing import Any

import pytest

from promptlearn.engine import Evaluator
from promptlearn.task import task_from_dict
from promptlearn.testing_server import FaultPlan, LoopbackServer

from conftest import requires_model

PROMPT = "You help {team}. Start every reply with Ahoy."


def rows(n: int = 8, turns: int = 1) -> list[dict[str, Any]]:
    """Examples whose rendered system prompts differ ({team}), some multi-turn, ids not in sorted order."""
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"question {i} part {t}"} for t in range(turns + i % 2)]
        out.append({"id": f"ex{(i * 5) % n}", "messages": msgs, "vars": {"team": ["red", "blue", "green"][i % 3]}})
    return out


def make_task(model: Any = "fake/x", *, n: int = 8, turns: int = 1, prompt: str = PROMPT, **extra: Any):
    raw = {"name": "t", "model": model, "prompt": prompt, "data": [{"examples": rows(n, turns), "split": "val"}],
           "checks": [{"type": "starts_with", "name": "ahoy", "value": "Ahoy"}], **extra}
    return task_from_dict(raw)


@pytest.fixture
def evaluator_factory(tmp_path):
    made: list[Evaluator] = []

    def make(task, **kw) -> Evaluator:
        kw.setdefault("cache_path", tmp_path / f"cache{len(made)}.sqlite")
        ev = Evaluator(task, **kw)
        made.append(ev)
        return ev

    yield make
    for ev in made:
        ev.close()


def responder(msgs: list[dict[str, str]]) -> str:
    """Deterministic and history-dependent, so a wrong history or a swapped result would show."""
    ahoy = "Ahoy" if ("red" in msgs[0]["content"]) != ("1" in msgs[-1]["content"]) else "Hello"
    return f"{ahoy} {len(msgs)} {msgs[-1]['content']}"


# ---- order: maximise reuse, never change results ----------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8])
def test_shuffled_input_order_gives_identical_results_and_scores(fake_lm, evaluator_factory, concurrency):
    fake_lm.responder = responder
    task = make_task({"name": "fake/x", "concurrency": concurrency}, turns=2)
    examples = task.examples("val")
    runs = []
    for seed in range(4):
        shuffled = list(examples)
        random.Random(seed).shuffle(shuffled)
        fake_lm.history.clear()
        ev = evaluator_factory(task, use_cache=False)
        res = ev.evaluate(task.prompt, shuffled, split="val")
        assert list(res.results) == [e.id for e in shuffled]  # results come back in the caller's order
        runs.append((res.score, {k: v for k, v in res.results.items()}, res.per_example(), list(fake_lm.history)))
    first = runs[0]
    assert 0 < first[0] < 1
    for score, results, per_example, history in runs[1:]:
        assert score == first[0] and per_example == first[2] and results == first[1]
        if concurrency == 1:
            assert history == first[3]  # the very same request sequence, whatever the input order


def test_concurrency_one_runs_conversations_back_to_back_sorted_by_system_prompt(fake_lm, evaluator_factory):
    fake_lm.responder = responder
    task = make_task({"name": "fake/x", "concurrency": 1}, turns=2)
    ev = evaluator_factory(task, use_cache=False)
    examples = task.examples("val")
    ev.evaluate(task.prompt, list(reversed(examples)), split="val")
    # every conversation's turns follow each other: each request extends the previous one or starts a new chat
    starts = [i for i, h in enumerate(fake_lm.history) if sum(m["role"] == "user" for m in h) == 1]
    assert len(starts) == len(examples)
    for i in range(1, len(fake_lm.history)):
        if i not in starts:
            prev, cur = fake_lm.history[i - 1], fake_lm.history[i]
            assert cur[:len(prev)] == prev and cur[len(prev)]["role"] == "assistant"
    # conversations run sorted by rendered system prompt, then user turns, then id
    firsts = [(fake_lm.history[i][0]["content"], fake_lm.history[i][1]["content"]) for i in starts]
    assert firsts == sorted(firsts)
    systems = [s for s, _ in firsts]
    assert len({s for s in systems}) == 3 and sum(a != b for a, b in zip(systems, systems[1:])) == 2


def test_order_is_canonical_even_under_retries(evaluator_factory):
    """Faults keyed on the request body: retries happen in place, and the request order and results do not
    depend on the input order."""
    seen = []
    for seed in range(3):
        with LoopbackServer(faults=FaultPlan.random(0.4, ("500", "503"), seed=7), retry_after=0.0) as srv:
            task = make_task({"name": "openai/loopback", "api_base": srv.base_url, "concurrency": 1, "retries": 20})
            examples = task.examples("val")
            random.Random(seed).shuffle(examples)
            ev = evaluator_factory(task, use_cache=False)
            res = ev.evaluate(task.prompt, examples, split="val")
            log = [(r["body"]["messages"][-1]["content"], r["fault"]) for r in srv.requests]
        assert res.complete and res.usage.retries > 0
        seen.append((res.per_example(), {k: v.turns for k, v in res.results.items()}, log))
    for other in seen[1:]:
        assert other == seen[0]


# ---- the embedded model reuses the KV cache of the shared prefix ------------------------------------------


@requires_model
@pytest.mark.model
def test_real_model_reuses_system_prefix_across_examples(evaluator_factory):
    from promptlearn.local import get_model

    long_prompt = "You are a careful assistant for a shipping company. " + " ".join(
        f"Rule {i}: answer in plain words and never mention rule {i}." for i in range(25))
    n = 5
    raw = {"name": "t", "model": {"name": "local/smollm2", "max_tokens": 3}, "prompt": long_prompt,
           "data": [{"examples": [{"id": f"q{i}", "user": f"{w} is my question?"}
                                  for i, w in enumerate(["Zebra", "Apple", "Mango", "Kiwi", "Lemon"])],
                     "split": "val"}],
           "checks": [{"type": "min_words", "value": 1}]}
    task = task_from_dict(raw)
    model = get_model("smollm2")
    examples = task.examples("val")
    ev = evaluator_factory(task, use_cache=False)
    order = ev.schedule(task.prompt, examples)
    tokens = [model.tokenize(model.render([{"role": "system", "content": long_prompt},
                                           {"role": "user", "content": ex.turns[0].user}])) for ex in order]
    shared = [_common(a, b) for a, b in zip(tokens, tokens[1:])]
    system_prefix = min(shared)  # template header + system prompt + the user header: what all requests share
    assert system_prefix > len(model.tokenize(long_prompt)) > 250

    model.llama.reset()  # nothing left from earlier tests: the first request pays in full
    res = ev.evaluate(task.prompt, examples, split="val")
    assert res.complete
    u = ev.ledger.total
    assert u.calls == n and u.prompt_tokens == sum(len(t) for t in tokens)
    assert u.cached_prompt_tokens == sum(shared)  # exactly the prefix each request shares with the one before
    assert (n - 1) * system_prefix <= u.cached_prompt_tokens <= (n - 1) * (system_prefix + 8)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
