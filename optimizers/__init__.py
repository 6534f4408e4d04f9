"""Optimizers: each proposes candidate system prompts through an OptimizerContext; the engine decides and keeps
score.

Adding one is one file implementing the protocol below plus one line in `_BUILTINS` (or a plugin calling
`register_optimizer`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from promptlearn.errors import TaskError

if TYPE_CHECKING:
    from promptlearn.context import OptimizerContext


class Optimizer(Protocol):
    """Proposes prompts with `ctx.propose` / `ctx.propose_many` until it is done or the context stops it.

    Contract: uses only what promptlearn.context.OptimizerContext lists (its docstring is the full contract):
    never calls a model except through ctx; draws every random choice from ctx.rng so the same seed and cache
    give the same lineage; puts up to `ctx.parallel` proposals in flight with propose_many where it can; lets
    StopRun and BudgetExceeded propagate (the engine catches them and finishes the run).
    It may set `loop_defaults`, the loop options (promptlearn.loop.Options) it was measured with, e.g. evolve's
    {"race": True}; a task's or caller's own value for one always wins.
    """

    name: ClassVar[str]

    def run(self, ctx: OptimizerContext) -> None: ...


_BUILTINS = {
    "mutate": "promptlearn.optimizers.mutate:ReflectiveMutation",
    "evolve": "promptlearn.optimizers.evolve:Evolution",
    "dspy": "promptlearn.optimizers.dspy_opt:DSPyOptimizer",
    "optuna": "promptlearn.optimizers.optuna_opt:OptunaSearch",
}
_PLUGINS: dict[str, type[Optimizer]] = {}
_OptimizerClass = TypeVar("_OptimizerClass", bound="type[Optimizer]")


def register_optimizer(cls: _OptimizerClass) -> _OptimizerClass:
    _PLUGINS[cls.name] = cls
    return cls


def optimizer_names() -> list[str]:
    return sorted(set(_BUILTINS) | set(_PLUGINS))


def get_optimizer(name: str) -> type[Optimizer]:
    if name in _PLUGINS:
        return _PLUGINS[name]
    if name not in _BUILTINS:
        raise TaskError(f"unknown optimizer '{name}'", field="optimizer.name",
                        fix="use one of " + ", ".join(optimizer_names()))
    module, cls = _BUILTINS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        extra = {"dspy": "dspy", "optuna": "optuna"}.get(name, "all")
        raise TaskError(f"optimizer '{name}' needs a package that is missing ({e.name})", field="optimizer.name",
                        fix=f"pip install 'promptlearn[{extra}]'") from None
