"""Checks score one reply: verifiable IFEval instructions, app-rule assertions, LLM-judge checklists."""

from promptlearn.checks.base import Check, CheckContext, CheckSpecError, ModelCheck, register_check
from promptlearn.checks.build import build_check, check_types, describe_check

__all__ = ["Check", "CheckContext", "CheckSpecError", "ModelCheck", "build_check", "check_types", "describe_check",
           "register_check"]
