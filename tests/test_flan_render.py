"""Rendering FLAN-style examples: option styles, letter targets, round-robin, k-shot, CoT."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from datagen.errors import UserInputError
from datagen.flan.mix import template_order, with_exemplars
from datagen.flan.render import (
    OptionStyle,
    TaskInput,
    compose_shots,
    convert,
    prepare_templates,
    render_options,
    strip_options,
)
from datagen.flan.template_files import FewShotFormat, TaskTemplates, load_option_styles

DATA = Path(__file__).parent / "data" / "flan"


def spec(**overrides) -> TaskTemplates:
    data = {
        "task": "toy", "fields": ["text"], "options": ["no", "yes"],
        "templates": [
            {"id": "t1", "input": "{text}\n{options}", "target": "{answer}"},
            {"id": "t2", "input": "{text}?", "target": "{answer}"},
            {"id": "t3", "input": "Q: {text}\n\n{options}\nDecide.", "target": "It is {answer}"},
        ],
    }
    return TaskTemplates.model_validate({**data, **overrides})


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_rows(n: int) -> list[dict]:
    return [{"text": f"sentence number {i}", "label": i % 2} for i in range(n)]


# --- options -----------------------------------------------------------------------------------


def test_plain_options_are_a_header_and_dash_lines():
    styles = load_option_styles()
    text, labels = render_options(["yes", "no"], OptionStyle(styles.plain_start,
                                                             styles.plain_item, ""))
    assert text == "OPTIONS:\n- yes\n- no"
    assert labels is None


@pytest.mark.parametrize("item, expected, labels", [
    ("- ", "H\n- yes.\n- no.", None),
    ("({LETTER}) ", "H\n(A) yes.\n(B) no.", ["(A)", "(B)"]),
    ("{letter}) ", "H\na) yes.\nb) no.", ["a)", "b)"]),
    ("{number}. ", "H\n1. yes.\n2. no.", ["1.", "2."]),
    ("({roman}) ", "H\n(i) yes.\n(ii) no.", ["(i)", "(ii)"]),
    ("{ROMAN}. ", "H\nI. yes.\nII. no.", ["I.", "II."]),
    ("Option {LETTER}: ", "H\nOption A: yes.\nOption B: no.", ["Option A", "Option B"]),
])
def test_option_item_styles_and_their_names(item, expected, labels):
    assert render_options(["yes", "no"], OptionStyle("H\n", item, ".")) == (expected, labels)


def test_every_style_in_the_pool_renders_start_items_and_endings():
    styles = load_option_styles()
    options = ["red", "green", "blue"]
    for start in styles.starts:
        for item in styles.items:
            for end in styles.endings:
                text, labels = render_options(options, OptionStyle(start, item, end))
                assert text.startswith(start)
                lines = text[len(start):].split("\n")
                assert all(line.endswith(o + end)
                           for line, o in zip(lines, options, strict=True))
                if labels is not None:  # named items: distinct names, each shown on its line
                    assert len(set(labels)) == 3
                    assert all(line.startswith(label)
                               for line, label in zip(lines, labels, strict=True))


def test_roman_names_go_up_to_26():
    options = [f"o{i}" for i in range(26)]
    _, labels = render_options(options, OptionStyle("", "({roman}) ", ""))
    assert labels[3] == "(iv)" and labels[8] == "(ix)" and labels[25] == "(xxvi)"


def test_random_style_rewrites_target_to_the_item_name(tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(300))
    examples = list(convert([TaskInput(data, spec(), {})], options_style="random", seed=1))
    named = 0
    for ex in examples:
        user, target = ex.messages[0].content, ex.messages[1].content
        if ex.template_id == "t2":  # no options shown: the option text
            assert target == ex.answer
            continue
        answer_line = next(line for line in user.split("\n") if line.rstrip(";.").endswith(
            " " + ex.answer) or line.rstrip(";.").endswith(ex.answer))
        prefix = answer_line[: answer_line.rindex(ex.answer)]
        name = prefix.strip().rstrip(":").strip()
        body = target.removeprefix("It is ")
        if name in ("-", "*", "+"):
            assert body == ex.answer
        else:
            assert body == name
            named += 1
    assert named > 50


def test_random_style_varies_and_is_seeded(tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(60))
    first = [e.messages[0].content for e in convert([TaskInput(data, spec(), {})],
                                                    options_style="random", seed=5)]
    again = [e.messages[0].content for e in convert([TaskInput(data, spec(), {})],
                                                    options_style="random", seed=5)]
    other = [e.messages[0].content for e in convert([TaskInput(data, spec(), {})],
                                                    options_style="random", seed=6)]
    assert first == again != other
    headers = {text.split("\n")[1] for text in first if text.count("\n") >= 2}
    assert len(headers) > 5


def test_options_style_none_drops_the_block_and_keeps_the_rest():
    assert strip_options("{text}\n{options}") == "{text}"
    assert strip_options("Q: {text}\n\n{options}\nDecide.") == "Q: {text}\nDecide."
    assert strip_options("{options}\n\nPick for: {text}") == "Pick for: {text}"
    prepared = prepare_templates(spec(), "none")
    assert [p.input for p in prepared] == ["{text}", "{text}?", "Q: {text}\nDecide."]
    assert not any(p.shows_options for p in prepared)


def test_options_style_none_keeps_option_text_targets(tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(9))
    for ex in convert([TaskInput(data, spec(), {})], options_style="none"):
        assert "OPTIONS" not in ex.messages[0].content
        assert ex.messages[1].content.removeprefix("It is ") == ex.answer


# --- template assignment -----------------------------------------------------------------------


@pytest.mark.parametrize("k, n", [(1, 5), (3, 10), (7, 100), (10, 1003), (4, 3)])
def test_round_robin_counts_differ_by_at_most_one(k, n):
    order = template_order(k, random.Random(0))
    counts = Counter(next(order) for _ in range(n))
    full = [counts.get(i, 0) for i in range(k)]
    assert max(full) - min(full) <= 1
    assert sum(full) == n


def test_round_robin_through_convert(tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(100))
    counts = Counter(e.template_id for e in convert([TaskInput(data, spec(), {})]))
    assert set(counts) == {"t1", "t2", "t3"}
    assert max(counts.values()) - min(counts.values()) <= 1


# --- k-shot --------------------------------------------------------------------------------------


def test_exemplars_never_include_the_row_itself():
    rows = list(range(1000))
    for row, exemplars in with_exemplars(rows, 5, random.Random(0), "x", window=32):
        assert row not in exemplars
        assert len(set(exemplars)) == 5
        assert all(abs(e - row) <= 32 for e in exemplars)


def test_exemplars_in_a_dataset_smaller_than_the_window():
    seen = Counter()
    for row, exemplars in with_exemplars(range(4), 3, random.Random(0), "x"):
        assert sorted(exemplars) == [r for r in range(4) if r != row]
        seen[row] += 1
    assert seen == Counter({0: 1, 1: 1, 2: 1, 3: 1})


def test_too_few_rows_for_the_shots():
    with pytest.raises(UserInputError, match="x: --shots 3 needs at least 4 usable rows, found 3"):
        list(with_exemplars(range(3), 3, random.Random(0), "x"))


def test_k_shot_prompt_has_k_other_rows_and_ends_with_the_query(tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(50))
    for ex in convert([TaskInput(data, spec(), {})], shots=3, seed=2):
        user = ex.messages[0].content
        blocks = user.split("\n\n\n")
        assert len(blocks) == 4
        numbers = [re.findall(r"sentence number (\d+)\b", block) for block in blocks]
        assert numbers[-1] == [str(ex.source.row)]
        shown = [n for block in numbers[:-1] for n in block]
        assert len(set(shown)) == 3 and str(ex.source.row) not in shown
        assert ex.shots == 3


def test_compose_shots_layout():
    fmt = FewShotFormat(inputs_prefix="Q: ", targets_prefix="A: ", x_y_delimiter="\n",
                        example_separator="\n\n")
    text = compose_shots(fmt, [("x1", "y1"), ("x2", "y2")], "x3")
    assert text == "Q: x1\nA: y1\n\nQ: x2\nA: y2\n\nQ: x3\nA:"
    assert compose_shots(FewShotFormat(), [("x1", "y1")], "x2") == "x1\n\ny1\n\n\nx2"


# --- chain of thought ---------------------------------------------------------------------------


def test_cot_target_uses_the_rationale_and_the_answer():
    data = DATA / "closed_qa.jsonl"
    from datagen.flan.template_files import load_templates, task_path

    task = load_templates(task_path("closed_qa"))
    plain = list(convert([TaskInput(data, task, {})]))
    cot = list(convert([TaskInput(data, task, {})], cot=True))
    assert plain[0].messages[1].content == "Jupiter"
    assert cot[0].messages[1].content == (
        "Jupiter's mass is more than twice that of all other planets combined.\n"
        "So the answer is Jupiter.")
    assert [e.messages[0].content for e in plain] == [e.messages[0].content for e in cot]


def test_cot_needs_a_rationale_field(tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", toy_rows(3))
    with pytest.raises(UserInputError, match="--cot: task toy has no rationale_field"):
        list(convert([TaskInput(data, spec(), {})], cot=True))
