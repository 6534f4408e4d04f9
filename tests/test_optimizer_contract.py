"""Every built-in optimizer passes the same contract: determinism, hard budget, resume, protected clauses."""

import importlib.util

import pytest

from promptlearn.testing import run_contract

OPTIMIZERS = ["evolve", "mutate",
              pytest.param("optuna", marks=pytest.mark.skipif(not importlib.util.find_spec("optuna"),
                                                              reason="needs promptlearn[optuna]")),
              pytest.param("dspy", marks=pytest.mark.skipif(not importlib.util.find_spec("dspy"),
                                                            reason="needs promptlearn[dspy]"))]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_contract(optimizer, tmp_path):
    run_contract(optimizer, tmp_path)
