"""What the embedded model returns for one request, whether decoded plainly (local.py) or guided (guidance.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    reused_prompt_tokens: int
    seconds: float
    finish_reason: str = "stop"
