"""The evaluation engine: run a system prompt over conversations, score every generated turn.

Multi-turn conversations are generated turn by turn with the model's own earlier replies as history (as SysBench
does). Examples of one candidate run back to back in a canonical order (see Evaluator.schedule), so a local model
reuses the KV cache of the shared prefix and the order of the input never matters.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import math
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from promptlearn.cache import ReplyCache
from promptlearn.checks import Check, CheckContext, build_check
from promptlearn.checks.base import is_model_check
from promptlearn.errors import BudgetExceeded, PromptlearnError
from promptlearn.lm import LM, Budget, Ledger, usage_sink
from promptlearn.task import Task, render_prompt
from promptlearn.types import CheckResult, Example, ExampleResult, Message, TurnResult, Usage, candidate_id


@dataclass(frozen=True)
class Evaluation:
    """Scores of one prompt on a set of examples. `complete` is False when a budget stop cut it short."""

    prompt: str  #: the system prompt template that was scored (placeholders unfilled)
    split: str  #: train, val, test, all or custom
    results: Mapping[str, ExampleResult]  #: example id -> replies and check results, in example order
    #: what the ledger spent while this evaluation ran (cached calls cost nothing); with evaluations in flight at
    #: once (parallel search) it includes theirs: per-example costs are in the run store
    usage: Usage = field(default_factory=Usage)
    complete: bool = True  #: False when a budget stop left examples unscored
    stop_reason: str | None = None  #: the budget stop message when incomplete
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  #: decoding options applied (e.g. guidance)
    stop: BudgetExceeded | None = field(default=None, compare=False, repr=False)  #: the budget stop itself

    @property
    def candidate_id(self) -> str:
        return candidate_id(self.prompt, self.model_overrides)

    @property
    def score(self) -> float:
        """Mean example score under the task's `objective.primary` (strict unless the task asks for loose)."""
        return self._mean(lambda e: e.score)

    @property
    def strict_score(self) -> float:
        return self._mean(lambda e: e.strict_score)

    @property
    def loose_score(self) -> float:
        """Like strict_score, but a check with an IFEval loose variant counts its loose result."""
        return self._mean(lambda e: e.loose_score)

    def _mean(self, of: Callable[[ExampleResult], float]) -> float:
        r = list(self.results.values())  # fsum: exactly rounded, so the example order cannot change a score
        return math.fsum(of(e) for e in r) / len(r) if r else 0.0

    def per_example(self) -> dict[str, float]:
        return {k: v.score for k, v in self.results.items()}

    def check_rates(self) -> dict[str, float]:
        """Pass rate of each check over all scored turns (loose where the task's primary score is)."""
        acc: dict[str, list[float]] = {}
        for e in self.results.values():
            for t in e.turns:
                for name, r in t.checks.items():
                    if not r.judge_error:
                        acc.setdefault(_family(name), []).append(r.value(e.primary == "loose"))
        return {k: math.fsum(v) / len(v) for k, v in sorted(acc.items())}

    def judge_errors(self) -> int:
        return sum(r.judge_error for e in self.results.values() for t in e.turns for r in t.checks.values())


def _family(name: str) -> str:
    """Duplicate check names get '#2' suffixes per turn; rates pool them back together."""
    return name.split("#", 1)[0]


# Set for a conversation that holds the lane of a concurrency-1 target: called once its last reply is generated,
# so the next conversation starts while that reply is still being scored.
_generated: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("_generated", default=None)
# Set while a local judge must wait for the target's replies (see aevaluate): (every reply generated, one
# conversation judged at a time), so the judge calls of one conversation follow each other.
_judge_gate: contextvars.ContextVar[tuple[asyncio.Event, asyncio.Lock] | None] = \
    contextvars.ContextVar("_judge_gate", default=None)


class Evaluator:
    """Runs prompts over examples through one target LM (and a judge LM for checklist checks)."""

    #: With a concurrency-1 target, a judge on the in-process model waits until every conversation has its replies
    #: (the judge's prompts would evict the target's prefix from the KV cache); replies and scores are the same.
    defer_local_judge = True

    def __init__(self, task: Task, *, cache: ReplyCache | None = None, ledger: Ledger | None = None,
                 cache_path: str | Path | None = None, use_cache: bool = True, store: Any = None):
        self.task = task
        self.store = store  # a RunStore: results already stored are replayed, never recomputed
        if use_cache and cache is None:
            from promptlearn.store.open import open_cache

            cache = open_cache(cache_path or _task_cache_path(task))
        self.cache = cache if use_cache else None
        b = task.budget
        self.ledger = ledger or Ledger(Budget(b.max_calls, b.max_usd, b.max_tokens, b.max_seconds))
        self.lm = LM(task.model, cache=self.cache, ledger=self.ledger)
        self.judge_lm = LM(task.judge, cache=self.cache, ledger=self.ledger)
        self._targets: dict[str, LM] = {}
        self._checks: dict[str, Check] = {}
        self._accounted: set[tuple[str, str]] = set()
        self._running: dict[tuple[str, str], asyncio.Future[ExampleResult]] = {}  # (candidate, example) in flight
        self._loop = asyncio.new_event_loop()
        self._loop_lock = threading.Lock()

    def close(self) -> None:
        """Close the loop after cancelling what litellm left running on it (its logging worker) and closing the
        direct HTTP client's connections."""
        if not self._loop.is_closed():
            with self._loop_lock:
                http = sys.modules.get("promptlearn.openai_http")
                if http is not None:
                    self._loop.run_until_complete(http.close_sessions())
                pending = asyncio.all_tasks(self._loop)
                for t in pending:
                    t.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()
        if self.cache:
            self.cache.close()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on this evaluator's own loop (litellm's clients stay bound to one loop)."""
        with self._loop_lock:
            return self._loop.run_until_complete(coro)

    def _check(self, spec: Mapping[str, Any]) -> Check:
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in self._checks:
            self._checks[key] = build_check(spec)
        return self._checks[key]

    def evaluate(self, prompt: str, examples: Sequence[Example], *, split: str = "custom", tag: str | None = None,
                 on_example: Callable[[str, ExampleResult], None] | None = None,
                 model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        return self.run(self.aevaluate(prompt, examples, split=split, tag=tag, on_example=on_example,
                                       model_overrides=model_overrides))

    def target(self, model_overrides: Mapping[str, Any] | None = None) -> LM:
        """The target LM, or one with some ModelConfig fields overridden (a candidate's decoding options, e.g.
        guidance). Same cache and ledger; the overrides enter the cache key through LM.params()."""
        if not model_overrides:
            return self.lm
        key = json.dumps(dict(model_overrides), sort_keys=True, default=str)
        if key not in self._targets:
            from promptlearn.task import ModelConfig

            config = ModelConfig.model_validate({**self.task.model.model_dump(), **dict(model_overrides)})
            self._targets[key] = LM(config, cache=self.cache, ledger=self.ledger)
        return self._targets[key]

    async def aevaluate(self, prompt: str, examples: Sequence[Example], *, split: str = "custom",
                        tag: str | None = None,
                        on_example: Callable[[str, ExampleResult], None] | None = None,
                        model_overrides: Mapping[str, Any] | None = None) -> Evaluation:
        """Evaluate every example; a budget stop keeps what finished and marks the evaluation incomplete."""
        before = self.ledger.snapshot()
        results: dict[str, ExampleResult] = {}
        stop: BudgetExceeded | None = None
        # A concurrency-1 target (the embedded model) runs one conversation at a time, so all turns of a
        # conversation follow each other and each request extends the KV cache the previous one left.
        lane = asyncio.Lock() if self.target(model_overrides).config.max_concurrency == 1 else None
        # A judge on the same in-process model would evict the target's prefix from the KV cache between
        # conversations: its calls wait until every conversation of this evaluation has its replies.
        gate = (asyncio.Event(), asyncio.Lock()) if (lane is not None and self.judge_lm.config.is_local
                                                     and self.defer_local_judge) else None
        waiting = [len(examples)]

        def generated() -> None:
            if lane is not None:
                lane.release()
            waiting[0] -= 1
            if gate is not None and waiting[0] == 0:
                gate[0].set()

        async def one(ex: Example) -> None:
            nonlocal stop
            release = _once(generated)
            _generated.set(release)
            _judge_gate.set(gate)
            if lane is not None:
                await lane.acquire()
            try:
                if stop is not None:
                    return
                try:
                    res = await self.memo_example(prompt, ex, tag=tag, model_overrides=model_overrides)
                except BudgetExceeded as e:
                    stop = stop or e
                    return
                results[ex.id] = res
                if on_example:
                    on_example(ex.id, res)
            finally:
                release()

        tasks = [asyncio.ensure_future(one(ex)) for ex in self.schedule(prompt, examples)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        ordered = {ex.id: results[ex.id] for ex in examples if ex.id in results}
        return Evaluation(prompt, split, ordered, self.ledger.snapshot() - before, complete=stop is None,
                          stop_reason=str(stop) if stop else None, model_overrides=dict(model_overrides or {}),
                          stop=stop)

    def schedule(self, prompt: str, examples: Sequence[Example]) -> list[Example]:
        """The order examples run in: by rendered system prompt, then user turns, then id. Requests that share a
        prefix run back to back (a local model reuses its KV cache, API prefix caches stay warm), and the order
        never depends on the input order. Results are keyed by example id, so the order cannot change a score."""
        def key(ex: Example) -> tuple[str, tuple[str, ...], str]:
            return render_prompt(prompt, ex.meta.get("vars", {})), tuple(t.user for t in ex.turns), ex.id

        return sorted(examples, key=key)

    async def memo_example(self, prompt: str, example: Example, *, tag: str | None = None,
                           model_overrides: Mapping[str, Any] | None = None) -> ExampleResult:
        """run_example, but through the run store: a stored result is replayed with its original cost. Two
        evaluations in flight at once (parallel search) share one run of the same prompt on the same example,
        so what a run pays never depends on which of them got there first."""
        if self.store is None:
            return await self.run_example(prompt, example, tag=tag, model_overrides=model_overrides)
        cid = candidate_id(prompt, model_overrides)
        hit = self.store.get_result(cid, example.id)
        if hit is not None:
            res, usage = hit
            if (cid, example.id) not in self._accounted:  # a resumed run pays for its past calls once
                self._accounted.add((cid, example.id))
                self.ledger.replay(usage, tag)
            return dataclasses.replace(res, primary=self.task.spec.objective.primary)
        running = self._running.get((cid, example.id))
        if running is not None:
            try:
                return await asyncio.shield(running)
            except BudgetExceeded:  # the other one's budget ran out: try within this one's
                return await self.memo_example(prompt, example, tag=tag, model_overrides=model_overrides)
        fut: asyncio.Future[ExampleResult] = asyncio.get_running_loop().create_future()
        self._running[(cid, example.id)] = fut
        try:
            res = await self._run_and_store(cid, prompt, example, tag, model_overrides)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # marked retrieved: waiters re-raise it, and no one else has to
            raise
        finally:
            self._running.pop((cid, example.id), None)
        fut.set_result(res)
        return res

    async def _run_and_store(self, cid: str, prompt: str, example: Example, tag: str | None,
                             model_overrides: Mapping[str, Any] | None) -> ExampleResult:
        sink: list[Usage] = []
        token = usage_sink.set(sink)
        try:
            res = await self.run_example(prompt, example, tag=tag, model_overrides=model_overrides)
        finally:
            usage_sink.reset(token)
        total = Usage()
        for u in sink:
            total = total + u
        self.store.put_result(cid, res, total)
        self._accounted.add((cid, example.id))
        return res

    def max_requests(self, examples: Iterable[Example]) -> int:
        """The most requests scoring these examples can make: one per generated turn, plus every try of every
        model check on it (what a proposal stage is granted in parallel search)."""
        n = 0
        for ex in examples:
            for i, turn in enumerate(ex.turns, 1):
                if turn.given is None:
                    n += 1 + sum(_max_check_requests(self._check(spec)) for spec in self.checks_for(ex, i))
        return n

    async def run_example(self, prompt: str, example: Example, *, tag: str | None = None,
                          model_overrides: Mapping[str, Any] | None = None) -> ExampleResult:
        lm = self.target(model_overrides)

        async def reply(history: list[Message], last: bool) -> Any:
            completion = await lm.complete([m.to_dict() for m in history], tag=tag)
            if last and (generated := _generated.get()) is not None:
                generated()
            return completion

        return await self._conversation(prompt, example, reply)

    def score_replies(self, prompt: str, example: Example, replies: Sequence[str]) -> ExampleResult:
        """Score replies made elsewhere (e.g. by DSPy) exactly as `evaluate` scores its own: one reply per
        generated turn of `example`, with the same history, checks, weights and judge."""
        return self.run(self.ascore_replies(prompt, example, replies))

    async def ascore_replies(self, prompt: str, example: Example, replies: Sequence[str]) -> ExampleResult:
        n = sum(t.given is None for t in example.turns)
        if len(replies) != n:
            raise ValueError(f"example {example.id} has {n} generated turn(s), got {len(replies)} replies")
        given = iter(replies)

        async def reply(history: list[Message], last: bool) -> Any:
            from promptlearn.lm import Completion

            return Completion(next(given))

        return await self._conversation(prompt, example, reply)

    async def _conversation(self, prompt: str, example: Example,
                            reply: Callable[[list[Message], bool], Any]) -> ExampleResult:
        """The one path from a conversation to its score: the system prompt rendered for this example, each
        generated turn answered by `reply(history, is_last)` with the earlier replies as history, then every
        turn scored by the checks that apply to it."""
        system = render_prompt(prompt, example.meta.get("vars", {}))
        history: list[Message] = [Message("system", system)] if system else []
        replies: list[tuple[Any, CheckContext, list[Mapping[str, Any]]]] = []
        last = max((i for i, t in enumerate(example.turns, 1) if t.given is None), default=0)
        for i, turn in enumerate(example.turns, 1):
            history.append(Message("user", turn.user))
            if turn.given is not None:
                history.append(Message("assistant", turn.given))
                continue
            completion = await reply(history, i == last)
            ctx = CheckContext(system, tuple(history[:-1]), turn.user, i, example.meta, turn.meta)
            replies.append((completion, ctx, self.checks_for(example, i)))
            history.append(Message("assistant", completion.text))
        # Scores never feed back into the conversation, so every turn is scored once all its replies exist.
        gate = _judge_gate.get()
        primary = self.task.spec.objective.primary
        if gate is not None and any(self._needs_model(specs) for _, _, specs in replies):
            await gate[0].wait()
            async with gate[1]:
                return ExampleResult(example.id, await self._score_turns(replies), primary)
        return ExampleResult(example.id, await self._score_turns(replies), primary)

    def checks_for(self, example: Example, turn_index: int) -> list[Mapping[str, Any]]:
        """The check specs that apply to one turn (1-based, counting every user turn): the example's, the
        turn's own and the task's, less those whose `turns:` leave this turn out (-1 is the last turn)."""
        turn = example.turns[turn_index - 1]
        n = len(example.turns)
        return [spec for spec in list(example.checks) + list(turn.checks) + list(self.task.checks)
                if applies_to_turn(spec, turn_index, n)]

    async def _score_turns(self, replies: Sequence[tuple[Any, CheckContext, list[Mapping[str, Any]]]]
                           ) -> tuple[TurnResult, ...]:
        return tuple([TurnResult(completion.text, await self._score(completion.text, ctx, specs), None,
                                 completion.completion_tokens) for completion, ctx, specs in replies])

    def _needs_model(self, specs: Iterable[Mapping[str, Any]]) -> bool:
        return any(is_model_check(self._check(spec)) for spec in specs)

    async def _score(self, reply: str, ctx: CheckContext, specs: Iterable[Mapping[str, Any]]) -> dict[str, CheckResult]:
        """reply -> one result per check, named uniquely ('#2' for a repeated name), weighted; a check that
        raises scores 0 with the error as its feedback."""
        out: dict[str, CheckResult] = {}
        weights = self.task.spec.objective.weights
        for spec in specs:
            check = self._check(spec)
            name, n = check.name, 2
            while name in out:
                name, n = f"{check.name}#{n}", n + 1
            try:
                if is_model_check(check):
                    result = await check.ascore(reply, ctx, self.judge_lm)
                else:
                    result = check.score(reply, ctx)
            except (BudgetExceeded, PromptlearnError):
                raise
            except Exception as e:  # noqa: BLE001 - a broken check scores 0 with the error as feedback
                result = CheckResult(0.0, f"check raised {type(e).__name__}: {e}")
            weight = float(spec.get("weight", 1.0)) * float(weights.get(check.name, 1.0))
            out[name] = result if weight == result.weight else dataclasses.replace(result, weight=weight)
        return out


def _max_check_requests(check: Check) -> int:
    """Model calls one turn's check can make: samples x tries for a judge, 0 for a rule."""
    if not is_model_check(check):
        return 0
    return max(1, int(getattr(check, "samples", 1))) * (1 + max(0, int(getattr(check, "retries", 0))))


def applies_to_turn(spec: Mapping[str, Any], turn_index: int, n_turns: int) -> bool:
    """Whether a check spec's `turns:` (1-based turn numbers; negative counts from the end) includes a turn."""
    turns = spec.get("turns")
    if turns is None:
        return True
    turns = [turns] if isinstance(turns, int) else turns
    return any(t == turn_index or (t < 0 and n_turns + 1 + t == turn_index) for t in turns)


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return call


def _task_cache_path(task: Task) -> str | Path:
    from promptlearn.store.url import is_db_url

    if is_db_url(task.spec.cache):  # a team's shared cache named in the task file
        return str(task.spec.cache)
    if task.spec.cache:
        base = task.path.parent if task.path else Path(".")
        return base / task.spec.cache
    from promptlearn.cache import default_cache_path

    return default_cache_path()


def evaluate(task: Task | str | Path, prompt: str | None = None, *, split: str = "val",
             cache_path: str | Path | None = None, use_cache: bool = True) -> Evaluation:
    """Score one system prompt (the task's seed prompt by default) on a split of the task's examples."""
    from promptlearn.task import load_task

    task = task if isinstance(task, Task) else load_task(task)
    task.require(split)
    task.warn()
    ev = Evaluator(task, cache_path=cache_path, use_cache=use_cache)
    try:
        return ev.evaluate(prompt if prompt is not None else task.prompt, task.examples(split), split=split)
    finally:
        ev.close()
