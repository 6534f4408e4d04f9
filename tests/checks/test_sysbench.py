import random

import pytest

from promptlearn.checks.sysbench import aggregate


def turn(conv, idx, alignment, dependent, criteria, verdicts):
    return {"conversation_id": conv, "turn_index": idx, "alignment": alignment, "dependent": dependent,
            "criteria": [{"id": i, "type": t} for i, t in criteria], "verdicts": verdicts}


# Conversation A: dependent, 3 turns.
#   A1 align    a1 Format T, a2 Style T             -> 2/2, turn ok
#   A2 misalign 1 Action T, 2 Content F (int ids)   -> 1/2, turn failed
#   A3 align    x Role T                            -> 1/1, turn ok
#   SSR(A) = 1 consecutive ok turn from turn 1 / 3 turns = 1/3
# Conversation B: parallel, 3 turns.
#   B1 align    b1 Format T, b2 Background T        -> 2/2, ok
#   B2 align    b3 Style T                          -> 1/1, ok
#   B3 misalign b4 Action F, b5 Format T            -> 1/2, failed
#   SSR(B) = 2/3
# CSR = (2+1+1 + 2+1+1) / (2+2+1 + 2+1+2) = 8/10
# ISR = ok turns A1, A3, B1, B2 = 4/6
# SSR = (1/3 + 2/3) / 2 = 1/2
# CSR by type: Format a1,b1,b5 = 3/3; Style a2,b3 = 2/2; Action A2.1 T, b4 F = 1/2; Content 0/1; Role 1/1;
#              Background 1/1
# ISR by alignment: align A1,A3,B1,B2 all ok = 4/4; misalign A2,B3 both failed = 0/2
# SSR by dependency: dependent = SSR(A) = 1/3; parallel = SSR(B) = 2/3
TURNS = [
    turn("A", 1, "align", True, [("a1", "Format"), ("a2", "Style")], {"a1": True, "a2": True}),
    turn("A", 2, "misalign", True, [(1, "Action"), (2, "Content")], {"1": True, 2: False}),
    turn("A", 3, "align", True, [("x", "Role")], {"x": True}),
    turn("B", 1, "align", False, [("b1", "Format"), ("b2", "Background")], {"b1": True, "b2": True}),
    turn("B", 2, "align", False, [("b3", "Style")], {"b3": True}),
    turn("B", 3, "misalign", False, [("b4", "Action"), ("b5", "Format")], {"b4": False, "b5": True}),
]

EXPECTED = {
    "csr": 0.8,
    "isr": 4 / 6,
    "ssr": 0.5,
    "csr_by_type": {"Action": 0.5, "Background": 1.0, "Content": 0.0, "Format": 1.0, "Role": 1.0, "Style": 1.0},
    "isr_by_alignment": {"align": 1.0, "misalign": 0.0},
    "ssr_by_dependency": {"dependent": 1 / 3, "parallel": 2 / 3},
}


def assert_metrics(got, want):
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, dict):
            assert got[key] == pytest.approx(value), key
            assert set(got[key]) == set(value), key
        else:
            assert got[key] == pytest.approx(value), key


def test_two_conversations_by_hand():
    assert_metrics(aggregate(TURNS), EXPECTED)


def test_input_order_does_not_matter():
    # Unsorted, A would read A2, A3, A1 and B would read B3, B1, B2: SSR 0 for both if order were not restored.
    shuffled = [TURNS[5], TURNS[1], TURNS[3], TURNS[2], TURNS[0], TURNS[4]]
    assert_metrics(aggregate(shuffled), EXPECTED)
    for seed in range(5):
        rows = list(TURNS)
        random.Random(seed).shuffle(rows)
        assert_metrics(aggregate(iter(rows)), EXPECTED)


def test_stability_stops_at_first_failed_turn():
    # C1 fails, C2 and C3 pass: ISR 2/3 but SSR 0 (no satisfied turn counted from turn 1).
    rows = [
        turn("C", 1, "align", False, [("k", "Format")], {"k": False}),
        turn("C", 2, "align", False, [("k", "Format")], {"k": True}),
        turn("C", 3, "align", False, [("k", "Format")], {"k": True}),
    ]
    got = aggregate(rows)
    assert got["isr"] == pytest.approx(2 / 3)
    assert got["csr"] == pytest.approx(2 / 3)
    assert got["ssr"] == 0.0
    assert got["isr_by_alignment"] == {"align": pytest.approx(2 / 3)}  # only alignments present
    assert got["ssr_by_dependency"] == {"parallel": 0.0}  # only dependencies present


def test_missing_verdicts_leave_csr_but_fail_the_turn():
    # D1: c1 Format True, c2 Style absent      -> CSR counts 1/1; turn not fully satisfied
    # D2: c3 Format True, c4 Role None         -> CSR counts 1/1; turn not fully satisfied
    # D3: c5 Format True                       -> 1/1; turn ok, but the streak already broke at D1
    # CSR = 3/3 = 1.0; ISR = 1/3; SSR = 0/3; Style and Role were never judged so have no CSR entry.
    rows = [
        turn("D", 1, "align", True, [("c1", "Format"), ("c2", "Style")], {"c1": True}),
        turn("D", 2, "misalign", True, [("c3", "Format"), ("c4", "Role")], {"c3": True, "c4": None}),
        turn("D", 3, "align", True, [("c5", "Format")], {"c5": True}),
    ]
    assert_metrics(aggregate(rows), {
        "csr": 1.0, "isr": 1 / 3, "ssr": 0.0, "csr_by_type": {"Format": 1.0},
        "isr_by_alignment": {"align": 0.5, "misalign": 0.0}, "ssr_by_dependency": {"dependent": 0.0},
    })


def test_verdict_key_and_value_normalisation():
    # int id with str key, str id with int-like key, and "yes"/"no" style verdicts.
    rows = [turn("E", 1, "align", False, [(7, "Format"), ("8", "Style"), (9, "Role")],
                 {"7": True, 8: "yes", 9: "no"})]
    got = aggregate(rows)
    assert got["csr"] == pytest.approx(2 / 3)
    assert got["csr_by_type"] == {"Format": 1.0, "Role": 0.0, "Style": 1.0}
    assert got["isr"] == 0.0


def test_empty_input():
    assert aggregate([]) == {"csr": 0.0, "isr": 0.0, "ssr": 0.0, "csr_by_type": {}, "isr_by_alignment": {},
                             "ssr_by_dependency": {}}
