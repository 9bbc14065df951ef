"""Template files: validation at load time, the built-in library, and golden renderings.

Golden files live in tests/golden/flan/;
``RLAIF_UPDATE_GOLDEN=1 pytest tests/test_flan_templates.py`` rewrites them (review the diff).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_golden

from datagen.errors import UserInputError
from datagen.flan.render import (
    OptionStyle,
    TaskInput,
    convert,
    load_paraphrase_prompt,
    paraphrase_messages,
    render_options,
)
from datagen.flan.template_files import builtin_tasks, load_option_styles, load_templates, task_path

HERE = Path(__file__).parent
DATA = HERE / "data" / "flan"
GOLDEN = HERE / "golden" / "flan"

# Which test file renders each family, and the column renames it needs.
FAMILY_DATA = {
    "acceptability": ("acceptability.tsv", {}),
    "closed_qa": ("closed_qa.jsonl", {}),
    "coreference": ("coreference.jsonl", {}),
    "extractive_qa": ("extractive_qa.jsonl", {}),
    "multiple_choice": ("multiple_choice.jsonl", {}),
    "nli": ("nli.jsonl", {}),
    "paraphrase": ("paraphrase.tsv", {}),
    "question_generation": ("question_generation.jsonl", {}),
    "sentiment": ("sentiment.csv", {}),
    "summarization": ("summarization.jsonl", {}),
    "title_generation": ("title_generation.csv", {}),
    "topic_classification": ("topic_classification.csv", {}),
    "translation": ("translation.jsonl", {"source_text": "src", "translation": "tgt",
                                          "source_language": "from", "target_language": "to"}),
}


def as_text(examples) -> str:
    parts = []
    for ex in examples:
        user, target = ex.messages[0].content, ex.messages[1].content
        parts.append(f"=== {ex.template_id} (row {ex.source.row}, answer: {ex.answer})\n"
                     f"--- input\n{user}\n--- target\n{target}\n")
    return "\n".join(parts)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


GOOD = """\
task: toy
fields: [premise, hypothesis]
options: ["yes", "no"]
templates:
  - id: toy-01
    input: "{premise} {hypothesis}\\n{options}"
    target: "{answer}"
  - id: toy-02
    input: "{premise}"
    target: "{answer}"
"""


# --- validation ------------------------------------------------------------------------------


def test_a_good_file_loads(tmp_path):
    spec = load_templates(write(tmp_path, GOOD))
    assert spec.task == "toy" and [t.id for t in spec.templates] == ["toy-01", "toy-02"]
    assert spec.label_field == "label"


def test_unknown_placeholder_names_file_line_template_and_placeholder(tmp_path):
    path = write(tmp_path, GOOD.replace('input: "{premise}"', 'input: "{premise} {hypotesis}"'))
    with pytest.raises(UserInputError) as err:
        load_templates(path)
    assert str(err.value.message) == (
        f"{path}:8: template toy-02: input: unknown placeholder {{hypotesis}} "
        "(allowed: hypothesis, options, premise)")


def test_target_without_answer_is_rejected(tmp_path):
    path = write(tmp_path, GOOD.replace('target: "{answer}"\n  - id: toy-02',
                                        'target: "{premise}"\n  - id: toy-02'))
    with pytest.raises(UserInputError, match=r"t\.yaml:5: template toy-01: target: missing "
                                             r"placeholder \{answer\}"):
        load_templates(path)


@pytest.mark.parametrize("change, message", [
    (("task: toy", "task: toy\ncolour: red"), r"t\.yaml:2: colour: Extra inputs are not permitted"),
    (('"{answer}"\n  - id: toy-02', '"{answer}"\n    note: x\n  - id: toy-02'),
     r"t\.yaml:5: templates\.0\.note: Extra inputs"),
    (("id: toy-02", "id: toy-01"), r"t\.yaml:8: template toy-01: duplicate id"),
    (('"{premise}"', '"{premise:>10}"'), r"template toy-02: input: placeholder \{premise:>10\} "
                                        r"must be a plain \{name\}"),
    (('"{premise}"', '"{premise"'), r"template toy-02: input: .*literal brace"),
    (('"{premise}"', '"{}"'), r"template toy-02: input: placeholder \{\} must be"),
    (('target: "{answer}"\n  - id: toy-02', 'target: "{answer} {options}"\n  - id: toy-02'),
     r"template toy-01: target: unknown placeholder \{options\}"),
    (('"{premise}"', '"{premise} {answer}"'), r"template toy-02: input: unknown placeholder "
                                               r"\{answer\}"),
    (("fields: [premise, hypothesis]", "fields: [premise, hypothesis, answer]"),
     r"fields: 'answer' is not usable"),
    (('options: ["yes", "no"]\n', 'options: ["yes", "yes"]\n'), r"options must be distinct"),
    (('options: ["yes", "no"]\n', ''), r"toy-01: input: unknown placeholder \{options\}"),
    (("templates:", "label_field: premise\ntemplates:"), r"label_field 'premise' is also an input"),
    (("templates:", "cot_target: '{answer}'\nrationale_field: why\ntemplates:"),
     r"cot_target: missing placeholder \{rationale\}"),
    (("templates:", "rationale_field: why\ntemplates:"), r"rationale_field and cot_target go"),
    (("templates:", "templates: []\nx:"), r"t\.yaml:\d+: .*"),
    (("- id: toy-01", "- id: toy-01\n    input: [1]"), r"t\.yaml:6: duplicate key 'input'"),
    (("- id: toy-01", "- id: [1]"), r"t\.yaml:5: templates\.0\.id: Input should be a valid string"),
])
def test_bad_files_are_one_line_user_errors(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(UserInputError, match=message) as err:
        load_templates(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in err.value.message


def test_unreadable_template_files(tmp_path):
    with pytest.raises(UserInputError, match=r"nope\.yaml: cannot read template file"):
        load_templates(tmp_path / "nope.yaml")
    with pytest.raises(UserInputError, match=r"t\.yaml:3: invalid YAML \(expected ','"):
        load_templates(write(tmp_path, "task: toy\nfields: [a\n"))
    with pytest.raises(UserInputError, match=r"t\.yaml: file: Input should be a valid"):
        load_templates(write(tmp_path, "- just a list\n"))


def test_unknown_task_lists_the_built_in_ones():
    with pytest.raises(UserInputError, match=r"--task: unknown task 'nope' \(built in: .*nli"):
        task_path("nope")


# --- the built-in library ------------------------------------------------------------------------


def test_library_has_twelve_families_with_eight_templates_each():
    tasks = builtin_tasks()
    assert len(tasks) >= 12
    assert set(tasks) == set(FAMILY_DATA)
    for task in tasks:
        spec = load_templates(task_path(task))
        assert spec.task == task
        assert len(spec.templates) >= 8, task
        assert all(t.id.startswith(task + "-") for t in spec.templates)
        # some templates put the instruction after the data: the input starts with a field
        assert any(t.input.startswith("{") or t.input.startswith('"{') for t in spec.templates)
        if spec.has_options:  # with options families: some templates do not show them
            shown = ["{options}" in t.input for t in spec.templates]
            assert 0 < sum(shown) < len(shown), task


@pytest.mark.parametrize("task", sorted(FAMILY_DATA))
def test_each_family_renders_its_dataset(task):
    name, field_map = FAMILY_DATA[task]
    spec = load_templates(task_path(task))
    examples = list(convert([TaskInput(DATA / name, spec, field_map)]))
    assert len(examples) >= len(spec.templates)
    assert {e.template_id for e in examples} == {t.id for t in spec.templates}
    for ex in examples:
        user, target = ex.messages[0].content, ex.messages[1].content
        assert user.strip() and target.strip()
        assert ex.answer in target
        assert "{" not in user.replace("{{", "") and "}" not in target
    assert_golden(GOLDEN / f"{task}.txt", as_text(examples))


def test_golden_random_options_two_shot():
    spec = load_templates(task_path("multiple_choice"))
    examples = convert([TaskInput(DATA / "multiple_choice.jsonl", spec, {})], shots=2,
                       options_style="random", cot=True, seed=7, limit=4)
    assert_golden(GOLDEN / "multiple_choice_random_2shot_cot.txt", as_text(examples))


def test_golden_option_styles():
    styles = load_option_styles()
    lines = []
    for kind, pool in (("start", styles.starts), ("item", styles.items),
                       ("ending", styles.endings)):
        for value in pool:
            style = OptionStyle(value if kind == "start" else "OPTIONS:\n",
                                value if kind == "item" else "- ",
                                value if kind == "ending" else "")
            text, labels = render_options(["red", "green"], style)
            lines.append(f"=== {kind} {value!r} -> target {labels[1] if labels else 'green'}\n"
                         f"{text}\n")
    assert_golden(GOLDEN / "option_styles.txt", "\n".join(lines))


def test_golden_paraphrase_prompt():
    spec = load_templates(task_path("nli"))
    messages = paraphrase_messages(load_paraphrase_prompt(), spec, spec.templates[0], 3)
    text = "\n".join(f"--- {m['role']}\n{m['content']}" for m in messages)
    assert_golden(GOLDEN / "paraphrase_prompt.txt", text)
