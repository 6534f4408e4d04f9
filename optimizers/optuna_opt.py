"""`optuna`: TPE search over a structured version of the seed prompt.

The seed is cut into its rule sentences (operators.rules) and the text between them. A trial picks, per rule, a
wording (the original, an emphasis style, a deterministic synonym swap, or an LLM paraphrase made once up front);
where the key rule goes (keep / start / end / restated at the end); plain text or a bulleted rule list; and how
many and which worked examples (from train replies that passed every check). Every sentence of the seed is kept,
so protected clauses and placeholders survive. TPE learns which choices pay off from the engine's verdicts;
the engine still screens, promotes and accepts as for every optimizer.

The space also holds what a person who reads the checks writes (evolve's opening-book edits): the failing check's
own hint as a wording of the rule it restates (checks.hints), and one line appended after the prompt (the rule's
literal parts quoted, an "Every reply must" line, or the hint).

A 300-call run affords some 20-30 trials, too few for TPE's random start-up over a dozen choices at once (bench
suite: every optuna run kept the seed, most trials screened out). So the first trials are an opening book, one
change each from the seed, in the order evolve's opening book and operator statistics rank them on the rule
suite (the check's hint, a worked example, the literal quoted, the rule restated, "Every reply must", two
examples, ...), as many as a third of the budget affords; TPE samples after.

With `search_guidance: true` and a local target model, a trial also samples a decoding guidance strength
g in [1, 2] into the candidate's `meta["guidance"]`; the engine applies `meta["guidance"]` when supported.
"""

from __future__ import annotations

import random
import re
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import optuna

from promptlearn.context import Proposal
from promptlearn.optimizers.operators import (EMPHASIS, RESTATE, affordable_moves, as_list, at_floor, closest_rule,
                                              demo_block, every_reply, extract_prompt, failing_hints, keep_list,
                                              quote_format, repaired_replies, reword, rules, sentences)

if TYPE_CHECKING:
    from promptlearn.context import OptimizerContext

PARAPHRASE_RULE = """Rewrite this instruction for an AI assistant in different words, keeping its meaning.
Keep these exact phrases unchanged: {keep}
Reply with only the rewritten instruction between <prompt> and </prompt>.

<prompt>
{rule}
</prompt>"""

POSITIONS = ("keep", "start", "end", "restate")
#: the opening trials, each one change from the seed configuration (see `opening_move`)
OPENING = ("check_hint", "demos1", "quote_format", "restate", "every_reply", "demos2", "end", "emphasis", "as_list")
ADDENDA = ("quote_format", "every_reply", "hint")  # the lines a trial may append (see `addendum_lines`)


def _keeps(original: str, variant: str, protected: Sequence[str]) -> bool:
    """A variant may replace a rule only if it keeps the rule's protected clauses and placeholders verbatim."""
    must = [p for p in protected if p in original] + re.findall(r"\{\w+\}", original)
    return bool(variant.strip()) and all(m in variant for m in must)


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"[ \t]+\n|\n[ \t]+", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


class OptunaSearch:
    name: ClassVar[str] = "optuna"

    #: race trials on val (promptlearn.loop.Options.race) as evolve does: a loser costs a few val calls, so the
    #: budget buys more trials
    loop_defaults: ClassVar[Mapping[str, Any]] = {"race": True}

    def __init__(self, n_trials: int | None = None, max_demos: int = 3, paraphrases: int = 0,
                 search_guidance: bool = False, rewordings: int = 4, max_rules: int = 6, max_idle: int = 40,
                 opening: bool = True):
        self.n_trials = n_trials
        self.max_demos = max_demos
        self.paraphrases = paraphrases
        self.search_guidance = search_guidance
        self.rewordings = rewordings
        self.max_rules = max_rules
        self.max_idle = max_idle
        if not isinstance(opening, bool):
            from promptlearn.errors import TaskError

            raise TaskError(f"optimizer.opening must be true or false for optuna, not {opening!r}",
                            field="optimizer.opening", fix="opening: false starts TPE without the one-change trials")
        self.opening = list(OPENING) if opening else []
        self.values: dict[str, float] = {}  # objective given to TPE per candidate id, for duplicates
        self.demos: list[tuple[Any, str]] = []
        self.repaired = False  # the demo pool holds repaired replies (shown with their line breaks)

    # ---- search space -----------------------------------------------------------------------------------
    def parse(self, ctx: Any) -> None:
        """Cut the seed into literal chunks and rule slots, and list each rule's wordings."""
        seed, protected = ctx.seed_candidate.prompt, list(ctx.task.spec.protected)
        self.chunks: list[str] = []
        self.slots: list[str] = []
        pos = 0
        for rule in rules(seed, protected)[: self.max_rules]:
            at = seed.find(rule, pos)
            if at < 0:
                continue
            self.chunks.append(seed[pos:at])
            self.slots.append(rule)
            pos = at + len(rule)
        self.tail = seed[pos:]
        marked = [i for i, r in enumerate(self.slots) if any(p in r for p in protected) or re.search(r"\{\w+\}", r)]
        self.key = marked[0] if marked else 0
        self.movable = len(sentences(seed)) >= 2
        self.variants = [self.wordings(ctx, rule, protected) for rule in self.slots]
        hints = failing_hints(ctx, ctx.seed_candidate.id)
        self.hint = hints[0] if hints and hints[0] not in seed else None
        self.hint_wording = self.hint_as_wording(seed, protected)
        self.addenda = self.addendum_lines(seed, protected)

    def hint_as_wording(self, seed: str, protected: Sequence[str]) -> tuple[int, int] | None:
        """(slot, wording index) of the failing check's hint as a wording of the rule it restates, if it keeps
        that rule's protected clauses (what evolve's state_check does most often)."""
        target = closest_rule(seed, self.hint, protected) if self.hint else None
        if target not in self.slots or not self.hint or not _keeps(target, self.hint, protected):
            return None
        i = self.slots.index(target)
        if self.hint not in self.variants[i]:
            self.variants[i].append(self.hint)
        return i, self.variants[i].index(self.hint)

    def addendum_lines(self, seed: str, protected: Sequence[str]) -> dict[str, str]:
        """The lines a trial may append, each made once from the seed (evolve's quote_format and every_reply with a
        fixed rng, and the check's hint): {name: line} for those that apply."""
        out = {}
        for name, make in (("quote_format", quote_format), ("every_reply", every_reply)):
            made = make(seed, random.Random(0), protected=protected)
            if made and made.startswith(seed.rstrip()):
                out[name] = made[len(seed.rstrip()):].strip()
        if self.hint:
            out["hint"] = self.hint
        return {k: v for k, v in out.items() if v}

    def wordings(self, ctx: Any, rule: str, protected: Sequence[str]) -> list[str]:
        has_slot = bool(re.search(r"\{\w+\}", rule))
        out = [rule] + [f.format(s=rule, upper=rule if has_slot else rule.upper()) for f in EMPHASIS]
        for k in range(self.rewordings * 3):  # fixed seeds: the same alternatives in every run
            if len(out) >= 1 + len(EMPHASIS) + self.rewordings:
                break
            alt = reword(rule, random.Random(k), protected)
            if alt and alt not in out:
                out.append(alt)
        for k in range(self.paraphrases):
            text = ctx.generate([{"role": "user", "content": PARAPHRASE_RULE.format(
                rule=rule, keep=keep_list(ctx))}], sample=k)
            alt = " ".join((extract_prompt(text) or "").split())
            if alt and len(alt) <= 4 * len(rule) + 40:
                out.append(alt)
        return list(dict.fromkeys(v for v in out if _keeps(rule, v, protected)))

    def refresh_demos(self, ctx: Any) -> None:
        """The demo pool is fixed once non-empty, so the categorical choices over it stay the same. When the seed
        passes no val example (operators.at_floor) and no train reply has passed, the seed's failing replies
        repaired by the checks (operators.repaired_replies) stand in, so the demo moves need not wait there."""
        if self.demos or self.max_demos <= 0:
            return
        self.demos = list(ctx.passing(k=8))
        if self.demos:
            return
        try:
            seed_val = ctx.val_eval(ctx.seed_candidate.id)
        except KeyError:  # nothing scored yet: no floor to see
            return
        if at_floor(seed_val):
            self.demos = repaired_replies(ctx, ctx.seed_candidate.prompt, ctx.seed_candidate.id)
            self.repaired = bool(self.demos)

    def base_params(self) -> dict[str, Any]:
        """The trial that rebuilds the seed: original wordings, the key rule where it was, no list, no examples."""
        return ({f"rule{i}": 0 for i, v in enumerate(self.variants) if len(v) > 1}
                | {"position": "keep", "as_list": False, "addendum": "none", "n_demos": 0})

    def opening_params(self) -> dict[str, Any] | None:
        """The next opening trial that the search space affords now, or None when the book is played out. A move
        with worked examples waits until the demo pool has enough of them (it fills after the first screening)."""
        for move in list(self.opening):
            params = self.opening_move(move)
            if isinstance(params, str):  # "wait"
                continue
            self.opening.remove(move)
            if params is not None:
                return self.base_params() | params
        return None

    def opening_move(self, move: str) -> dict[str, Any] | str | None:
        """One opening move's params; "wait" when it needs demos the pool does not have yet, None when it does not
        apply to this seed."""
        if move == "check_hint":  # the hint in place of the rule it restates, else as a line of its own
            if self.hint_wording:
                return {f"rule{self.hint_wording[0]}": self.hint_wording[1]}
            return {"addendum": "hint"} if "hint" in self.addenda else None
        if move in ADDENDA:
            return {"addendum": move} if move in self.addenda else None
        if move in ("demos1", "demos2"):
            n = 1 if move == "demos1" else 2
            if self.max_demos < n:
                return None
            if len(self.demos) < n:
                return "wait"
            return {"n_demos": n} | {f"demo{j}": j for j in range(n)}
        if not self.slots:
            return None
        if move == "restate":
            return {"position": "restate", "restate_form": 0}
        if move == "end":
            return {"position": "end"} if self.movable else None
        if move == "emphasis":
            return {f"rule{self.key}": 1} if len(self.variants[self.key]) > 1 else None
        return {"as_list": True}

    # ---- one trial ------------------------------------------------------------------------------------------
    def build(self, trial: Any, ctx: Any) -> tuple[str, dict[str, Any]]:
        words = [v[trial.suggest_categorical(f"rule{i}", list(range(len(v))))] if len(v) > 1 else v[0]
                 for i, v in enumerate(self.variants)]
        position = trial.suggest_categorical("position", list(POSITIONS if self.movable else ("keep", "restate")))
        if self.slots and position in ("start", "end"):
            rest = _tidy("".join(c + ("" if i == self.key else w)
                                 for i, (c, w) in enumerate(zip(self.chunks, words))) + self.tail)
            key = words[self.key]
            text = f"{key}\n\n{rest}" if position == "start" else f"{rest}\n\n{key}"
        else:
            text = "".join(c + w for c, w in zip(self.chunks, words)) + self.tail
        if self.slots and position == "restate":
            form = RESTATE[trial.suggest_categorical("restate_form", list(range(len(RESTATE))))]
            text = text.rstrip() + "\n\n" + form.format(s=self.slots[self.key])
        if trial.suggest_categorical("as_list", [False, True]):
            text = as_list(text, random.Random(0), protected=ctx.task.spec.protected) or text
        if self.addenda:
            addendum = trial.suggest_categorical("addendum", ["none", *self.addenda])
            if addendum != "none" and self.addenda[addendum] not in text:
                text = text.rstrip() + "\n\n" + self.addenda[addendum]
        if self.demos:
            n = trial.suggest_int("n_demos", 0, min(self.max_demos, len(self.demos)))
            picks = [trial.suggest_categorical(f"demo{j}", list(range(len(self.demos)))) for j in range(n)]
            picks = list(dict.fromkeys(picks))
            if picks:
                text = text.rstrip() + "\n\n" + demo_block([self.demos[j] for j in picks], keep_lines=self.repaired)
        meta: dict[str, Any] = {}
        if self.search_guidance and ctx.task.model.is_local:
            meta["guidance"] = trial.suggest_float("guidance", 1.0, 2.0)
        return text, meta

    def objective(self, ctx: Any, verdict: Any, parent_id: str) -> float:
        """What TPE maximises: val when the candidate reached val, else a penalty under its parent."""
        if verdict.val is not None:
            return verdict.val
        if verdict.status == "duplicate" and verdict.id in self.values:
            return self.values[verdict.id]
        if verdict.status == "rejected":
            return 0.0
        return max(0.0, ctx.val_eval(parent_id).score - 0.05)

    def run(self, ctx: OptimizerContext) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # With trials in flight, TPE scores the running ones as the worst so far (constant liar), so a batch
        # spreads out instead of asking P times for the same point. At parallel 1 nothing is ever running.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=ctx.seed, constant_liar=ctx.parallel > 1)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        self.parse(ctx)
        # moves this seed does not afford are dropped before the book is cut to what the budget affords
        self.opening = [m for m in self.opening if self.opening_move(m) is not None][:affordable_moves(ctx)]
        study.enqueue_trial(self.base_params())
        trials, idle = 0, 0
        while (self.n_trials is None or trials < self.n_trials) and idle < self.max_idle:
            if idle == 0:  # new candidates may have passed train examples: material for demos
                self.refresh_demos(ctx)
            batch, proposals = [], []
            parent_id = ctx.best_id or ctx.seed_candidate.id
            for _ in range(ctx.parallel if self.n_trials is None else min(ctx.parallel, self.n_trials - trials)):
                trials += 1
                if trials > 1 and (params := self.opening_params()) is not None:
                    study.enqueue_trial(params)
                trial = study.ask()
                prompt, extra = self.build(trial, ctx)
                batch.append(trial)
                proposals.append(Proposal(prompt, (parent_id,), "optuna", {"params": dict(trial.params), **extra}))
            try:
                verdicts = ctx.propose_many(proposals)
            except BaseException:
                for trial in batch:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            for trial, verdict in zip(batch, verdicts):
                value = self.objective(ctx, verdict, parent_id)
                self.values.setdefault(verdict.id, value)
                study.tell(trial, value)
                idle = idle + 1 if verdict.status == "duplicate" else 0
