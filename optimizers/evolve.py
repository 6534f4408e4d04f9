"""`evolve`: a population with GEPA-style Pareto parent selection, crossover and mutation operators.

Parents are drawn in proportion to how many val examples they are best on (so specialists survive next to the
overall best); operators are drawn by their track record (promotions per try), so what works here gets used.
The first proposals follow an opening book (what a person tries first: state the failing check's rule in the
checker's own words, quote the literal format, put the rule first and last, show a worked example, an explicit
"Every reply must" line, and at a floor the model's own failing replies fixed by the checks), each once,
before the track record takes over (bench suite: with state_check first the mean test gain over the 8 headroom
rule tasks went from +2.8 to +5.9 points at 300 calls, seed 0). When no reply has passed every check yet,
add_example has no material: while the best prompt passes no val example, fixed_example shows the model its
own failing replies repaired by the checks (checks.repairs; off that floor it is neither played nor drawn), and
for a local model the search also harvests passing replies by decoding the best prompt with classifier-free
guidance on a few train examples (kept only when they pass every check).
Proposals are raced on val (Options.race, evolve's loop default), so a loser costs a few calls and the budget buys
more proposals; on a local model the track record starts from the operator prior learned on the rule suite.
Each round draws `ctx.parallel` children from the pool as it stands, sends the LLM operators' proposer requests
together and proposes the children together (ctx.propose_many); with parallel 1 it is the serial search.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from promptlearn.context import Proposal, Request
from promptlearn.metrics import has_loop
from promptlearn.optimizers.operators import (LLM_OPERATORS, MUTATIONS, REQUESTS, affordable_moves, at_floor,
                                              crossover, extract_prompt)

if TYPE_CHECKING:
    from promptlearn.context import OptimizerContext

OPENING = ("state_check", "quote_format", "sandwich", "add_example", "fixed_example", "every_reply", "quote_literal")
DEMO_OPERATORS = ("add_example", "opening_template")
#: played only while the best prompt passes no val example: at that floor add_example has no material, and a
#: repaired reply is the one worked example there is (rule suite: title and bullets, the two rules at a floor).
#: Off the floor they take no slot in the book and no share of the draws, so there evolve searches as before.
FLOOR_OPERATORS = ("fixed_example",)
HARVEST_GUIDANCE = (2.0, 3.0)  # one strength per harvest round; 2 was the best single strength on pirate
GUIDANCE = (1.5, 2.0, 2.5)  # strengths the `guidance` operator tries when search_guidance is on
PRIOR_STRENGTH = 4.0  # an operator prior weighs as much as this many tries of the operator on this task


class Evolution:
    name: ClassVar[str] = "evolve"
    #: race proposals on val (promptlearn.loop.Options.race): with the operator prior, +9.7 points on the rule
    #: suite (7 improved, 0 worse) against +8.7 (5 improved) for the prior alone, seed 0; over seeds 0-1 +8.3
    #: against +4.9 for evolve with neither
    loop_defaults: ClassVar[Mapping[str, Any]] = {"race": True}

    def __init__(self, crossover_rate: float = 0.2, llm_weight: float = 0.3, operators: list[str] | None = None,
                 max_failed_proposals: int = 60, opening: Sequence[str] | None = None, harvest: int = 2,
                 search_guidance: bool = False, operator_prior: str | bool | Mapping[str, Any] | None = "auto"):
        from promptlearn.errors import TaskError

        unknown = set(operators or ()) - set(MUTATIONS)
        if unknown:
            raise TaskError(f"unknown operators {sorted(unknown)}", field="optimizer.operators",
                            fix="choose from " + ", ".join(MUTATIONS))
        unknown = set(opening or ()) - set(MUTATIONS)
        if unknown:
            raise TaskError(f"unknown opening operators {sorted(unknown)}", field="optimizer.opening",
                            fix="choose from " + ", ".join(MUTATIONS) + " (or [] for none)")
        self.ops = list(operators or MUTATIONS)
        self.prior_on_local = operator_prior == "auto"  # the suite's table, if the target is a local model (run)
        self.prior = {} if self.prior_on_local else operator_prior_table(operator_prior)
        self.opening = [op for op in (OPENING if opening is None else opening) if op in self.ops]
        self.default_opening = opening is None
        self.harvest_rounds = harvest
        self.search_guidance = search_guidance
        self.harvested: list[tuple[Any, str]] = []
        self.harvests = 0
        self.crossover_rate = crossover_rate
        self.llm_weight = llm_weight
        self.max_failed = max_failed_proposals
        self.tries: Counter[str] = Counter()
        self.wins: Counter[str] = Counter()
        self.failed_in_a_row = 0
        self.deferred: list[str] = []  # opening moves put off to the next round (see draw)

    def run(self, ctx: OptimizerContext) -> None:
        self.resolve_prior(ctx.task)
        if self.default_opening:  # a book the user chose is played whole
            self.opening = self.cut_book(self.opening, affordable_moves(ctx))
        if self.search_guidance and ctx.task.model.is_local:
            self.ops.append("guidance")
            self.opening.insert(0, "guidance")  # the one move that measured 0% -> 45% on a rule at a floor
        while self.failed_in_a_row < self.max_failed:
            children = self.draw(ctx, ctx.parallel)
            requests = [c if isinstance(c, Request) else None for _, _, c, _ in children]
            replies = ctx.generate_many(requests) if any(requests) else []
            proposals = []
            for i, (parents, op, child, meta) in enumerate(children):
                text = extract_prompt(replies[i]) if isinstance(child, Request) else child
                if text is None:
                    self.failed_in_a_row += 1
                    continue
                proposals.append(Proposal(text, parents, op, meta))
            if not proposals:
                continue
            for verdict, p in zip(ctx.propose_many(proposals), proposals):
                if verdict.status in ("duplicate", "rejected"):
                    self.failed_in_a_row += 1
                    continue
                self.failed_in_a_row = 0
                if verdict.status in ("promoted", "accepted"):
                    self.wins[p.operator] += 1 + (verdict.status == "accepted")

    def draw(self, ctx: OptimizerContext, n: int) -> list[tuple[tuple[str, ...], str, str | Request, dict[str, Any]]]:
        """Up to n children of the pool as it stands: (parents, operator, prompt or proposer request, decoding
        options). The opening book's moves come first, on the best prompt. A draw that gives no child counts as a
        failed proposal."""
        out: list[tuple[tuple[str, ...], str, str | Request, dict[str, Any]]] = []
        self.opening[:0], self.deferred = self.deferred, []
        while len(out) < n and self.failed_in_a_row < self.max_failed:
            while self.opening and self.opening[0] in FLOOR_OPERATORS and not at_floor(ctx.best[1]):
                self.opening.pop(0)
            pool = ctx.pool
            child: str | Request | None
            meta: dict[str, Any] = {}
            if not self.opening and len(pool) >= 2 and ctx.rng.random() < self.crossover_rate:
                a, b = self.pick_parent(ctx), self.pick_parent(ctx)
                if a.id == b.id:
                    continue
                parents: tuple[str, ...] = (a.id, b.id)
                child, op = crossover(a.prompt, b.prompt, ctx.rng), "crossover"
                meta = dict(a.meta) if "guidance" in a.meta else {}
            else:
                parent = ctx.best[0] if self.opening else self.pick_parent(ctx)
                from_book = bool(self.opening)
                op = self.pick_operator(ctx)
                if from_book and out and op in DEMO_OPERATORS and not self.harvested and not ctx.passing(k=1):
                    # a worked example needs passing train replies and this round's children before it will be
                    # screened first: play it next round, as a serial run would after them (bench parallel:
                    # without this, P=16 on rules/keyword lost the gain P=1 made with add_example)
                    self.deferred.append(op)
                    continue
                meta = {"guidance": parent.meta["guidance"]} if "guidance" in parent.meta else {}
                if op == "guidance":
                    child, meta = parent.prompt, {"guidance": ctx.rng.choice(GUIDANCE)}
                else:
                    make = REQUESTS.get(op, MUTATIONS[op])
                    child = make(parent.prompt, ctx.rng, protected=ctx.task.spec.protected,
                                 passing=self.demos(ctx) if op in DEMO_OPERATORS else (),
                                 ctx=ctx, parent_id=parent.id)
                parents = (parent.id,)
            self.tries[op] += 1
            if child is None:
                self.failed_in_a_row += 1
                continue
            out.append((parents, op, child, meta))
        return out

    @staticmethod
    def cut_book(book: Sequence[str], moves: int | None) -> list[str]:
        """The book cut to the moves the budget affords; a floor move counts only where it is played (it is
        skipped off the floor), so it is kept when it comes before the cut and takes no slot."""
        if moves is None:
            return list(book)
        out, regular = [], 0
        for op in book:
            if regular >= moves:
                break
            out.append(op)
            regular += op not in FLOOR_OPERATORS
        return out

    def resolve_prior(self, task: Any) -> None:
        """The default prior ("auto") is the suite's table when the target is a local model: it was learned on the
        embedded one (bench suite, leave one task out: +8.7 points against +5.9 without it, no task worse, seed
        0); an API model may rank the operators otherwise, so there the track record starts from nothing."""
        if self.prior_on_local and task.model.is_local:
            self.prior = operator_prior_table("suite")

    def demos(self, ctx: Any) -> list[tuple[Any, str]]:
        """Passing train replies for worked examples; harvested ones when no candidate has any yet."""
        passing = list(ctx.passing(k=8))
        # harvest only once proposals were screened on train and none passed (before that, nothing is known)
        scored = sum(self.tries.values()) > 1
        if not passing and not self.harvested and scored and self.harvests < self.harvest_rounds:
            self.harvest(ctx)
        return passing or list(self.harvested)

    def harvest(self, ctx: Any) -> None:
        """The best prompt with guidance on a screening minibatch of train examples; replies that pass every check
        and do not loop (guided decoding loops more often) are kept as demo material. Only for a local model
        (guidance needs the logits); the calls count against the budget."""
        if not ctx.task.model.is_local or not ctx.train:
            self.harvests = self.harvest_rounds
            return
        g = HARVEST_GUIDANCE[min(self.harvests, len(HARVEST_GUIDANCE) - 1)]
        self.harvests += 1
        best, _ = ctx.best
        ev = ctx.evaluate(best.prompt, ctx.minibatch(best.id), tag="harvest", model_overrides={"guidance": g})
        by_id = {e.id: e for e in ctx.train}
        self.harvested += [(by_id[i], r.turns[0].reply) for i, r in ev.results.items()
                           if r.passed and len(by_id[i].turns) == 1 and r.turns
                           and not has_loop(r.turns[0].reply)]

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
        """The next opening operator while any is left (each once), then by track record: promotions per try on
        this task, started from the operator prior's pseudo-counts when there is one; floor operators only at the
        floor (FLOOR_OPERATORS)."""
        if self.opening:
            return self.opening.pop(0)
        ops = self.ops
        if any(op in FLOOR_OPERATORS for op in ops) and not at_floor(ctx.best[1]):
            ops = [op for op in ops if op not in FLOOR_OPERATORS]
        weights = []
        for op in ops:
            wins, tries = self.prior_counts(op)
            weights.append((1 + wins + self.wins[op]) / (1 + 0.5 * (tries + self.tries[op]))
                           * (self.llm_weight if op in LLM_OPERATORS else 1.0))
        return ctx.rng.choices(ops, weights=weights, k=1)[0]

    def prior_counts(self, op: str) -> tuple[float, float]:
        """(pseudo wins, pseudo tries) the prior gives an operator: its rate elsewhere over PRIOR_STRENGTH tries,
        the table's mean rate for one it never saw; (0, 0) without a prior (the track record alone)."""
        if not self.prior:
            return 0.0, 0.0
        wins, tries = self.prior.get(op) or (sum(w for w, _ in self.prior.values()),
                                             sum(t for _, t in self.prior.values()))
        return PRIOR_STRENGTH * wins / tries, PRIOR_STRENGTH


def operator_prior_table(value: str | bool | Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """`optimizer.operator_prior` as {operator: (wins, tries)}: off (None, false), the rule suite's table
    ("suite" or true: promptlearn.optimizers.prior.SUITE_PRIOR), or a table of its own ({op: [wins, tries]},
    wins counted as evolve counts them: 1 per promotion, 2 per acceptance). The default, "auto", is resolved by
    evolve's run: the suite's table on a local model (the kind it was learned on), none on an API model."""
    from promptlearn.errors import TaskError

    if value is None or value is False:
        return {}
    if value is True or value == "suite":
        from promptlearn.optimizers.prior import SUITE_PRIOR

        return {op: (float(w), float(t)) for op, (w, t) in SUITE_PRIOR.items()}
    fix = 'use "auto", "suite", false, or {operator: [wins, tries]} with tries > 0'
    if value == "auto":
        return {}
    if not isinstance(value, Mapping):
        raise TaskError(f"operator_prior must be a table, \"auto\" or \"suite\", not {value!r}",
                        field="optimizer.operator_prior", fix=fix)
    out = {}
    for op, pair in value.items():
        if op not in MUTATIONS and op != "crossover":
            raise TaskError(f"operator_prior names an unknown operator {op!r}", field="optimizer.operator_prior",
                            fix="choose from crossover, " + ", ".join(MUTATIONS))
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
            for x in pair) and pair[1] > 0
        if not ok:
            raise TaskError(f"operator_prior[{op!r}] must be [wins, tries], not {pair!r}",
                            field="optimizer.operator_prior", fix=fix)
        out[op] = (float(pair[0]), float(pair[1]))
    return out
