"""The operator prior evolve starts from on a local model (its default, `operator_prior: auto`) and with
`operator_prior: suite` on any model: {operator: [wins, tries]} of evolve's runs on
the rule suite (tasks/rules/, the embedded SmolLM2-135M model, seed 0, 300 search calls; a promotion to val is
1 win, an acceptance 2).

Learned on one small model: operators that rewrite the rule's emphasis or position never moved it (emphasize,
move_rule, paraphrase: 0 wins in 48 tries) while a worked example was promoted nearly every time. Another model may
rank them differently, so the prior only weighs as much as a few tries on the task at hand (evolve.PRIOR_STRENGTH)
and the task's own track record soon outweighs it. Rebuild: `python -m bench operator_prior` (reads the suite's
run stores, writes bench/results/operator_stats.json), then `python -m bench operator_prior --print`;
tests/test_operator_prior.py checks this table is that file's sum.
"""

SUITE_PRIOR: dict[str, tuple[int, int]] = {
    "add_example": (18, 16), "as_list": (2, 10), "crossover": (8, 14), "drop_sentence": (1, 8),
    "emphasize": (0, 19), "every_reply": (6, 20), "move_rule": (0, 20), "paraphrase": (0, 9),
    "quote_format": (6, 13), "quote_literal": (4, 24), "reflect": (1, 7), "reorder": (2, 11),
    "restate": (8, 24), "reword": (7, 27), "sandwich": (5, 16), "state_check": (8, 20),
}
