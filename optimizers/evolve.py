"""`evolve`: a population with GEPA-style Pareto parent selection, crossover and mutation operators.

Parents are drawn in proportion to how many val examples they are best on (so specialists survive next to the
overall best); operators are drawn by their track record (promotions per try), so what works here gets used.
Each round draws `ctx.parallel` children from the pool as it stands, sends the LLM operators' proposer requests
together and proposes the children together (ctx.propose_many); with parallel 1 it is the serial search.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from promptlearn.context import Proposal, Request
from promptlearn.optimizers.operators import LLM_OPERATORS, MUTATIONS, REQUESTS, crossover, extract_prompt

if TYPE_CHECKING:
    from promptlearn.context import OptimizerContext


class Evolution:
    name: ClassVar[str] = "evolve"

    def __init__(self, crossover_rate: float = 0.2, llm_weight: float = 0.3, operators: list[str] | None = None,
                 max_failed_proposals: int = 60):
        unknown = set(operators or ()) - set(MUTATIONS)
        if unknown:
            from promptlearn.errors import TaskError

            raise TaskError(f"unknown operators {sorted(unknown)}", field="optimizer.operators",
                            fix="choose from " + ", ".join(MUTATIONS))
        self.ops = list(operators or MUTATIONS)
        self.crossover_rate = crossover_rate
        self.llm_weight = llm_weight
        self.max_failed = max_failed_proposals
        self.tries: Counter[str] = Counter()
        self.wins: Counter[str] = Counter()
        self.failed_in_a_row = 0

    def run(self, ctx: OptimizerContext) -> None:
        while self.failed_in_a_row < self.max_failed:
            children = self.draw(ctx, ctx.parallel)
            requests = [c if isinstance(c, Request) else None for _, _, c in children]
            replies = ctx.generate_many(requests) if any(requests) else []
            proposals = []
            for i, (parents, op, child) in enumerate(children):
                text = extract_prompt(replies[i]) if isinstance(child, Request) else child
                if text is None:
                    self.failed_in_a_row += 1
                    continue
                proposals.append(Proposal(text, parents, op))
            if not proposals:
                continue
            for verdict, p in zip(ctx.propose_many(proposals), proposals):
                if verdict.status in ("duplicate", "rejected"):
                    self.failed_in_a_row += 1
                    continue
                self.failed_in_a_row = 0
                if verdict.status in ("promoted", "accepted"):
                    self.wins[p.operator] += 1 + (verdict.status == "accepted")

    def draw(self, ctx: OptimizerContext, n: int) -> list[tuple[tuple[str, ...], str, str | Request]]:
        """Up to n children of the pool as it stands: (parents, operator, prompt or proposer request). A draw
        that gives no child counts as a failed proposal."""
        out: list[tuple[tuple[str, ...], str, str | Request]] = []
        while len(out) < n and self.failed_in_a_row < self.max_failed:
            pool = ctx.pool
            child: str | Request | None
            if len(pool) >= 2 and ctx.rng.random() < self.crossover_rate:
                a, b = self.pick_parent(ctx), self.pick_parent(ctx)
                if a.id == b.id:
                    continue
                parents: tuple[str, ...] = (a.id, b.id)
                child, op = crossover(a.prompt, b.prompt, ctx.rng), "crossover"
            else:
                parent = self.pick_parent(ctx)
                op = self.pick_operator(ctx)
                make = REQUESTS.get(op, MUTATIONS[op])
                child = make(parent.prompt, ctx.rng, protected=ctx.task.spec.protected,
                             passing=ctx.passing(k=8) if op in ("add_example", "opening_template") else (),
                             ctx=ctx, parent_id=parent.id)
                parents = (parent.id,)
            self.tries[op] += 1
            if child is None:
                self.failed_in_a_row += 1
                continue
            out.append((parents, op, child))
        return out

    def pick_parent(self, ctx: Any) -> Any:
        """Pareto selection: a candidate's weight is the number of val examples it is best on."""
        pool = ctx.pool
        if len(pool) == 1:
            return pool[0]
        wins: Counter[str] = Counter()
        for ex in ctx.val:
            scores = {c.id: ctx.val_eval(c.id).results[ex.id].score for c in pool
                      if ex.id in ctx.val_eval(c.id).results}
            if not scores:
                continue
            top = max(scores.values())
            for cid, s in scores.items():
                if s == top:
                    wins[cid] += 1
        ids = [c.id for c in pool]
        weights = [wins[c] + (3 if c == ctx.best_id else 0) + 0.1 for c in ids]
        chosen = ctx.rng.choices(ids, weights=weights, k=1)[0]
        return next(c for c in pool if c.id == chosen)

    def pick_operator(self, ctx: Any) -> str:
        weights = [(1 + self.wins[op]) / (1 + 0.5 * self.tries[op]) * (self.llm_weight if op in LLM_OPERATORS
                                                                      else 1.0) for op in self.ops]
        return ctx.rng.choices(self.ops, weights=weights, k=1)[0]
