"""Typed errors. Each says where the problem is and how to fix it, in one line."""

from __future__ import annotations


class PromptlearnError(Exception):
    """Base of every error promptlearn raises on purpose (the CLI turns these into exit code 2)."""

    exit_code = 2


class TaskError(PromptlearnError):
    """A task file, dataset or option is wrong. Raised before any model call is made."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None, fix: str | None = None):
        self.file, self.field, self.fix, self.detail = file, field, fix, message
        where = ": ".join(p for p in (file, field) if p)
        text = f"{where}: {message}" if where else message
        if fix:
            text += f" (fix: {fix})"
        super().__init__(" ".join(text.splitlines()))  # one line whatever the input held (\n, \r, \u2028...)


class BudgetExceeded(PromptlearnError):
    """The next model call would pass a hard budget limit; `limit` names which one."""

    exit_code = 0

    def __init__(self, limit: str, used: float, cap: float):
        self.limit, self.used, self.cap = limit, used, cap
        super().__init__(f"budget stop: {limit} limit reached ({used:g} used of {cap:g})")


class ModelError(PromptlearnError):
    """A model call failed after all retries (a fault that never healed), or was refused for good.

    `bad_request`: the provider refused this request itself (bad request, context window exceeded), so the
    same request will fail again while other requests may succeed.
    """

    exit_code = 1

    def __init__(self, message: str, *, bad_request: bool = False):
        self.bad_request = bad_request
        super().__init__(message)


class RunError(PromptlearnError):
    """A run is missing, unfinished, made from another task, or held by another process (store.RunLocked)."""


class ConfigError(PromptlearnError, ValueError):
    """An app config file cannot give or take the prompt: bad path, key, format or content."""


class TaskWarning(UserWarning):
    """A task that runs but may measure nothing (an empty prompt, no checks, tiny splits): `Task.warnings()`.
    The API issues these with `warnings.warn`; the CLI prints each as one `promptlearn: warning:` line on stderr."""
