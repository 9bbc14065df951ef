"""`rlaif generate flan` end to end: formats, reruns, bad input, the database, paraphrasing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from align.cli import main
from datagen import store
from datagen.flan.render import sft_examples
from datagen.flan.template_files import load_templates, placeholders

DATA = Path(__file__).parent / "data" / "flan"
NLI = str(DATA / "nli.jsonl")


def flan(*args: str):
    return CliRunner().invoke(main, ["generate", "flan", *args])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def nli_rows() -> list[dict]:
    return [json.loads(line) for line in Path(NLI).read_text().splitlines()]


# --- output ----------------------------------------------------------------------------------


def test_rows_have_the_documented_fields(tmp_path):
    out = tmp_path / "out.jsonl"
    result = flan("--input", NLI, "--task", "nli", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = read(out)
    assert len(rows) == 10
    assert set(rows[0]) == {"messages", "task", "template_id", "source", "shots", "answer", "id"}
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    assert rows[3]["source"] == {"file": NLI, "row": 3}
    assert rows[0]["task"] == "nli" and rows[0]["shots"] == 0 and rows[0]["answer"] == "yes"
    assert "flan: 10 examples (nli 10) ->" in result.stderr


def test_same_arguments_and_seed_give_identical_bytes(tmp_path):
    args = ["--input", NLI, "--task", "nli", "--input", str(DATA / "sentiment.csv"),
            "--task", "sentiment", "--shots", "2", "--options-style", "random", "--seed", "11"]
    assert flan(*args, "-o", str(tmp_path / "a.jsonl")).exit_code == 0
    assert flan(*args, "-o", str(tmp_path / "b.jsonl")).exit_code == 0
    assert flan(*args[:-1], "12", "-o", str(tmp_path / "c.jsonl")).exit_code == 0
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert a == b != c


def test_stdout_output():
    result = flan("--input", NLI, "--task", "nli", "--limit", "2")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2


def test_limit_and_max_per_task(tmp_path):
    out = tmp_path / "o.jsonl"
    assert flan("--input", NLI, "--task", "nli", "--limit", "4", "-o", str(out)).exit_code == 0
    assert len(read(out)) == 4
    assert flan("--input", NLI, "--task", "nli", "--max-per-task", "3", "-o",
                str(out)).exit_code == 0
    assert [r["source"]["row"] for r in read(out)] == [0, 1, 2]


def test_mixing_two_inputs_with_a_cap(tmp_path):
    out = tmp_path / "o.jsonl"
    result = flan("--input", NLI, "--input", str(DATA / "paraphrase.tsv"), "--task", "nli",
                  "--task", "paraphrase", "--max-per-task", "6", "-o", str(out))
    assert result.exit_code == 0, result.output
    tasks = [r["task"] for r in read(out)]
    assert tasks.count("nli") == 6 and tasks.count("paraphrase") == 6
    assert tasks != sorted(tasks)  # interleaved, not concatenated


def test_parquet_and_saved_dataset_inputs_match_jsonl(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = nli_rows()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nli.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "nli_hf"))
    outputs = []
    for source in (NLI, tmp_path / "nli.parquet", tmp_path / "nli_hf"):
        out = tmp_path / "o.jsonl"
        result = flan("--input", str(source), "--task", "nli", "--seed", "3", "-o", str(out))
        assert result.exit_code == 0, result.output
        outputs.append([r["messages"] for r in read(out)])
    assert outputs[0] == outputs[1] == outputs[2]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "dd"))
    result = flan("--input", str(tmp_path / "dd"), "--task", "nli")
    assert result.exit_code == 2
    assert "holds splits (train); give one split's folder" in result.output


def test_field_map_with_nested_columns(tmp_path):
    data = write_jsonl(tmp_path / "wmt.jsonl", [
        {"translation": {"de": "Guten Tag", "en": "Good day"}, "src": "German", "tgt": "English"},
        {"translation": {"de": "Danke", "en": "Thank you"}, "src": "German", "tgt": "English"},
    ])
    out = tmp_path / "o.jsonl"
    result = flan("--input", str(data), "--task", "translation", "--field-map",
                  "source_text=translation.de,translation=translation.en,"
                  "source_language=src,target_language=tgt", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = read(out)
    assert "Guten Tag" in rows[0]["messages"][0]["content"]
    assert rows[0]["answer"] == "Good day"


def test_templates_file_option(tmp_path):
    out = tmp_path / "o.jsonl"
    path = Path(__file__).parents[1] / "datagen" / "flan" / "templates" / "nli.yaml"
    assert flan("--input", NLI, "--templates", str(path), "-o", str(out)).exit_code == 0
    assert flan("--input", NLI, "--task", "nli", "-o", str(tmp_path / "b.jsonl")).exit_code == 0
    assert out.read_text() == (tmp_path / "b.jsonl").read_text()


# --- the database ---------------------------------------------------------------------------------


def test_db_saves_rows_and_the_run_and_feeds_the_sft_export(tmp_path):
    db_path = tmp_path / "p.db"
    out = tmp_path / "o.jsonl"
    args = ["--input", NLI, "--task", "nli", "--shots", "1", "--db", str(db_path), "-o", str(out)]
    result = flan(*args)
    assert result.exit_code == 0, result.output
    assert "10 new rows in the database (run flan-" in result.stderr
    db = store.open_db(db_path)
    assert store.count_rows(db, "flan_examples") == 10
    runs = store.load_rows(db, "runs")
    assert len(runs) == 1 and runs[0]["kind"] == "flan" and runs[0]["status"] == "ok"
    summary = store.get_run(db, runs[0]["id"])["summary"]
    assert summary["examples"] == 10 and summary["saved"] == 10
    sft = list(sft_examples(db))
    assert [s["id"] for s in sft] == [r["id"] for r in read(out)]
    assert sft[0]["source"] == "flan" and sft[0]["task"] == "nli"
    assert sft[0]["messages"] == read(out)[0]["messages"]
    again = flan(*args)  # same content: nothing new
    assert "0 new rows in the database" in again.stderr
    assert store.count_rows(store.open_db(db_path), "flan_examples") == 10


# --- bad input ------------------------------------------------------------------------------------

BAD_ROWS = [
    ([{"premise": "p", "label": 0}], "bad.jsonl:1: row 0, column 'hypothesis': missing"),
    ([{"premise": "p", "hypothesis": "h", "label": 3}],
     "bad.jsonl:1: row 0, column 'label': label 3 is out of range for 3 options"),
    ([{"premise": "p", "hypothesis": "h", "label": -1}],
     "bad.jsonl:1: row 0, column 'label': label -1 is out of range for 3 options"),
    ([{"premise": "p", "hypothesis": "h", "label": "maybe"}],
     "bad.jsonl:1: row 0, column 'label': 'maybe' is not an accepted label (accepted: yes, it "
     "is not possible to tell, no, or their index 0-2; map others with --label-map "
     "maybe=LABEL)"),
    ([{"premise": "p", "hypothesis": "h"}], "bad.jsonl:1: row 0, column 'label': missing"),
    ([{"premise": "p", "hypothesis": "  ", "label": 0}],
     "bad.jsonl:1: row 0, column 'hypothesis': empty"),
    ([{"premise": None, "hypothesis": "h", "label": 0}],
     "bad.jsonl:1: row 0, column 'premise': missing value"),
    ([{"premise": ["p"], "hypothesis": "h", "label": 0}],
     "bad.jsonl:1: row 0, column 'premise': expected text, found list"),
    ([{}], "bad.jsonl:1: row 0: empty row"),
    (["   "], "bad.jsonl:1: row 0: empty row"),
    (['{"premise": "p", '], "bad.jsonl:1: row 0: invalid JSON (Expecting property name"),
    (["[1, 2]"], "bad.jsonl:1: row 0: expected a JSON object"),
]


@pytest.mark.parametrize("rows, message", BAD_ROWS)
def test_bad_rows_exit_2_and_write_nothing(tmp_path, rows, message):
    good = nli_rows()[:3]
    data = write_jsonl(tmp_path / "bad.jsonl", [*rows, *good] if "row 0" in message else rows)
    out, db = tmp_path / "out.jsonl", tmp_path / "p.db"
    result = flan("--input", str(data), "--task", "nli", "-o", str(out), "--db", str(db))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and not db.exists()
    assert list(tmp_path.iterdir()) == [data]  # no temporary file left behind


def test_bad_row_in_the_middle_names_its_line(tmp_path):
    rows = nli_rows()
    rows[5] = {**rows[5], "label": 7}
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = flan("--input", str(data), "--task", "nli", "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 2
    assert "bad.jsonl:6: row 5, column 'label': label 7 is out of range for 3 options" in (
        result.output)
    assert not (tmp_path / "o.jsonl").exists()


def test_skip_counts_and_reports_bad_rows(tmp_path):
    rows = [*nli_rows()[:4], {"premise": "p", "label": 0}, "", *nli_rows()[4:6],
            {"premise": "p", "hypothesis": "h", "label": 9}]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "o.jsonl"
    result = flan("--input", str(data), "--task", "nli", "--on-bad-row", "skip", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert [r["source"]["row"] for r in read(out)] == [0, 1, 2, 3, 6, 7]
    assert "flan: skipped 3 bad rows, e.g.:" in result.stderr
    assert "bad.jsonl:5: row 4, column 'hypothesis': missing" in result.stderr
    assert "bad.jsonl:6: row 5: empty row" in result.stderr
    assert "bad.jsonl:9: row 8, column 'label': label 9 is out of range" in result.stderr


def test_csv_problems(tmp_path):
    missing = tmp_path / "m.csv"
    missing.write_text("premise,label\nA,0\n")
    result = flan("--input", str(missing), "--task", "nli")
    assert result.exit_code == 2
    assert ("m.csv:1: column 'hypothesis' is missing (columns: premise, label); map one with "
            "--field-map hypothesis=COLUMN") in result.output
    ragged = tmp_path / "r.csv"
    ragged.write_text('premise,hypothesis,label\n"a\nb",c,0\nx,y\n,,\n')
    result = flan("--input", str(ragged), "--task", "nli", "--on-bad-row", "skip")
    assert result.exit_code == 0
    assert "r.csv:4: row 1: expected 3 cells, found 2" in result.stderr
    assert "r.csv:5: row 2: empty row" in result.stderr
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"premise,hypothesis,label\n\xff\xfe,x,0\n")
    result = flan("--input", str(binary), "--task", "nli")
    assert result.exit_code == 2 and "b.csv:2: cannot read (not UTF-8 text)" in result.output


def test_mapped_column_missing_names_both_names(tmp_path):
    data = tmp_path / "m.tsv"
    data.write_text("s1\ts2\tlabel\na\tb\t1\n")
    result = flan("--input", str(data), "--task", "paraphrase", "--field-map", "sentence1=s1,"
                  "sentence2=sent2")
    assert result.exit_code == 2
    assert "m.tsv:1: column 'sent2' (sentence2) is missing (columns: s1, s2, label)" in (
        result.output)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope.jsonl", "nope.jsonl: no such file"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "x.txt: unknown input format"),
    (lambda p: (p / "x.parquet").write_text("not parquet") and p / "x.parquet",
     "x.parquet: cannot read Parquet"),
    (lambda p: (p / "folder").mkdir() or p / "folder", "folder: cannot read saved dataset"),
])
def test_unreadable_inputs(tmp_path, make, message):
    path = make(tmp_path)
    result = flan("--input", str(path), "--task", "nli", "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_unreadable_second_input_when_mixing(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    result = flan("--input", NLI, "--input", str(bad), "--task", "nli")
    assert result.exit_code == 2 and "x.parquet: cannot read Parquet" in result.output
    csv_bad = tmp_path / "b.csv"
    csv_bad.write_bytes(b"premise,hypothesis,label\n\xff,x,0\n")
    result = flan("--input", NLI, "--input", str(csv_bad), "--task", "nli")
    assert result.exit_code == 2 and "b.csv:2: cannot read (not UTF-8 text)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--input", NLI], "name the templates: --templates FILE.yaml or --task NAME"),
    (["--task", "nli"], "--input: give at least one dataset"),
    (["--input", NLI, "--task", "nope"], "--task: unknown task 'nope'"),
    (["--input", NLI, "--task", "nli", "--templates", "x.yaml"], "not both"),
    (["--input", NLI, "--input", NLI, "--input", NLI, "--task", "nli", "--task", "nli"],
     "--templates/--task: give it once, or once per --input (3); got 2"),
    (["--input", NLI, "--task", "nli", "--field-map", "premise"],
     "--field-map: expected target=source, got 'premise'"),
    (["--input", NLI, "--task", "nli", "--field-map", "colour=x"],
     "--field-map: 'colour' is not a column of task nli"),
    (["--input", NLI, "--task", "nli", "--shots", "10"],
     "nli.jsonl: --shots 10 needs at least 11 usable rows, found 10"),
    (["--input", NLI, "--task", "nli", "--cot"], "--cot: task nli has no rationale_field"),
    (["--input", NLI, "--task", "nli", "--options-style", "fancy"], "Invalid value"),
    (["--input", NLI, "--task", "nli", "--paraphrase-templates", "2"],
     "--paraphrase-templates: name the new template file with -o"),
])
def test_usage_errors_exit_2(args, message):
    result = flan(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bad_template_file_on_the_command_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: x\nfields: [a]\ntemplates:\n  - id: x-1\n    input: '{b}'\n"
                    "    target: '{answer}'\n")
    result = flan("--input", NLI, "--templates", str(path))
    assert result.exit_code == 2
    assert f"{path}:4: template x-1: input: unknown placeholder {{b}} (allowed: a)" in (
        result.output)


def test_per_row_options_problems(tmp_path):
    base = {"question": "q?", "label": 0}
    cases = [
        ({**base, "choices": "a, b"}, "column 'choices': expected a list of at least 2 options"),
        ({**base, "choices": ["only"]}, "column 'choices': expected a list of at least 2"),
        ({**base, "choices": [str(i) for i in range(27)]}, "27 options; at most 26 can be shown"),
        ({**base, "choices": ["a", "b"], "label": 2}, "label 2 is out of range for 2 options"),
    ]
    for row, message in cases:
        data = write_jsonl(tmp_path / "mc.jsonl", [row])
        result = flan("--input", str(data), "--task", "multiple_choice")
        assert result.exit_code == 2 and message in result.output, (row, result.output)


# --- paraphrasing templates ---------------------------------------------------------------------

TWO = """\
task: toy
fields: [premise, hypothesis]
options: ["yes", "no"]
templates:
  - id: toy-01
    input: "{premise}\\nDoes it follow that {hypothesis}?\\n{options}"
    target: "{answer}"
  - id: toy-02
    input: "{premise} / {hypothesis}"
    target: "Answer: {answer}"
"""


def scripted(path: str, body: dict) -> dict:
    """Replies keyed by which template is asked about, and whether it is a re-ask."""
    user = body["messages"][1]["content"]
    reask = len(body["messages"]) > 2
    if "Does it follow that" in user:
        return {"text": json.dumps({"templates": [
            {"input": "{premise}\n{options}\nIs {hypothesis} implied?", "target": "{answer}"},
            {"input": "Given {premise}, is {hypothesis} true? {options}", "target": "{answer}"},
        ]})}
    if not reask:  # one usable, one that lost a placeholder, one that is not a template
        return {"text": "```json\n" + json.dumps({"templates": [
            {"input": "{hypothesis} -- {premise}", "target": "It is {answer}"},
            {"input": "{premise} only", "target": "{answer}"},
            "nonsense",
        ]}) + "\n```"}
    return {"text": json.dumps({"templates": [
        {"input": "Premise: {premise}. Hypothesis: {hypothesis}.", "target": "{answer}"}]})}


def test_paraphrase_templates_through_the_ledger(tmp_path, fake_llm):
    fake_llm.responder = scripted
    source = tmp_path / "toy.yaml"
    source.write_text(TWO)
    out, db = tmp_path / "toy.paraphrased.yaml", tmp_path / "p.db"
    args = ["--templates", str(source), "--paraphrase-templates", "2", "-o", str(out),
            "--db", str(db), "--base-url", fake_llm.base_url, "--model", "m"]
    result = flan(*args)
    assert result.exit_code == 0, result.output
    spec = load_templates(out)
    assert [t.id for t in spec.templates] == ["toy-01-p1", "toy-01-p2", "toy-02-p1", "toy-02-p2"]
    original = load_templates(source)
    for new in spec.templates:
        old = next(t for t in original.templates if new.id.startswith(t.id))
        assert set(placeholders(new.input)) == set(placeholders(old.input))
        assert set(placeholders(new.target)) == set(placeholders(old.target))
    assert yaml.safe_load(out.read_text())["options"] == ["yes", "no"]
    assert len(fake_llm.requests) == 3  # two asks and one re-ask
    reask = next(r["body"] for r in fake_llm.requests if len(r["body"]["messages"]) > 2)
    assert "differ from" in reask["messages"][-1]["content"]  # the problems are sent back
    assert "an item is not a template" in reask["messages"][-1]["content"]
    assert store.ledger_totals(store.open_db(db))["ok"] == 3
    out.unlink()
    assert flan(*args).exit_code == 0  # the rerun is answered from the ledger
    assert len(fake_llm.requests) == 3
    assert load_templates(out).templates == spec.templates


def test_paraphrase_shortfall_is_reported(tmp_path, fake_llm):
    fake_llm.responder = lambda path, body: {"text": "not json at all"}
    source = tmp_path / "toy.yaml"
    source.write_text(TWO)
    out = tmp_path / "new.yaml"
    result = flan("--templates", str(source), "--paraphrase-templates", "1", "-o", str(out),
                  "--db", str(tmp_path / "p.db"), "--base-url", fake_llm.base_url)
    assert result.exit_code == 1
    assert "template toy-01: 1 of 1 phrasings unusable (the reply was not JSON" in result.output
    assert "no usable phrasing for task toy; nothing written" in result.output
    assert not out.exists()


# --- label maps (issue 17) ------------------------------------------------------------------


def nli_csv(tmp_path: Path) -> Path:
    names = ["entailment", "neutral", "contradiction"]
    path = tmp_path / "nli.csv"
    path.write_text("premise,hypothesis,label\n" + "".join(
        f"\"{r['premise']}\",\"{r['hypothesis']}\",{names[r['label']]}\n"
        for r in nli_rows()))
    return path


def test_label_map_inline_and_from_a_yaml_file_give_the_same_rows(tmp_path):
    source = nli_csv(tmp_path)
    unmapped = flan("--input", str(source), "--task", "nli", "-o", str(tmp_path / "x.jsonl"))
    assert unmapped.exit_code == 2 and "'entailment' is not an accepted label" in unmapped.output
    assert "accepted: yes, it is not possible to tell, no" in unmapped.output
    inline = flan("--input", str(source), "--task", "nli", "-o", str(tmp_path / "a.jsonl"),
                  "--label-map",
                  'entailment=yes,neutral="it is not possible to tell",contradiction=no')
    assert inline.exit_code == 0, inline.output
    (tmp_path / "labels.yaml").write_text(
        "entailment: yes\nneutral: it is not possible to tell\ncontradiction: no\n")
    from_file = flan("--input", str(source), "--task", "nli", "-o", str(tmp_path / "b.jsonl"),
                     "--label-map", str(tmp_path / "labels.yaml"))
    assert from_file.exit_code == 0, from_file.output
    mapped = read(tmp_path / "a.jsonl")
    assert mapped == read(tmp_path / "b.jsonl")
    expected = {0: "yes", 1: "it is not possible to tell", 2: "no"}
    assert [r["answer"] for r in mapped] == [expected[r["label"]] for r in nli_rows()]


def test_a_label_map_to_a_label_the_task_lacks_names_the_accepted_ones(tmp_path):
    result = flan("--input", str(nli_csv(tmp_path)), "--task", "nli", "-o",
                  str(tmp_path / "x.jsonl"), "--label-map", "entailment=true")
    assert result.exit_code == 2 and not (tmp_path / "x.jsonl").exists()
    assert ("--label-map entailment=true: 'true' is not a label of task nli (accepted: yes, "
            "it is not possible to tell, no)") in result.output


def test_list_tasks_shows_each_builtin_task_with_its_labels():
    result = flan("--list-tasks")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines())
    assert "'yes', 'it is not possible to tell', 'no'" in lines["nli"]
    assert "'negative', 'positive'" in lines["sentiment"]
    assert {"nli", "sentiment", "paraphrase", "topic_classification"} <= set(lines)
