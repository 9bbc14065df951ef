"""IFEval as the verifier's common language (issue 16): the 25 ids, parity with the reference
checkers, offline sentence splitting, seeded language detection, and `rlaif eval ifeval`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from ifeval_reference import load_reference, reference_lists

from align.cli import main
from align.report import plots
from datagen import store
from judges.constraints.ifeval.evaluate import (
    bundled_prompts_path,
    follow_lists,
    loose_variants,
    read_ifeval_prompts,
)
from judges.constraints.ifeval.instructions import IFEVAL_IDS
from judges.constraints.ifeval.text import count_sentences, detect_language, word_tokens
from judges.constraints.kinds import check, parse_constraints

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"
# The reference draws a random letter when the letter kwarg is not a-z (keys 1129 and 3453 of
# IFEval use "#" and "!"); ours counts the given character. Those two instructions are set
# aside when comparing verdicts.
RANDOM_IN_REFERENCE = {("keywords:letter_frequency", "#"), ("keywords:letter_frequency", "!")}

# Replies that sit on the edges of IFEval's rules (hand-written for this test).
EDGE_REPLIES = [
    "Sure! Here it is:\n***Bold italic*** and **bold** and *it*.\nP.P.S: one more thing",
    "**P.S.** remember the milk\n\nP.S. and the bread",
    "p. s. lower case postscript, p.p.s too",
    "42", "null", "```json\n{\"a\": [1, 2]}\n```", "```\n[1, 2,]\n```", '{"name": "Ann"}\nThanks!',
    "* one\n* two\n*three\n- four\n--- \n-5 degrees\n** not a bullet",
    "SECTION 1 intro\nSection 2 body\nSECTION3 end\nsection 4",
    "first part *** second part ***\n***\nthird part",
    "para one\n\npara two\n\n\n\npara three\n\n",
    "Response one.\n******\nResponse two.",
    "same\n******\nsame",
    '"All quoted, with a comma."',
    "ALL CAPITAL LETTERS HERE, THE U.S. AND NASA ARE BIG.",
    "all lowercase letters in english here, without any capitals at all.",
    "Dr. Smith arrived at 5 p.m. on Jan. 3. He left. 1. First. 2. Second! Why? Yes.",
    "Ceci est une réponse entièrement écrite en français, sans aucun mot anglais.",
    "Dies ist eine Antwort, die vollständig auf Deutsch geschrieben ist. Straße und Fluss.",
    "Это ответ полностью на русском языке.",
    "これは日本語で書かれた答えです。",
    "1234 5678 !!!",
    "<<A Title>>\nbody text with <<>> and <<  >> markers",
    "My answer is yes.", "My answer is maybe. Or no.",
    "[name] lives at [address] on [] and [date]",
    "Is there anything else I can help with?\"",
    "Any other questions?  ",
    "\n\n   \n",
    "",
]


def attempt(instruction_id: str, kwargs: dict) -> str:
    """A reply written to follow one instruction (so the corpus holds passes, not only fails)."""
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        return "\n\n".join(f"{kwargs['first_word'] if i == kwargs['nth_paragraph'] - 1 else 'So'}"
                           " it goes." for i in range(kwargs["num_paragraphs"]))
    if instruction_id == "length_constraints:number_paragraphs":
        return " ***\n".join("A paragraph." for _ in range(kwargs["num_paragraphs"]))
    if instruction_id == "keywords:existence":
        return "We mention " + " and ".join(kwargs["keywords"]) + "."
    if instruction_id == "detectable_format:json_format":
        return '```json\n{"answer": "yes"}\n```'
    if instruction_id == "startend:quotation":
        return '"A quoted reply."'
    if instruction_id == "startend:end_checker":
        return f"Done here. {kwargs['end_phrase']}"
    if instruction_id == "keywords:frequency":
        return " ".join([kwargs["keyword"]] * kwargs["frequency"])
    return "A clean reply.\nP.S. the end"


def edge_replies(row: dict) -> list[str]:
    """Replies for one prompt: the prompt itself, the prompt repeated then answered, one reply
    aimed at each instruction, and five of the hand-written edge cases (rotating by prompt)."""
    prompt = row["prompt"]
    aimed = [attempt(i, k) for i, k in zip(row["instruction_id_list"], row["kwargs"],
                                           strict=True)]
    start = 5 * (row["key"] % 7)
    edges = (EDGE_REPLIES * 2)[start:start + 5]
    return [prompt, f"{prompt.upper()}\n\nOK", f"{prompt}\n\nHere is my answer.", *aimed,
            *edges]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return load_reference(tmp_path_factory.mktemp("nltk_data"))


def bundled_rows() -> list[dict]:
    return [json.loads(line) for line in bundled_prompts_path().read_text().splitlines()]


def test_bundled_prompts_are_ifevals_541_unchanged():
    assert hashlib.sha256(bundled_prompts_path().read_bytes()).hexdigest() == BUNDLED_SHA256
    items = read_ifeval_prompts()
    assert len(items) == 541 and sum(len(item.specs) for item in items) == 834
    assert {i for item in items for i in item.instruction_id_list} == set(IFEVAL_IDS)
    assert len(IFEVAL_IDS) == 25
    notice = (bundled_prompts_path().parent / "NOTICE.md").read_text()
    assert "Apache License, Version 2.0" in notice and BUNDLED_SHA256 in notice


@pytest.mark.slow
def test_verdicts_equal_the_reference_on_every_instruction(reference):
    compared = 0
    seen: dict[str, set[bool]] = {i: set() for i in IFEVAL_IDS}
    for row, item in zip(bundled_rows(), read_ifeval_prompts(), strict=True):
        for response in edge_replies(row):
            ours = follow_lists(item.specs, response)
            theirs = reference_lists(reference, row, response)
            for index, instruction_id in enumerate(row["instruction_id_list"]):
                if (instruction_id, row["kwargs"][index].get("letter")) in RANDOM_IN_REFERENCE:
                    continue
                compared += 1
                seen[instruction_id].add(ours[0][index])
                assert (ours[0][index], ours[1][index]) == (theirs[0][index], theirs[1][index]), (
                    row["key"], instruction_id, response[:80])
    assert compared > 834 * 9
    # the corpus is not trivially all-fail or all-pass: every id sees both strict verdicts
    assert all(found == {True, False} for found in seen.values()), seen


def test_sentence_splitting_needs_no_downloaded_data():
    code = ("import nltk; nltk.data.path[:] = ['/nonexistent'];"
            "from judges.constraints.ifeval.text import split_sentences, word_tokens;"
            "print(split_sentences('Dr. Smith came at 5 p.m. today. 1. First item. Done!'));"
            "print(word_tokens('THE U.S. is big.'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT), "NLTK_DATA": "/nonexistent",
                                          "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert out == ["['Dr. Smith came at 5 p.m. today.', '1.', 'First item.', 'Done!']",
                   "['THE', 'U.S.', 'is', 'big', '.']"]


def test_punkt_counts_abbreviations_as_no_sentence_end():
    assert count_sentences("Dr. Jones met Mr. Brown at 3 p.m. on Fri. They talked.") == 2
    assert [t for t in word_tokens("I SAW THE U.S. NAVY.") if t.isupper()] == [
        "I", "SAW", "THE", "U.S.", "NAVY"]


def test_language_detection_is_seeded_and_reproducible():
    ambiguous = "Ok no va bene si"
    first = detect_language(ambiguous)
    assert all(detect_language(ambiguous) == first for _ in range(20))
    code = ("from judges.constraints.ifeval.text import detect_language;"
            f"print(detect_language({ambiguous!r}))")
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert again.stdout.strip() == first
    assert detect_language("Bonjour tout le monde, comment allez-vous ?") == "fr"
    assert detect_language("12 34 !!") is None


def spec(kind: str, **kwargs):
    return parse_constraints([{"kind": kind, **kwargs}])[0]


@pytest.mark.parametrize(("kind", "kwargs", "text", "expected"), [
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "***x***", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "**x**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "**x**", False),
    ("keywords:letter_frequency", {"letter": "s", "let_frequency": 1, "let_relation": "at least"},
     "Maße", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "x\nP.P.S: more", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "**P.S.** more", True),
    ("detectable_format:json_format", {}, "42", True),
    ("detectable_format:json_format", {}, "null", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "one *** two", True),
    ("keywords:existence", {"keywords": ["art"]}, "a party", True),
    ("keywords:existence", {"keywords": ["a.c"]}, "abc", False),  # literal, not a pattern
    ("punctuation:no_comma", {}, "a，b", True),
    ("startend:quotation", {}, '"', False),
])
def test_ifeval_semantics(kind, kwargs, text, expected):
    assert check(spec(kind, **kwargs), text).satisfied is expected


def test_empty_reply_follows_nothing_even_where_the_rule_is_vacuous():
    for kind in ("punctuation:no_comma", "no_commas", "word_count"):
        args = {"max": 50} if kind == "word_count" else {}
        assert check(spec(kind, **args), " \n").satisfied is False


def test_loose_forgives_first_line_last_line_and_asterisks():
    assert loose_variants("Sure:\n*body*\nBye")[1:4] == ["*body*\nBye", "Sure:\n*body*", "*body*"]
    json_spec = [spec("detectable_format:json_format")]
    assert follow_lists(json_spec, 'Sure, here it is:\n{"a": 1}') == ([False], [True])
    quote = [spec("startend:quotation")]
    assert follow_lists(quote, '**"quoted"**') == ([False], [True])


def run_ifeval(*args: str):
    return CliRunner().invoke(main, ["eval", "ifeval", *args])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_responses_file_gives_the_reference_numbers_and_fields(tmp_path, reference):
    rows = bundled_rows()
    responses = write_jsonl(tmp_path / "resp.jsonl", [
        {"prompt": row["prompt"], "response": edge_replies(row)[i % 7]}
        for i, row in enumerate(rows)])
    out = tmp_path / "out.jsonl"
    result = run_ifeval("--responses", str(responses), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(lines[0]) == ["key", "prompt", "instruction_id_list",
                              "follow_instruction_list_strict", "follow_instruction_list_loose",
                              "response"]
    strict, loose, all_strict, all_loose = [], [], [], []
    for i, row in enumerate(rows):
        s, lo = reference_lists(reference, row, edge_replies(row)[i % 7])
        strict += s
        loose += lo
        all_strict.append(all(s))
        all_loose.append(all(lo))
    if not any(row["kwargs"][j].get("letter") in ("#", "!") for row in rows
               for j in range(len(row["kwargs"]))):
        pytest.fail("expected IFEval's two random-letter instructions")
    expected = {"prompt_level_strict_acc": sum(all_strict) / 541,
                "inst_level_strict_acc": sum(strict) / 834,
                "prompt_level_loose_acc": sum(all_loose) / 541,
                "inst_level_loose_acc": sum(loose) / 834}
    for name, value in expected.items():  # the random letters may move a number by 2 at most
        assert abs(summary[name] - value) <= 2 / 541, name
        low, high = summary[f"{name}_ci"]
        assert low < summary[name] < high
    assert summary["n_prompts"] == 541 and summary["n_instructions"] == 834
    assert summary["average"] == pytest.approx(sum(summary[k] for k in expected) / 4)
    table = summary["per_instruction"]
    assert set(table) == set(IFEVAL_IDS) and sum(v["n"] for v in table.values()) == 834

    text = run_ifeval("--responses", str(responses))
    assert text.exit_code == 0
    assert "prompt_level_strict_acc" in text.output and "change_case:english_capital" in text.output


def test_a_respelled_prompt_is_joined_on_its_first_100_characters(tmp_path):
    # Google's published responses spell one prompt differently from input_data.jsonl
    rows = bundled_rows()[:5]
    lines = [{"prompt": r["prompt"], "response": "ok"} for r in rows]
    lines[2]["prompt"] = rows[2]["prompt"][:100] + rows[2]["prompt"][100:].replace(" ", "  ", 1)
    lines[2]["response"] = "RESPELLED"
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    responses = write_jsonl(tmp_path / "r.jsonl", lines)
    out = tmp_path / "o.jsonl"
    result = run_ifeval("--prompts", str(prompts), "--responses", str(responses), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"matched a response by their first 100 characters (keys [{rows[2]['key']}])" in (
        result.output)
    assert json.loads(out.read_text().splitlines()[2])["response"] == "RESPELLED"
    lines.append(dict(lines[2], prompt=lines[2]["prompt"] + " again"))  # now ambiguous
    write_jsonl(tmp_path / "r.jsonl", lines)
    result = run_ifeval("--prompts", str(prompts), "--responses", str(responses))
    assert result.exit_code == 2 and "1 of 5 prompts have no response" in result.output


def test_missing_response_and_bad_prompts_are_user_errors(tmp_path):
    responses = write_jsonl(tmp_path / "resp.jsonl", [{"prompt": "not an IFEval prompt",
                                                       "response": "x"}])
    result = run_ifeval("--responses", str(responses), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 2 and "541 prompts have no response" in result.output
    assert not (tmp_path / "o.jsonl").exists()
    bad = write_jsonl(tmp_path / "p.jsonl", [{"key": 1, "prompt": "x",
                                              "instruction_id_list": ["keywords:nope"],
                                              "kwargs": [{}]}])
    result = run_ifeval("--prompts", str(bad), "--responses", str(responses))
    assert result.exit_code == 2 and "p.jsonl:1: unknown IFEval instruction id" in result.output
    bad = write_jsonl(tmp_path / "p.jsonl", [{"key": 1, "prompt": "x",
                                              "instruction_id_list": ["punctuation:no_comma"],
                                              "kwargs": [{"num": 3}]}])
    result = run_ifeval("--prompts", str(bad), "--responses", str(responses))
    assert result.exit_code == 2 and "p.jsonl:1: kwargs do not fit" in result.output
    assert run_ifeval().exit_code == 2


def test_contamination_guard(tmp_path):
    rows = bundled_rows()
    responses = write_jsonl(tmp_path / "resp.jsonl",
                            [{"prompt": r["prompt"], "response": "ok"} for r in rows])
    near = rows[5]["prompt"].replace("Write", "Please write", 1)
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Name a fruit."},
                                                   {"instruction": near}])
    result = run_ifeval("--responses", str(responses), "--check-train", str(train), "--json")
    assert result.exit_code == 1
    assert "NOT CLEAN: 1 training prompts" in result.output and "train.jsonl:2" in result.output
    # The project's own prompt sets (constraint prompts, Self-Instruct seeds) are clean.
    ours = [p for p in (ROOT / "judges/constraints/data/constrained_prompts.jsonl",
                        *sorted((ROOT / "datagen").rglob("seed*.jsonl"))) if p.exists()]
    clean = run_ifeval("--responses", str(responses), "--json",
                       *[arg for p in ours for arg in ("--check-train", str(p))])
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.output)["contamination"]["clean"] is True


def test_policy_answers_greedily_through_the_ledger(tmp_path, fake_llm):
    fake_llm.responder = lambda path, body: {"text": "my answer is short"}
    prompts = write_jsonl(tmp_path / "p.jsonl", bundled_rows()[:4])
    args = ["--prompts", str(prompts), "--policy", fake_llm.base_url, "--policy-model", "pol",
            "--db", str(tmp_path / "r.db"), "--json"]
    result = run_ifeval(*args)
    assert result.exit_code == 0, result.output
    bodies = fake_llm.bodies()
    assert len(bodies) == 4
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 1280 for b in bodies)
    summary = json.loads(result.output)
    assert summary["policy"]["model"] == "pol" and summary["sampling"]["max_tokens"] == 1280
    again = run_ifeval(*args)
    assert again.exit_code == 0 and len(fake_llm.requests) == 4
    assert json.loads(again.output)["prompt_level_strict_acc"] == summary["prompt_level_strict_acc"]
    database = store.open_db(tmp_path / "r.db")
    [run] = [store.get_run(database, r["id"]) for r in store.load_rows(database, "runs")]
    assert run["kind"] == "ifeval" and run["status"] == "done"
    assert run["args"]["max_tokens"] == 1280 and run["args"]["temperature"] == 0.0
    assert run["summary"]["inst_level_strict_acc"] == summary["inst_level_strict_acc"]


def test_failed_policy_request_exits_1_then_a_rerun_pays_only_for_it(tmp_path, fake_llm):
    rows = bundled_rows()[:3]
    broken = {"on": True}

    def answer(path, body):
        if broken["on"] and rows[1]["prompt"] in json.dumps(body):
            return {"status": 400, "error": "rejected"}
        return {"text": "fine"}

    fake_llm.responder = answer
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    args = ["--prompts", str(prompts), "--policy", fake_llm.base_url, "--policy-model", "pol",
            "--db", str(tmp_path / "r.db"), "-o", str(tmp_path / "o.jsonl")]
    result = run_ifeval(*args)
    assert result.exit_code == 1 and "1 of 3 requests failed" in result.output
    assert not (tmp_path / "o.jsonl").exists()
    database = store.open_db(tmp_path / "r.db")
    assert [r["status"] for r in store.load_rows(database, "runs")] == ["failed"]
    broken["on"] = False
    sent = len(fake_llm.requests)
    again = run_ifeval(*args)
    assert again.exit_code == 0, again.output
    assert len(fake_llm.requests) == sent + 1 and (tmp_path / "o.jsonl").exists()


def test_label_and_generate_read_ifeval_form(tmp_path, fake_llm):
    pair = {"id": "x1", "prompt": "Answer without commas.", "response_a": "yes indeed",
            "response_b": "", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [pair])
    out = tmp_path / "labels.jsonl"
    result = CliRunner().invoke(main, ["label", "--input", str(pairs), "-o", str(out),
                                       "--judge", "verify", "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 0, result.output
    label = json.loads(out.read_text())
    assert label["preferred"] == "a"  # the empty reply has no commas, yet it never wins

    prompts = write_jsonl(tmp_path / "ifeval.jsonl", bundled_rows()[:2])
    result = CliRunner().invoke(main, [
        "generate", "responses", "--prompts", str(prompts), "--db", str(tmp_path / "g.db"),
        "--base-url", fake_llm.base_url, "--model", "m1,m2"])
    assert result.exit_code == 0, result.output
    exported = tmp_path / "pairs_out.jsonl"
    assert CliRunner().invoke(main, ["export", "pairs", "--db", str(tmp_path / "g.db"),
                                     "-o", str(exported)]).exit_code == 0
    first = json.loads(exported.read_text().splitlines()[0])
    assert first["prompt_id"] == "1000"
    assert [c["kind"] for c in first["constraints"]] == bundled_rows()[0]["instruction_id_list"]
    assert first["constraints"][1] == {"kind": "detectable_format:number_highlighted_sections",
                                       "num_highlights": 3}


def test_generate_constrained_writes_ifeval_form_that_label_reads(tmp_path):
    out = tmp_path / "c.jsonl"
    result = CliRunner().invoke(main, ["generate", "constrained", "--limit", "3", "--format",
                                       "ifeval", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(set(r) == {"key", "prompt", "instruction_id_list", "kwargs"} for r in rows)
    assert all(len(r["kwargs"]) == len(r["instruction_id_list"]) for r in rows)
    specs = parse_constraints([{"kind": i, **k} for i, k in
                               zip(rows[0]["instruction_id_list"], rows[0]["kwargs"],
                                   strict=True)])
    assert [s.kind for s in specs] == rows[0]["instruction_id_list"]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [r | {"response_a": "a", "response_b": "b"}
                                                   for r in rows])
    result = CliRunner().invoke(main, ["label", "--input", str(pairs), "-o",
                                       str(tmp_path / "l.jsonl"), "--judge", "verify"])
    assert result.exit_code == 0, result.output


def test_report_shows_ifeval_numbers_and_per_instruction_table(tmp_path, monkeypatch):
    rows = bundled_rows()[:20]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    responses = write_jsonl(tmp_path / "r.jsonl", [{"prompt": r["prompt"],
                                                    "response": r["prompt"]} for r in rows])
    result = run_ifeval("--prompts", str(prompts), "--responses", str(responses), "--json")
    assert result.exit_code == 0, result.output
    scores = tmp_path / "eval_ifeval.json"
    scores.write_text(result.output)
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "report.html"
    report = CliRunner().invoke(main, ["report", "--eval", str(scores), "-o", str(page)])
    assert report.exit_code == 0, report.output
    html = page.read_text()
    summary = json.loads(result.output)
    assert "prompt_level_strict_acc" in html and "inst_level_loose_acc" in html
    assert "IFEval per instruction" in html and "combination:repeat_prompt" in html
    shown = plots.fmt(summary["prompt_level_strict_acc"])
    assert f'prompt_level_strict_acc</td><td class="num">{shown}<' in html


def test_side_by_side_reads_two_output_files_and_rejects_other_lines(tmp_path):
    from align.eval.ifeval import format_side_by_side, read_scored
    from datagen.errors import UserInputError

    rows = bundled_rows()[:20]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    outs = {}
    for name, reply in (("before", lambda r: ""), ("after", lambda r: r["prompt"].upper())):
        responses = write_jsonl(tmp_path / f"{name}.jsonl",
                                [{"prompt": r["prompt"], "response": reply(r)} for r in rows])
        outs[name] = tmp_path / f"{name}.out.jsonl"
        result = run_ifeval("--prompts", str(prompts), "--responses", str(responses),
                            "-o", str(outs[name]), "--json")
        assert result.exit_code == 0, result.output
        outs[name + "_json"] = json.loads(result.output)
    lines = format_side_by_side({"before": outs["before"], "after": outs["after"]})
    assert "first 20 prompts" in lines[0] and lines[1].split() == ["before", "after"]
    cells = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    for metric in ("prompt_level_strict_acc", "inst_level_loose_acc", "average"):
        assert cells[metric] == [f"{100 * outs['before_json'][metric]:.1f}",
                                 f"{100 * outs['after_json'][metric]:.1f}"]
    assert outs["before_json"]["inst_level_strict_acc"] == 0.0  # an empty reply follows nothing
    assert outs["after_json"]["inst_level_loose_acc"] > 0.0
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "response": "y"}])
    with pytest.raises(UserInputError, match=r"bad.jsonl:1: not an `eval ifeval -o` line"):
        read_scored(bad)
