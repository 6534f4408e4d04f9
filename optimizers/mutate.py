"""`mutate`: reflective LLM rewriting (GEPA / ProTeGi style).

The proposer model reads the current best prompt, conversations it failed on the train split and the checks'
feedback, and writes an edited prompt. Needs a capable proposer: with the embedded 135M model most proposals
are rejected or screened out (the engine's guards keep that cheap), which is why `evolve` is the default.
Every other reflection asks for one instruction line to add instead of a whole rewrite (`reflect_line`): a small
proposer rewrites a prompt into noise that drops the rule, but one sentence from the failures' feedback keeps
everything the prompt said (bench suite, seed 0: +1.0 points, sentences 0.917 -> 1.000, against +0.0 with
whole rewrites only; the accepted line was no instruction but "A: A king is looking for a king.", which made
replies shorter: SmolLM2 mostly answers the failing conversations instead). `line_every: 0` turns it off. Each
round asks the proposer for `ctx.parallel` edits of the best at once (each from its own sample of failures) and
proposes them together; with parallel 1 it is the serial search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from promptlearn.context import Proposal, Request
from promptlearn.optimizers.operators import (add_line, extract_prompt, paraphrase_request, reflect_line_request,
                                              reflect_request)

if TYPE_CHECKING:
    from promptlearn.context import OptimizerContext


class ReflectiveMutation:
    name: ClassVar[str] = "mutate"
    #: race rewrites on val (promptlearn.loop.Options.race): a rewrite that cannot win costs a few val calls
    #: instead of the whole split, and a rewrite it drops could not have been accepted (tests/test_race.py)
    loop_defaults: ClassVar[Mapping[str, Any]] = {"race": True}

    def __init__(self, paraphrase_every: int = 4, max_failed_proposals: int = 30, line_every: int = 2):
        from promptlearn.errors import TaskError

        for name, value in (("paraphrase_every", paraphrase_every), ("line_every", line_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TaskError(f"optimizer.{name} must be a whole number >= 0, not {value!r}",
                                field=f"optimizer.{name}", fix=f"{name}: 0 turns it off")
        self.paraphrase_every = paraphrase_every
        self.line_every = line_every
        self.max_failed = max_failed_proposals

    def operator(self, step: int) -> str:
        """paraphrase every `paraphrase_every`-th step, else the one-line fix every `line_every`-th reflection."""
        if self.paraphrase_every and step % self.paraphrase_every == 0:
            return "paraphrase"
        return "reflect_line" if self.line_every and step % self.line_every == 1 % self.line_every else "reflect"

    def run(self, ctx: OptimizerContext) -> None:
        failed, step = 0, 0
        while failed < self.max_failed:
            parent, _ = ctx.best
            ops: list[str] = []
            requests: list[Request | None] = []
            for _ in range(min(ctx.parallel, self.max_failed - failed)):
                step += 1
                op = self.operator(step)
                make = {"paraphrase": paraphrase_request, "reflect": reflect_request,
                        "reflect_line": reflect_line_request}[op]
                request = make(parent.prompt, ctx.rng, ctx=ctx, parent_id=parent.id)
                if request is None and op != "paraphrase":  # nothing failed on train: paraphrase instead
                    op, request = "paraphrase", paraphrase_request(parent.prompt, ctx.rng, ctx=ctx)
                ops.append(op)
                requests.append(request)
            children = [add_line(parent.prompt, t) if op == "reflect_line" else extract_prompt(t)
                        for op, t in zip(ops, ctx.generate_many(requests))]
            retry = [i for i, (op, r, c) in enumerate(zip(ops, requests, children))
                     if c is None and op == "reflect" and r is not None]  # an unusable rewrite: paraphrase
            if retry:
                again = [paraphrase_request(parent.prompt, ctx.rng, ctx=ctx) for _ in retry]
                for i, text in zip(retry, ctx.generate_many(again)):
                    ops[i], children[i] = "paraphrase", extract_prompt(text)
            proposals = []
            for op, child in zip(ops, children):
                if child is None:
                    failed += 1
                else:
                    proposals.append(Proposal(child, (parent.id,), op))
            for verdict in ctx.propose_many(proposals) if proposals else []:
                failed = failed + 1 if verdict.status in ("duplicate", "rejected") else 0
