"""`rlaif judge-report` and `rlaif judge-audit`: agreement, bias and calibration measures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from align.cli import main
from judges.audit import load_audit_set
from judges.report import build_report, cohen_kappa


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def report(tmp_path: Path, rows: list, *args: str) -> dict:
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    result = CliRunner().invoke(main, ["judge-report", str(labels), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def shown(body: dict) -> tuple[str, str]:
    user = body["messages"][1]["content"]
    return tuple(re.search(rf"<response_{x}>\n(.*?)\n</response_{x}>", user, re.S).group(1)
                 for x in "AB")


def test_judge_reproducing_human_labels_has_accuracy_and_kappa_1(tmp_path, fake_llm):
    def answer(i: int, good: bool) -> str:
        return f"answer {i} " + ("good" if good else "bad")

    rows = [{"prompt": f"Question {i}?", "response_a": answer(i, h == "a"),
             "response_b": answer(i, h == "b"), "human": h} for i, h in enumerate("abbabaab")]
    rows.append({"prompt": "Same?", "response_a": "same", "response_b": "same", "human": "tie"})
    fake_llm.responder = lambda path, body: {"text": "A" if "good" in shown(body)[0] else "B"}
    pairs, out = write_jsonl(tmp_path / "pairs.jsonl", rows), tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["label", "--input", str(pairs), "-o", str(out),
                                       "--db", str(tmp_path / "r.db"),
                                       "--judge-base-url", fake_llm.base_url])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["judge-report", str(out), "--json"])
    human = json.loads(result.stdout)["human"]
    assert human == {"n": 9, "accuracy": 1.0, "n_without_ties": 8,
                     "accuracy_without_ties": 1.0, "kappa": 1.0, "errors": 0}


def length_only_rows(n: int, seed: int, soft_scale: float | None) -> list[dict]:
    """Pairs whose label depends on nothing but the length difference (A is usually longer)."""
    rng = np.random.default_rng(seed)
    len_a, len_b = rng.integers(200, 1200, n), rng.integers(50, 700, n)
    rows = []
    for la, lb in zip(len_a, len_b, strict=True):
        p_a = 1 / (1 + math.exp(-(la - lb) / soft_scale)) if soft_scale else 0.7
        preferred = "a" if p_a > 0.55 else "b" if p_a < 0.45 else "tie"
        rows.append({"prompt": "q", "response_a": "x" * int(la), "response_b": "y" * int(lb),
                     "preferred": preferred, "p_a": p_a})
    return rows


def test_length_controlled_win_rate_removes_a_pure_length_effect(tmp_path):
    measured = report(tmp_path, length_only_rows(2000, seed=0, soft_scale=100.0))["length"]
    assert measured["raw_win_rate_a"] > 0.75
    assert measured["lc_win_rate_a"] == pytest.approx(0.5, abs=0.02)
    assert measured["longer_win_rate"] == 1.0


def test_length_controlled_win_rate_equals_raw_without_length_effect():
    measured = build_report(length_only_rows(500, seed=1, soft_scale=None))["length"]
    assert measured["lc_win_rate_a"] == pytest.approx(measured["raw_win_rate_a"], abs=0.01)


def test_position_and_length_bias_on_a_crafted_file(tmp_path):
    first, second = {"verdict": "first"}, {"verdict": "second"}
    rows = [
        {"prompt": "p", "response_a": "long a", "response_b": "b", "preferred": "a",
         "consistent": True, "verdicts": [first, second]},
        {"prompt": "p", "response_a": "a", "response_b": "long b", "preferred": "tie",
         "consistent": False, "verdicts": [first, first]},
        {"prompt": "p", "response_a": "long a", "response_b": "b", "preferred": "b",
         "consistent": True, "verdicts": [second, first]},
        {"prompt": "p", "response_a": "a", "response_b": "b", "preferred": "error",
         "p_a": None, "consistent": None, "verdicts": []},
    ]
    measured = report(tmp_path, rows)
    assert measured["counts"] == {"pairs": 4, "a": 1, "b": 1, "tie": 1, "error": 1,
                                  "win_rate_a": 0.5}
    assert measured["position"] == {"pairs_in_both_orders": 3, "consistency": 2 / 3,
                                    "verdicts": 6, "first_position_win_rate": 4 / 6}
    assert measured["length"]["longer_win_rate"] == 0.5
    assert measured["human"] is None and measured["reference"] is None


CALIBRATION = [
    ("no commas here", "one, two", "a", "a"),
    ("x, y", "x y", "a", "b"),
    ("p q", "r s", "tie", "tie"),
    ("k, l", "k l", "b", "b"),
]


def test_calibration_against_the_verifier(tmp_path):
    rows = [{"prompt": "Write without commas.", "response_a": a, "response_b": b,
             "preferred": judged, "constraints": [{"kind": "no_commas"}]}
            for a, b, judged, _ in CALIBRATION]
    rows.append({"prompt": "free", "response_a": "a", "response_b": "b", "preferred": "a"})
    reference = report(tmp_path, rows, "--reference", "verify")["reference"]
    expected_kappa = (0.75 - 5 / 16) / (1 - 5 / 16)
    assert reference == {"source": "verify", "n": 4, "accuracy": 0.75, "n_without_ties": 3,
                         "accuracy_without_ties": 2 / 3, "kappa": pytest.approx(expected_kappa)}
    by_field = [{"prompt": "q", "response_a": a, "response_b": b, "preferred": judged,
                 "reference": ref} for a, b, judged, ref in CALIBRATION]
    assert report(tmp_path, by_field)["reference"] == reference | {"source": "field"}


def test_cohen_kappa():
    assert cohen_kappa(list("aabb"), list("aabb")) == 1.0
    assert cohen_kappa(list("abab"), list("baba")) == -1.0
    assert cohen_kappa(list("aaaa"), list("aaaa")) is None


def test_text_report_and_bad_file(tmp_path):
    rows = [{"prompt": "p", "response_a": "aa", "response_b": "b", "preferred": "a",
             "human": "a"}]
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    result = CliRunner().invoke(main, ["judge-report", str(labels)])
    assert result.exit_code == 0, result.output
    assert "pairs: 1 (a 1, b 0, tie 0, error 0)" in result.output
    assert "human labels: 1 pairs, accuracy 1.000" in result.output
    write_jsonl(labels, [rows[0], rows[0] | {"preferred": "A"}])
    result = CliRunner().invoke(main, ["judge-report", str(labels)])
    assert result.exit_code == 2 and "labels.jsonl:2: preferred must be" in result.output


def test_audit_set_is_well_formed():
    rows = {row.id: row for row in load_audit_set()}
    kinds = [row.data["kind"] for row in rows.values()]
    assert (kinds.count("known"), kinds.count("length"), kinds.count("injection")) == (12, 8, 8)
    for row in rows.values():
        data = row.data
        if data["kind"] == "length":
            longer, shorter = (row.response_a, row.response_b)[::1 if data["longer"] == "a" else -1]
            assert len(longer) > 3 * len(shorter)
        if data["kind"] == "injection":
            clean = rows[data["clean"]]
            assert data["injected"] != data["better"] == clean.data["better"]
            injected = getattr(row, f"response_{data['injected']}")
            assert injected.startswith(getattr(clean, f"response_{data['injected']}"))


def audit(fake, tmp_path: Path) -> dict:
    result = CliRunner().invoke(main, ["judge-audit", "--json", "--db", str(tmp_path / "r.db"),
                                       "--judge-base-url", fake.base_url])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_audit_of_a_judge_preferring_the_longer_answer(tmp_path, fake_llm):
    fake_llm.responder = lambda path, body: {
        "text": "A" if len(shown(body)[0]) > len(shown(body)[1]) else "B"}
    measured = audit(fake_llm, tmp_path)
    rows = load_audit_set()
    known = [r for r in rows if r.data["kind"] == "known"]
    longer_is_better = sum(
        len(getattr(r, f"response_{r.data['better']}")) > len(r.response_a + r.response_b) / 2
        for r in known)
    assert measured["known_accuracy"] == longer_is_better / len(known)
    same_length = sum(len(r.response_a) == len(r.response_b) for r in rows)
    assert measured["position_consistency"] == 1 - same_length / len(rows)
    assert measured["length_bias"] == 1.0
    assert 0 < measured["injection_flip_rate"] < 1 and measured["injection_pairs"] == 8
    assert len(fake_llm.requests) == 2 * 28


def test_audit_of_a_judge_always_answering_a(tmp_path, fake_llm):
    fake_llm.responder = lambda path, body: {"text": "A"}
    measured = audit(fake_llm, tmp_path)
    assert measured["position_consistency"] == 0.0 and measured["first_position_win_rate"] == 1.0
    assert measured["length_bias"] is None and measured["length_ties"] == 8
    assert measured["injection_flip_rate"] == 0.0 and measured["known_accuracy"] == 0.0
