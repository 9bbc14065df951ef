"""Constrained prompts: seeded sampling of compatible constraints, rendering (golden files),
the bundled data files, and the `rlaif generate constrained` command end to end."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_golden

from align.cli import main
from datagen import store
from judges.constraints.compat import all_compatible
from judges.constraints.kinds import KINDS, parse_constraints
from judges.constraints.prompts import (
    MAX_CONSTRAINTS,
    ConstrainedPrompt,
    add_constraints,
    load_base_prompts,
    load_phrasings,
    phrasing_options,
    render_prompt,
    sample_constraints,
)

GOLDEN = Path(__file__).parent / "golden" / "constraints"

# One example spec per (kind, variant), used to render every phrasing into a golden file.
EXAMPLES = [
    {"kind": "word_count", "min": 50, "max": 100},
    {"kind": "word_count", "min": 50},
    {"kind": "word_count", "max": 100},
    {"kind": "sentence_count", "min": 3, "max": 5},
    {"kind": "sentence_count", "min": 3},
    {"kind": "sentence_count", "max": 5},
    {"kind": "bullet_count", "n": 3},
    {"kind": "numbered_list_count", "n": 4},
    {"kind": "paragraph_count", "n": 3},
    {"kind": "paragraph_count", "n": 3, "separator": "marker"},
    {"kind": "include_keywords", "keywords": ["plan", "budget"]},
    {"kind": "include_keywords", "keywords": ["plan", "budget", "time"], "min_count": 2},
    {"kind": "keyword_frequency", "keyword": "step", "n": 3, "relation": "at_least"},
    {"kind": "keyword_frequency", "keyword": "very", "n": 2, "relation": "at_most"},
    {"kind": "keyword_frequency", "keyword": "idea", "n": 2, "relation": "exactly"},
    {"kind": "forbidden_words", "words": ["very", "just"]},
    {"kind": "starts_with", "phrase": "In short,"},
    {"kind": "ends_with", "phrase": "Good luck!"},
    {"kind": "all_lowercase"},
    {"kind": "all_uppercase"},
    {"kind": "wrapped_in_quotes"},
    {"kind": "json_format"},
    {"kind": "json_format", "keys": ["title", "summary"]},
    {"kind": "title"},
    {"kind": "no_commas"},
    {"kind": "postscript", "marker": "P.S."},
    {"kind": "highlighted_sections", "n": 2},
    {"kind": "placeholder_count", "n": 2},
    {"kind": "yes_no_answer"},
    {"kind": "one_word_answer"},
    {"kind": "repeat_request", "request": "Explain why bread goes stale."},
    {"kind": "letter_frequency", "letter": "e", "n": 10, "relation": "at_least"},
    {"kind": "letter_frequency", "letter": "z", "n": 2, "relation": "at_most"},
    {"kind": "ends_with_question"},
    {"kind": "section_count", "n": 3, "marker": "Part"},
    {"kind": "no_digits"},
]


# --- data files ---------------------------------------------------------------------------


def test_bundled_prompts() -> None:
    prompts = load_base_prompts()
    assert len(prompts) >= 200
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.prompt.casefold() for p in prompts}) == len(prompts)
    assert all(4 <= len(p.prompt.split()) <= 30 for p in prompts)


def test_every_kind_and_variant_has_several_phrasings() -> None:
    phrasings = load_phrasings()["phrasings"]
    assert set(phrasings) == set(KINDS)
    specs = parse_constraints(EXAMPLES)
    covered = {(s.kind, s.variant) for s in specs}
    for kind, entry in phrasings.items():
        variants = entry if isinstance(entry, dict) else {None: entry}
        for variant, options in variants.items():
            assert (kind, variant) in covered, (kind, variant)
            assert len(options) >= 3 and len(set(options)) == len(options), (kind, variant)


def test_phrasings_use_only_the_spec_fields() -> None:
    phrasings = load_phrasings()["phrasings"]
    for spec in parse_constraints(EXAMPLES):
        for phrasing in phrasing_options(spec, phrasings):
            names = {f for _, f, _, _ in string.Formatter().parse(phrasing) if f}
            assert names <= set(spec.fields()), (spec.kind, phrasing)


def test_golden_phrasings() -> None:
    phrasings = load_phrasings()["phrasings"]
    lines = []
    for spec in parse_constraints(EXAMPLES):
        lines.append(f"## {spec.kind} {spec.variant or ''}".rstrip())
        lines += [p.format_map(spec.fields()) for p in phrasing_options(spec, phrasings)]
    assert_golden(GOLDEN / "phrasings.txt", "\n".join(lines) + "\n")


def test_golden_rendered_prompts_seed_0() -> None:
    rows = add_constraints(load_base_prompts()[:40], 1, 3, seed=0)
    text = "".join(
        json.dumps(
            {
                "id": r.id,
                "prompt": r.prompt,
                "constraints": [
                    c.model_dump(mode="json", exclude_none=True) for c in r.constraints
                ],
            },
            ensure_ascii=False,
        )
        + "\n"
        for r in rows
    )
    assert_golden(GOLDEN / "rendered_seed0.jsonl", text)


# --- sampling -----------------------------------------------------------------------------


def test_same_seed_same_output_and_other_seed_differs() -> None:
    prompts = load_base_prompts()[:50]
    first = add_constraints(prompts, 1, 3, seed=7)
    assert first == add_constraints(prompts, 1, 3, seed=7)
    assert [r.prompt for r in first] != [r.prompt for r in add_constraints(prompts, 1, 3, 8)]


def test_a_prompt_gets_the_same_constraints_wherever_it_is() -> None:
    prompts = load_base_prompts()[:30]
    forward = add_constraints(prompts, 1, 3, seed=3)
    backward = add_constraints(prompts[::-1], 1, 3, seed=3)
    assert forward == backward[::-1]
    assert add_constraints(prompts[:5], 1, 3, seed=3) == forward[:5]


@pytest.mark.parametrize(("k_min", "k_max"), [(1, 1), (1, 3), (3, 3), (5, MAX_CONSTRAINTS)])
def test_counts_distinct_kinds_and_compatible(k_min: int, k_max: int) -> None:
    rows = add_constraints(load_base_prompts(), k_min, k_max, seed=11)
    counts = {len(r.constraints) for r in rows}
    assert counts <= set(range(k_min, k_max + 1))
    assert len(counts) == k_max - k_min + 1  # every count occurs over 200+ prompts
    for row in rows:
        kinds = [c.kind for c in row.constraints]
        assert len(set(kinds)) == len(kinds)
        assert all_compatible(row.constraints)
        assert row.prompt.startswith(row.base_prompt + "\n\n")
        assert "{" not in row.prompt.split("\n\n", 1)[1]


def test_all_kinds_get_drawn() -> None:
    rows = add_constraints(load_base_prompts(), 2, 4, seed=0)
    assert {c.kind for r in rows for c in r.constraints} == set(KINDS)


def test_repeat_request_records_the_base_prompt() -> None:
    rng = random.Random(0)
    pools = load_phrasings()["pools"]
    for _ in range(200):
        for spec in sample_constraints(rng, 3, "Describe a quiet library.", pools):
            if spec.kind == "repeat_request":
                assert spec.request == "Describe a quiet library."


def test_render_prompt_joins_phrasings_after_a_blank_line() -> None:
    specs = parse_constraints([{"kind": "no_commas"}, {"kind": "bullet_count", "n": 3}])
    text = render_prompt("Explain tides.", specs, load_phrasings()["phrasings"], random.Random(1))
    base, rest = text.split("\n\n")
    assert base == "Explain tides."
    assert "comma" in rest and "3" in rest


def test_add_constraints_accepts_plain_strings_and_rejects_bad_ranges() -> None:
    [row] = add_constraints(["Describe a quiet library."], 2, 2, seed=0)
    assert row.prompt_id.startswith("p-") and len(row.constraints) == 2
    for bad in [(0, 2), (3, 2), (1, MAX_CONSTRAINTS + 1)]:
        with pytest.raises(ValueError):
            add_constraints(["x y z"], *bad)


def test_row_round_trips_through_the_store(tmp_path: Path) -> None:
    rows = add_constraints(load_base_prompts()[:5], 1, 3, seed=0)
    db = store.open_db(tmp_path / "p.db")
    assert store.save_rows(db, "constrained_prompts", rows, pk="id") == 5
    assert store.save_rows(db, "constrained_prompts", rows, pk="id") == 0
    loaded = [
        ConstrainedPrompt.model_validate(r) for r in store.load_rows(db, "constrained_prompts")
    ]
    assert loaded == rows


# --- the command --------------------------------------------------------------------------


def run_cli(*args: str):
    return CliRunner().invoke(main, ["generate", "constrained", *args])


def test_cli_writes_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = run_cli("--constraints", "2-3", "--seed", "5", "--limit", "12", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = [ConstrainedPrompt.model_validate_json(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    assert all(2 <= len(r.constraints) <= 3 and r.seed == 5 for r in rows)
    assert rows == add_constraints(load_base_prompts()[:12], 2, 3, seed=5)
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left


def test_cli_reads_a_prompts_file_and_saves_to_db(tmp_path: Path) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(
        '{"prompt": "Describe a harbour at dawn.", "id": 7}\n\n'
        '{"prompt": "List ideas for a picnic.", "extra": true}\n'
    )
    db_path = tmp_path / "p.db"
    result = run_cli("--prompts", str(prompts), "--constraints", "1", "--db", str(db_path))
    assert result.exit_code == 0, result.output
    rows = store.load_rows(store.open_db(db_path), "constrained_prompts")
    assert [r["prompt_id"] for r in rows][0] == "7"
    assert all(len(json.loads(r["constraints"])) == 1 for r in rows)
    again = run_cli("--prompts", str(prompts), "--constraints", "1", "--db", str(db_path))
    assert "saved 0 new of 2" in again.output


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ('{"prompt": "Fine."}\nnot json\n', ":2:", "not valid JSON"),
        ('{"prompt": "Fine."}\n\n{"id": "x"}\n', ":3:", 'missing or empty "prompt"'),
        ('["a list"]\n', ":1:", "expected a JSON object"),
        ('{"prompt": "   "}\n', ":1:", "missing or empty"),
        (
            '{"prompt": "A."}\n{"prompt": "B.", "id": 3}\n{"prompt": "C.", "id": "3"}\n',
            ":3:",
            "duplicate prompt id",
        ),
        ('{"prompt": "A.", "id": [1]}\n', ":1:", '"id" must be'),
        ("", "", "no prompts"),
    ],
)
def test_cli_bad_prompt_files(tmp_path: Path, content: str, where: str, message: str) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(content)
    out = tmp_path / "out.jsonl"
    db_path = tmp_path / "p.db"
    for target in (["-o", str(out)], ["--db", str(db_path)]):
        result = run_cli("--prompts", str(prompts), *target)
        assert result.exit_code == 2
        assert f"{prompts}{where}" in result.output and message in result.output
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("bad", ["0-2", "3-1", "a-b", "1-", f"1-{MAX_CONSTRAINTS + 1}", ""])
def test_cli_bad_constraint_range(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "out.jsonl"
    result = run_cli("--constraints", bad, "-o", str(out))
    assert result.exit_code == 2
    assert "--constraints" in result.output
    assert not out.exists()


def test_cli_needs_exactly_one_destination(tmp_path: Path) -> None:
    assert run_cli().exit_code == 2
    both = run_cli("-o", str(tmp_path / "a.jsonl"), "--db", str(tmp_path / "a.db"))
    assert both.exit_code == 2 and "exactly one" in both.output
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_prompts_file(tmp_path: Path) -> None:
    result = run_cli("--prompts", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 2 and "nope.jsonl" in result.output
