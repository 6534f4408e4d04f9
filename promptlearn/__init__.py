"""promptlearn: learn better system prompts for LLM apps, black-box.

The public API is re-exported here; submodules load on first use so `import promptlearn` stays fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate": "promptlearn.engine",
    "Evaluation": "promptlearn.engine",
    "Evaluator": "promptlearn.engine",
    "load_task": "promptlearn.task",
    "task_from_dict": "promptlearn.task",
    "Task": "promptlearn.task",
    "make_task": "promptlearn.task",
    "optimize": "promptlearn.run",
    "Result": "promptlearn.run",
    "PromptScores": "promptlearn.run",
    "export_prompt": "promptlearn.export",
    "read_prompt": "promptlearn.export",
    "read_provenance": "promptlearn.export",
    "prompt_sha256": "promptlearn.export",
    "check_prompt": "promptlearn.gate",
    "CheckReport": "promptlearn.gate",
    "export_run": "promptlearn.gate",
    "ModelConfig": "promptlearn.task",
    "TargetConfig": "promptlearn.task",
    "MultiEvaluation": "promptlearn.targets",
    "transfer_report": "promptlearn.transfer",
    "TransferReport": "promptlearn.transfer",
    "Message": "promptlearn.types",
    "Turn": "promptlearn.types",
    "Example": "promptlearn.types",
    "Candidate": "promptlearn.types",
    "CheckResult": "promptlearn.types",
    "ExampleResult": "promptlearn.types",
    "PASS": "promptlearn.types",
    "passes": "promptlearn.types",
    "Usage": "promptlearn.types",
    "PromptlearnError": "promptlearn.errors",
    "TaskError": "promptlearn.errors",
    "BudgetExceeded": "promptlearn.errors",
    "ModelError": "promptlearn.errors",
    "RunError": "promptlearn.errors",
    "ConfigError": "promptlearn.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'promptlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    # dir() and tab completion show the public API, not this module's own imports
    return list(__all__)
