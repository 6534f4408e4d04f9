"""`mutate`: reflective LLM rewriting (GEPA / ProTeGi style).

The proposer model reads the current best prompt, conversations it failed on the train split and the checks'
feedback, and writes an edited prompt. Needs a capable proposer: with the embedded 135M model most proposals
are rejected or screened out (the engine's guards keep that cheap), which is why `evolve` is the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from promptlearn.optimizers.operators import paraphrase, reflect

if TYPE_CHECKING:
    from promptlearn.loop import RunContext


class ReflectiveMutation:
    name: ClassVar[str] = "mutate"

    def __init__(self, paraphrase_every: int = 4, max_failed_proposals: int = 30):
        self.paraphrase_every = paraphrase_every
        self.max_failed = max_failed_proposals

    def run(self, ctx: RunContext) -> None:
        failed, step = 0, 0
        while failed < self.max_failed:
            step += 1
            parent, _ = ctx.best
            use_paraphrase = self.paraphrase_every and step % self.paraphrase_every == 0
            op = "paraphrase" if use_paraphrase else "reflect"
            child = (paraphrase if use_paraphrase else reflect)(parent.prompt, ctx.rng, ctx=ctx, parent_id=parent.id)
            if child is None and op == "reflect":  # nothing failed on train: paraphrase instead
                op, child = "paraphrase", paraphrase(parent.prompt, ctx.rng, ctx=ctx)
            if child is None:
                failed += 1
                continue
            verdict = ctx.propose(child, (parent.id,), op)
            failed = failed + 1 if verdict.status in ("duplicate", "rejected") else 0
