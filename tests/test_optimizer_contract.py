"""Every built-in optimizer passes the same contract: a better prompt found, determinism, hard budget, resume,
protected clauses."""

import importlib.util
import json
import re

import pytest

from promptlearn.testing import run_contract, wording_sensitive_responder

#: Three cue words (IMPORTANT, Begin, each): wording_sensitive_responder's target then passes every example.
REWRITE = "You are a pirate. IMPORTANT: Begin each reply with the word Ahoy."


def rewriting_responder(messages):
    """wording_sensitive_responder's target; a proposer that writes REWRITE (its own rewrite passes too few val
    examples to be accepted, so an optimizer that only asks the proposer could never beat the seed)."""
    reply = wording_sensitive_responder(messages)
    return f"<prompt>{REWRITE}</prompt>" if reply.startswith("<prompt>") else reply


def dspy_responder(messages):
    """rewriting_responder, with the proposer answering in DSPy's format (ChatAdapter field headers, or JSON)."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    if "[[ ## " not in system:
        return rewriting_responder(messages)
    block = re.search(r"Your output fields are:\n(.*?)\n(?:All interactions|Outputs will be)", system, re.S)
    names = re.findall(r"^\d+\. `(\w+)`", block.group(1) if block else "", re.M)
    if "JSON" in system:
        return json.dumps({n: REWRITE for n in names})
    return "\n\n".join(f"[[ ## {n} ## ]]\n{REWRITE}" for n in names) + "\n\n[[ ## completed ## ]]"


OPTIMIZERS = [("evolve", wording_sensitive_responder), ("mutate", rewriting_responder),
              pytest.param("optuna", wording_sensitive_responder,
                           marks=pytest.mark.skipif(not importlib.util.find_spec("optuna"),
                                                    reason="needs promptlearn[optuna]")),
              pytest.param("dspy", dspy_responder,
                           marks=pytest.mark.skipif(not importlib.util.find_spec("dspy"),
                                                    reason="needs promptlearn[dspy]"))]


@pytest.mark.parametrize("parallel", [1, 4])
@pytest.mark.parametrize("optimizer,responder", OPTIMIZERS)
def test_optimizer_contract(optimizer, responder, parallel, tmp_path):
    run_contract(optimizer, tmp_path, responder=responder, parallel=parallel)
