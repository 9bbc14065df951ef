"""The verifier judge: shares of satisfied constraints, the documented share-to-p_a mapping,
ties, and no position effect (swapping the responses mirrors the result exactly)."""

from __future__ import annotations

import json
import math
import random

import pytest

from judges.constraints.kinds import parse_constraints
from judges.constraints.prompts import add_constraints, load_base_prompts
from judges.constraints.verify import (
    DEFAULT_TEMPERATURE,
    VerifyResult,
    verify_pair,
    verify_response,
)

THREE = [
    {"kind": "no_commas"},
    {"kind": "bullet_count", "n": 2},
    {"kind": "ends_with_question"},
]
ALL_THREE = "Two ideas:\n- walk more\n- cook at home\nWhich one will you try?"
TWO_OF_THREE = "Two ideas:\n- walk more\n- cook at home\nTry one."
ONE_OF_THREE = "Ideas: walk, cook, read. Which one?"
NONE_OF_THREE = "Ideas: walk, cook, read.\n- one\n- two\n- three"


def test_verify_response_reports_share_and_per_constraint_results() -> None:
    result = verify_response(THREE, TWO_OF_THREE)
    assert isinstance(result, VerifyResult)
    assert result.passed == (True, True, False)
    assert result.kinds == ("no_commas", "bullet_count", "ends_with_question")
    assert result.share == pytest.approx(2 / 3)
    assert result.degrees == (None, 1.0, None)
    assert verify_response(THREE, ALL_THREE).share == 1.0
    assert verify_response(THREE, NONE_OF_THREE).share == 0.0


def test_verify_response_accepts_models_dicts_and_json_text() -> None:
    expected = verify_response(THREE, ONE_OF_THREE)
    assert verify_response(json.dumps(THREE), ONE_OF_THREE) == expected
    assert verify_response(parse_constraints(THREE), ONE_OF_THREE) == expected


def test_no_constraints_is_a_vacuous_pass_and_a_tie() -> None:
    assert verify_response([], "anything").share == 1.0
    assert verify_pair([], "a", "b") == {
        "preferred": "tie",
        "p_a": 0.5,
        "share_a": 1.0,
        "share_b": 1.0,
        "verdicts": [],
    }


def test_bad_constraints_raise_value_error() -> None:
    with pytest.raises(ValueError):
        verify_pair([{"kind": "word_count"}], "a", "b")
    with pytest.raises(ValueError):
        verify_pair(THREE, "a", "b", temperature=-1)


def test_pair_prefers_the_response_satisfying_more() -> None:
    result = verify_pair(THREE, ALL_THREE, ONE_OF_THREE)
    assert result["preferred"] == "a"
    assert result["share_a"] == 1.0 and result["share_b"] == pytest.approx(1 / 3)
    assert result["verdicts"] == [
        {"kind": "no_commas", "a": True, "b": False},
        {"kind": "bullet_count", "a": True, "b": False},
        {"kind": "ends_with_question", "a": True, "b": True},
    ]
    assert verify_pair(THREE, ONE_OF_THREE, ALL_THREE)["preferred"] == "b"


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        (ALL_THREE, TWO_OF_THREE, 1 / 3),
        (ALL_THREE, ONE_OF_THREE, 2 / 3),
        (ALL_THREE, NONE_OF_THREE, 1.0),
        (TWO_OF_THREE, ONE_OF_THREE, 1 / 3),
    ],
)
@pytest.mark.parametrize("temperature", [DEFAULT_TEMPERATURE, 0.5, 1.0])
def test_p_a_is_the_documented_logistic(a: str, b: str, d: float, temperature: float) -> None:
    expected = 1 / (1 + math.exp(-d / temperature))
    assert verify_pair(THREE, a, b, temperature)["p_a"] == pytest.approx(expected)
    assert verify_pair(THREE, b, a, temperature)["p_a"] == pytest.approx(1 - expected)


def test_documented_default_values() -> None:
    values = [
        round(verify_pair(THREE, ALL_THREE, b)["p_a"], 3)
        for b in (TWO_OF_THREE, ONE_OF_THREE, NONE_OF_THREE)
    ]
    assert values == [0.841, 0.966, 0.993]


def test_zero_temperature_gives_hard_labels() -> None:
    assert verify_pair(THREE, ALL_THREE, TWO_OF_THREE, temperature=0)["p_a"] == 1.0
    assert verify_pair(THREE, TWO_OF_THREE, ALL_THREE, temperature=0)["p_a"] == 0.0


def test_equal_shares_tie_even_when_different_constraints_pass() -> None:
    only_commas_ok = "No commas here. Still none."
    only_question_ok = "Well, is it?"
    result = verify_pair(THREE, only_commas_ok, only_question_ok)
    assert result["preferred"] == "tie" and result["p_a"] == 0.5
    assert [v["a"] for v in result["verdicts"]] == [True, False, False]
    assert [v["b"] for v in result["verdicts"]] == [False, False, True]
    assert verify_pair(THREE, ALL_THREE, ALL_THREE)["preferred"] == "tie"


def _mirror(result: dict) -> dict:
    flipped = {"a": "b", "b": "a", "tie": "tie"}[result["preferred"]]
    return {
        "preferred": flipped,
        "p_a": 1.0 - result["p_a"],
        "share_a": result["share_b"],
        "share_b": result["share_a"],
        "verdicts": [{"kind": v["kind"], "a": v["b"], "b": v["a"]} for v in result["verdicts"]],
    }


def test_swapping_responses_mirrors_the_result_exactly() -> None:
    rng = random.Random(0)
    responses = [
        ALL_THREE,
        TWO_OF_THREE,
        ONE_OF_THREE,
        NONE_OF_THREE,
        "",
        "P.S. what?",
        "<<T>>\n\nsome text, here.\n\nP.S. more",
        '{"answer": "yes"}',
        "YES",
        "one two three four five six seven eight nine ten?",
    ]
    rows = add_constraints(load_base_prompts()[:60], 1, 3, seed=2)
    for row in rows:
        a, b = rng.sample(responses, 2)
        for temperature in (0.0, 0.2, 1.0):
            forward = verify_pair(row.constraints, a, b, temperature)
            assert verify_pair(row.constraints, b, a, temperature) == _mirror(forward)


def test_pair_is_pure() -> None:
    first = verify_pair(THREE, ALL_THREE, ONE_OF_THREE)
    assert all(verify_pair(THREE, ALL_THREE, ONE_OF_THREE) == first for _ in range(3))


@pytest.mark.parametrize("empty", ["", "   ", "\n\t\n"])
def test_empty_reply_never_satisfies_nor_wins(empty: str) -> None:
    # issue 16: "" has no commas and is under 50 words, yet it is no answer
    constraints = [{"kind": "no_commas"}, {"kind": "word_count", "max": 50},
                   {"kind": "punctuation:no_comma"}, {"kind": "no_digits"}]
    assert verify_response(constraints, empty).passed == (False, False, False, False)
    label = verify_pair(constraints, "Hello, world", empty)
    assert label["preferred"] == "a" and label["share_b"] == 0.0
    assert verify_pair(constraints, empty, empty)["preferred"] == "tie"
