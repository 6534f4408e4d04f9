"""`dspy`: compile the system prompt with DSPy's teleprompters (COPRO, MIPROv2, GEPA) on promptlearn's engine.

Why it is built this way:
- `PromptAdapter` sends the signature's instruction as the plain system message and the user turn verbatim, and
  takes the raw reply as the output: DSPy scores exactly the prompt the app will send. Demos become "Example:"
  text appended to the system prompt, the same way in the prompts proposed afterwards.
- `EngineLM` routes every DSPy call through `ctx.complete` (cache, ledger, hard budget, run store); target
  requests are byte-identical to the engine's, so re-scoring DSPy's prompts hits the cache.
- The metric is promptlearn's checks. DSPy never decides: its pick and the other prompts it scored are proposed
  through `ctx.propose`, best first, and the engine screens, promotes and accepts them as for any optimizer.
- DSPy keeps its own loop (its teleprompters are serial), so `optimizer.parallel` does not apply to the compile;
  what it found is proposed together (ctx.propose_many), so scoring that is in flight at once.
- Only the OptimizerContext is used (ctx.complete for the calls, ctx.score_replies for the metric, ctx.budget),
  never the evaluator, the store or the ledger.
- DSPy scores errors as failed examples, so the bridge remembers the first budget stop, fails every later call at
  once and re-raises the stop after the compile. DSPy gets `compile_share` of the calls left; the rest pays for
  scoring what it found.
- Only single-turn examples are used (a DSPy Predict call is one user message); multi-turn ones are skipped.
- The proposer's questions go to DSPy's ChatAdapter, and a prose answer to a one-field question is read as that
  field (PromptAdapter.plain_field), GEPA's proposer included: a small proposer does not write DSPy's formats.
"""

from __future__ import annotations

import asyncio
import re
import threading
import warnings
from collections import Counter
from typing import Any, ClassVar, Sequence

import dspy
from dspy.utils.exceptions import AdapterParseError

from promptlearn.errors import BudgetExceeded, ModelError, TaskError
from promptlearn.context import OptimizerContext, Proposal
from promptlearn.lm import Completion
from promptlearn.loop import StopRun
from promptlearn.task import render_prompt
from promptlearn.types import ExampleResult

TELEPROMPTERS = ("copro", "mipro", "gepa")


class CompileBudget(Exception):
    """DSPy used its share of the call budget: stop compiling and propose what it scored."""


def candidate_prompt(text: str, demos: Sequence[Any] = ()) -> str:
    """The system prompt a DSPy predictor stands for: its instruction, then each demo as plain text."""
    shots = [f"Example:\nUser: {d.get('user')}\nAssistant: {d.get('reply')}" for d in demos or ()
             if d.get("user") is not None and d.get("reply") is not None]
    return "\n\n".join([text.rstrip()] + shots) if shots else text


class PromptAdapter(dspy.Adapter):
    """Target calls: [system: instruction (+ demos), user: the turn verbatim] -> the reply text.

    Any other signature is a teleprompter talking to the proposer; it goes to DSPy's ChatAdapter (without the
    JSON fallback, which would cost a second call for a reply that was not in the format anyway). A reply that is
    not in ChatAdapter's field format is read as plain text when the signature asks for one field only, as the
    target's replies are: a small proposer answers MIPROv2's dataset, program and instruction questions (one
    field each) in prose, and without this every MIPROv2 compile on the embedded model ended at its first
    proposer call (bench suite: 23-45 of 300 calls, no instruction but the seed's).
    """

    def __init__(self) -> None:
        super().__init__()
        self.fallback = dspy.ChatAdapter(use_json_adapter_fallback=False)
        self.last = threading.local()  # the candidate prompt of this thread's latest target call (for the metric)

    @staticmethod
    def is_target(signature: Any) -> bool:
        return list(signature.output_fields) == ["reply"] and "user" in signature.input_fields

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list, inputs: dict) -> list:
        if not self.is_target(signature):
            try:
                return self.fallback(lm, lm_kwargs, signature, demos, inputs)
            except AdapterParseError as e:
                return [self.plain_field(signature, lm_kwargs, e)]
        self.last.prompt = candidate_prompt(instruction(signature), demos)
        outputs = lm(messages=self.format(signature, demos, inputs), **lm_kwargs)
        return [self.parse(signature, _text(o)) for o in outputs]

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list, inputs: dict) -> list:
        if not self.is_target(signature):
            try:
                return await self.fallback.acall(lm, lm_kwargs, signature, demos, inputs)
            except AdapterParseError as e:
                return [self.plain_field(signature, lm_kwargs, e)]
        self.last.prompt = candidate_prompt(instruction(signature), demos)
        outputs = await lm.acall(messages=self.format(signature, demos, inputs), **lm_kwargs)
        return [self.parse(signature, _text(o)) for o in outputs]

    @staticmethod
    def plain_field(signature: Any, lm_kwargs: dict[str, Any], error: AdapterParseError) -> dict[str, Any]:
        """A one-field proposer reply that missed ChatAdapter's format, as that field's text (its field headers
        dropped); any other parse failure (several fields, a field that is not text, several samples, an empty
        reply) is raised as it was."""
        text = re.sub(r"\[\[ ## \w+ ## \]\]", "", str(error.lm_response or "")).strip()
        fields = list(signature.output_fields.items())
        if len(fields) != 1 or fields[0][1].annotation is not str or lm_kwargs.get("n", 1) != 1 or not text:
            raise error
        return {fields[0][0]: text}

    def format(self, signature: Any, demos: list, inputs: dict) -> list[dict[str, str]]:
        system = render_prompt(candidate_prompt(instruction(signature), demos), inputs.get("vars") or {})
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": str(inputs["user"])}]

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        return {"reply": completion or ""}


def instruction(signature: Any) -> str:
    """The signature's instruction; DSPy's stand-in for an empty one ("Given the fields ...") is empty here."""
    text = signature.instructions
    ins, outs = (", ".join(f"`{f}`" for f in fields) for fields in (signature.input_fields, signature.output_fields))
    return "" if text == f"Given the fields {ins}, produce the fields {outs}." else text


def _text(output: Any) -> str:
    return (output.get("text") if isinstance(output, dict) else output) or ""


class EngineLM(dspy.BaseLM):
    """A DSPy LM whose calls are `ctx.complete` calls (cache, ledger, hard budget, kept for resume).

    The target ignores DSPy's sampling arguments: it answers exactly as the app's model would. The proposer takes
    DSPy's temperature (teleprompters pick it on purpose) and `n` (samples 0..n-1 of that request).
    """

    def __init__(self, bridge: "_Bridge", config: Any, tag: str, *, target: bool):
        super().__init__(model=f"promptlearn/{config.name}", temperature=config.temperature,
                         max_tokens=config.max_tokens, cache=False, num_retries=0)
        self.bridge, self.config, self.tag, self.target = bridge, config, tag, target

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> dict[str, Any]:
        kw = {**self.kwargs, **kwargs}
        msgs = [{"role": m["role"], "content": _content(m["content"])}
                for m in (messages or [{"role": "user", "content": prompt}])]
        n = int(kw.get("n") or 1)
        t = kw.get("temperature")
        temperature = None if self.target or t is None else float(t)
        first = 0 if self.target else int(kw.get("rollout_id") or 0) * n
        done = [self.bridge.call(msgs, sample=first + i, tag=self.tag, target=self.target, temperature=temperature)
                for i in range(n)]
        p, c = sum(x.prompt_tokens for x in done), sum(x.completion_tokens for x in done)
        return {"model": self.model, "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": x.text}}
                            for i, x in enumerate(done)]}

    async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.forward, prompt, messages, **kwargs)


def _content(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


class _Bridge:
    """Runs DSPy's calls through the context (ctx.complete).

    Each call is kept in the run store, so a resumed run replays it and pays its original cost once (the ledger
    stays right across resume). The first stop is remembered and re-raised on every later call, so DSPy cannot
    score a stop as a failed example and carry on.
    """

    def __init__(self, ctx: Any, limit: int | None):
        self.ctx, self.limit = ctx, limit
        self.stop: BaseException | None = None
        self.fatal = False  # budget/stop-file stops and target failures end the run; the rest end the compile

    def guard(self) -> None:
        if self.stop is not None:
            raise self.stop
        try:
            self.ctx.check_stop()
            if self.limit is not None and self.ctx.budget.calls >= self.limit:
                raise CompileBudget(f"DSPy used its share of the budget ({self.limit} calls)")
        except (StopRun, BudgetExceeded, CompileBudget) as e:
            self.remember(e, fatal=not isinstance(e, CompileBudget))
            raise

    def remember(self, e: BaseException, *, fatal: bool) -> None:
        if self.stop is None:
            self.stop, self.fatal = e, fatal

    def call(self, messages: list[dict[str, str]], *, sample: int, tag: str, target: bool,
             temperature: float | None) -> Completion:
        self.guard()
        try:
            return self.ctx.complete(messages, model="target" if target else "proposer", sample=sample,
                                     temperature=temperature, tag=tag)
        except (StopRun, BudgetExceeded) as e:
            self.remember(e, fatal=True)
            raise
        except ModelError as e:  # a proposer that fails ends the compile; a target that fails ends the run
            self.remember(e, fatal=target)
            raise


class DSPyOptimizer:
    name: ClassVar[str] = "dspy"

    def __init__(self, teleprompter: str = "copro", breadth: int = 4, depth: int = 2, init_temperature: float = 1.4,
                 auto: str | None = None, num_candidates: int = 4, num_trials: int = 8, max_metric_calls: int = 100,
                 max_bootstrapped_demos: int = 2, max_labeled_demos: int = 0, num_threads: int = 1,
                 max_proposals: int = 8, compile_share: float = 0.7):
        if teleprompter not in TELEPROMPTERS:
            raise TaskError(f"unknown teleprompter '{teleprompter}'", field="optimizer.teleprompter",
                            fix="use one of " + ", ".join(TELEPROMPTERS))
        if teleprompter == "copro" and breadth < 2:
            raise TaskError("COPRO needs breadth >= 2", field="optimizer.breadth", fix="set breadth: 2 or more")
        if not 0 < compile_share <= 1:
            raise TaskError("compile_share must be in (0, 1]", field="optimizer.compile_share", fix="e.g. 0.7")
        self.teleprompter, self.breadth, self.depth = teleprompter, breadth, depth
        self.init_temperature, self.auto, self.num_candidates = init_temperature, auto, num_candidates
        self.num_trials, self.max_metric_calls, self.num_threads = num_trials, max_metric_calls, num_threads
        self.max_bootstrapped_demos, self.max_labeled_demos = max_bootstrapped_demos, max_labeled_demos
        self.max_proposals, self.compile_share = max_proposals, compile_share
        self.scored: dict[str, dict[str, float]] = {}  # candidate prompt -> example id -> metric score
        self.verdicts: Counter[str] = Counter()
        self.compile_error: str | None = None

    # ---- the run --------------------------------------------------------------------------------------------------
    def run(self, ctx: OptimizerContext) -> None:
        self.ctx, self.examples = ctx, {e.id: e for e in ctx.train + ctx.val}
        self.with_vars = bool(ctx.task.placeholders)
        train, val = self._dspy_examples(ctx.train), self._dspy_examples(ctx.val)
        if not train:
            ctx.log("dspy", {"skipped": "no single-turn train examples"})
            return
        b = ctx.budget
        limit = None if b.max_calls is None else b.calls + int((b.max_calls - b.calls) * self.compile_share)
        self.bridge = _Bridge(ctx, limit)
        self.adapter = PromptAdapter()
        target = EngineLM(self.bridge, ctx.task.model, f"dspy-{self.teleprompter}", target=True)
        proposer = EngineLM(self.bridge, ctx.task.proposer, "proposer", target=False)
        program = None
        with warnings.catch_warnings(), dspy.context(lm=target, adapter=self.adapter, max_errors=1,
                                                      num_threads=self.num_threads, disable_history=True):
            warnings.simplefilter("ignore", DeprecationWarning)  # DSPy 3.4 deprecates forward()-style LMs
            try:
                program = self._compile(target, proposer, train, val)
            except AdapterParseError as e:  # the proposer did not answer in DSPy's field format
                self.compile_error = f"proposer reply not parsable: {str(e).splitlines()[0][:200]}"
            except Exception:  # DSPy turns a stop into its own errors; the bridge knows
                if self.bridge.stop is None:
                    raise
        if self.bridge.stop is not None:
            self.compile_error = self.compile_error or f"{type(self.bridge.stop).__name__}: {self.bridge.stop}"
            if self.bridge.fatal:
                self._log(0)
                raise self.bridge.stop
            program = None  # a compile cut short picked its best from failure-scored runs
        self._propose(ctx, program)

    def _compile(self, target: EngineLM, proposer: EngineLM, train: list, val: list) -> Any:
        fields: dict[str, Any] = {"user": (str, dspy.InputField(desc="the user's message"))}
        if self.with_vars:
            fields["vars"] = (dict, dspy.InputField(desc="values for the {placeholders} of the instruction"))
        fields["reply"] = (str, dspy.OutputField(desc="the assistant's reply"))
        student = dspy.Predict(dspy.Signature(fields, self.ctx.task.prompt))
        threads, seed = self.num_threads, self.ctx.seed
        if self.teleprompter == "copro":
            tp = dspy.COPRO(prompt_model=proposer, metric=self.metric, breadth=self.breadth, depth=self.depth,
                            init_temperature=self.init_temperature)
            return tp.compile(student, trainset=train, eval_kwargs={"num_threads": threads, "display_progress": False})
        if self.teleprompter == "mipro":
            auto = self.auto
            tp = dspy.MIPROv2(self.metric, prompt_model=proposer, task_model=target, auto=auto,
                              num_candidates=None if auto else self.num_candidates, num_threads=threads,
                              max_errors=1, seed=seed, max_bootstrapped_demos=self.max_bootstrapped_demos,
                              max_labeled_demos=self.max_labeled_demos, verbose=False)
            valset = val or None
            size = len(valset) if valset else max(1, int(len(train) * 0.8))
            return tp.compile(student, trainset=train, valset=valset, num_trials=None if auto else self.num_trials,
                              minibatch=size > 35, minibatch_size=min(35, size))
        from dspy.teleprompt.gepa import InstructionProposer

        # GEPA's proposer asks through its own adapter (JSON by default); ours reads a prose reply as the one
        # field it asked for (PromptAdapter.plain_field), as for MIPROv2's proposer
        tp = dspy.GEPA(self.metric, max_metric_calls=self.max_metric_calls, reflection_lm=proposer,
                       instruction_proposer=InstructionProposer(adapter=self.adapter),
                       num_threads=threads, seed=seed,  # GEPA catches errors: stop it when the bridge has stopped
                       gepa_kwargs={"stop_callbacks": lambda state: self.bridge.stop is not None})
        return tp.compile(student, trainset=train, valset=val or None)

    def _dspy_examples(self, examples: Sequence[Any]) -> list[Any]:
        out = []
        for e in examples:
            if len(e.turns) != 1 or e.turns[0].given is not None:
                continue
            fields = {"user": e.turns[0].user, "pl_id": e.id}
            if self.with_vars:
                fields["vars"] = dict(e.meta.get("vars", {}))
            out.append(dspy.Example(**fields).with_inputs(*(["user", "vars"] if self.with_vars else ["user"])))
        return out

    # ---- the metric: promptlearn's checks --------------------------------------------------------------------------
    def metric(self, gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
               pred_trace: Any = None) -> Any:
        """Score one reply with the example's checks; GEPA also gets the checks' feedback text."""
        ex = self.examples[gold.pl_id]
        prompt = getattr(self.adapter.last, "prompt", self.ctx.task.prompt)
        result = self.score(prompt, ex, str(getattr(pred, "reply", "") or ""))
        if pred_name is None:  # GEPA's feedback calls re-score old traces: their prompt is not `last`
            self.scored.setdefault(prompt, {})[ex.id] = result.score
        if self.teleprompter == "gepa":
            return dspy.Prediction(score=result.score, feedback=result.feedback or "Every check passed.")
        return result.passed if trace is not None else result.score  # bootstrapping wants pass/fail

    def score(self, prompt: str, ex: Any, reply: str) -> ExampleResult:
        """What the engine scores for this reply to the example's first turn (the engine's own scoring path)."""
        try:
            return self.ctx.score_replies(prompt, ex, [reply])
        except (BudgetExceeded, ModelError) as e:  # a judge check's call
            self.bridge.remember(e, fatal=True)
            raise

    # ---- proposals ------------------------------------------------------------------------------------------------
    def ranked(self, program: Any) -> list[tuple[str, dict[str, Any]]]:
        """DSPy's pick first, then every prompt it scored by mean metric score (more examples first on ties)."""

        def meta(prompt: str) -> dict[str, Any]:
            s = self.scored.get(prompt)
            return {"dspy_score": round(sum(s.values()) / len(s), 4), "dspy_examples": len(s)} if s else {}

        rows = sorted(self.scored, key=lambda p: (-meta(p)["dspy_score"], -meta(p)["dspy_examples"]))
        out = [(p, meta(p)) for p in rows]
        if program is not None:
            pred = program.predictors()[0]
            pick = candidate_prompt(instruction(pred.signature), pred.demos)
            out.insert(0, (pick, {**meta(pick), "dspy_pick": True}))
        return out

    def _propose(self, ctx: Any, program: Any) -> None:
        seed = ctx.seed_candidate
        seen: set[str] = {seed.prompt.strip()}
        picked: list[Proposal] = []
        for prompt, meta in self.ranked(program):
            if len(picked) >= self.max_proposals:
                break
            if prompt.strip() not in seen:
                seen.add(prompt.strip())
                picked.append(Proposal(prompt, (seed.id,), f"dspy-{self.teleprompter}", meta))
        sent = 0
        try:
            for start in range(0, len(picked), ctx.parallel):
                batch = picked[start:start + ctx.parallel]
                sent += len(batch)
                for verdict in ctx.propose_many(batch):
                    self.verdicts[verdict.status] += 1
        finally:
            self._log(sent)

    def _log(self, sent: int) -> None:
        self.ctx.log("dspy", {"teleprompter": self.teleprompter, "scored_prompts": len(self.scored),
                                          "proposed": sent, "verdicts": dict(self.verdicts),
                                          "compile_error": self.compile_error})
