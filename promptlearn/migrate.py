"""Migration: move a prompt from one model to another. The seed prompt's test score on the old model is the bar;
the search runs on the new one; the result says whether the new model with the new prompt reaches the bar,
example by example (fixed / broken against the old model with the old prompt)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptlearn.engine import Evaluation, Evaluator

if TYPE_CHECKING:
    from promptlearn.task import Task


def migrate_overrides(task: "Task", source: str, to: str) -> dict[str, Any]:
    """Task-file overrides for `--migrate-from SOURCE --to TO`: each a target label of the task, its model's
    name, or another model name (which keeps the task model's temperature and max_tokens). Every field of the
    new model is given, so nothing of the file's `model:` (an api_base, say) leaks into it."""
    from promptlearn.task import ModelConfig

    known: dict[str, ModelConfig] = {}
    for t in task.spec.targets:
        known.setdefault(t.key, t.model)
        known.setdefault(t.model.name, t.model)
    known.setdefault(task.model.name, task.model)
    keep = {"temperature": task.model.temperature, "max_tokens": task.model.max_tokens}

    def resolve(name: str) -> dict[str, Any]:
        config = known.get(name) or ModelConfig.model_validate({**keep, "name": name})
        return config.model_dump(mode="json")

    return {"model": resolve(to), "targets": None, "migrate": {"from": resolve(source)}}


def migration_bar(ctx: Any) -> Evaluation | None:
    """The bar of a migration: the seed prompt on the old model (`migrate.from`), on the test split. Scored before
    the search (it is known before any new prompt exists, and the search never sees it), within the run's budget
    and kept in the run store under `<seed id>@from`, so a resumed run replays it. None without `migrate:`."""
    from promptlearn.targets import _TargetStore, target_task
    from promptlearn.task import TargetConfig

    task = ctx.task
    if task.spec.migrate is None:
        return None
    old = Evaluator(target_task(task, TargetConfig(model=task.spec.migrate.source, label="from")),
                    cache=ctx.evaluator.cache, ledger=ctx.evaluator.ledger, use_cache=ctx.evaluator.cache is not None,
                    store=_TargetStore(ctx.store, "from"))
    try:
        bar: Evaluation = ctx.evaluator.run(old.aevaluate(task.prompt, task.examples("test"), split="test",
                                                          tag="bar@from"))
    finally:
        old.cache = None  # shared with the run's evaluator, which closes it
        old.close()
    if not bar.complete:
        raise bar.stop or RuntimeError("the migration bar was not scored")
    return bar


def migration_report(ctx: Any, bar: Evaluation | None, seed_test: Evaluation | None,
                     best_test: Evaluation | None) -> dict[str, Any] | None:
    """Whether the new model with the new prompt reaches the bar, and which test examples it fixed or broke
    against the old model with the old prompt."""
    from promptlearn.metrics import side_effects

    mig = ctx.task.spec.migrate
    if mig is None or bar is None:
        return None
    out: dict[str, Any] = {"from": mig.source.name, "to": ctx.task.model.name, "bar": bar.score,
                           "seed_on_to": seed_test.score if seed_test else None,
                           "best_on_to": best_test.score if best_test else None,
                           "reaches_bar": None if best_test is None else best_test.score >= bar.score}
    if best_test is not None:
        effects = side_effects(best_test, bar, ctx.task.examples("test"))
        out.update({k: effects.get(k) for k in ("fixed", "broken", "same", "fixed_ids", "broken_ids")})
    return out
