"""Exports: pair hygiene, margins, the split by prompt, file formats, and TRL's data preparation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from align_models import build_policy, build_tokenizer
from click.testing import CliRunner
from datasets import DatasetDict, load_dataset, load_from_disk

from align.cli import main
from align.export import datasets as ds
from datagen import store
from datagen.errors import UserInputError
from datagen.store.tables import FLAN_EXAMPLES

CPU = dict(bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
           save_strategy="no", dataloader_pin_memory=False)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def label(i: int, preferred: str, a: str = "Good answer.", b: str = "Bad answer.", **extra):
    return {"id": f"L{i}", "prompt": f"Question {i}?", "response_a": a, "response_b": b,
            "preferred": preferred, **extra}


CRAFTED = [
    label(1, "a", p_a=0.9),                      # kept, margin logit(0.9)
    label(2, "b", p_a=0.2),                      # kept, chosen = b, margin logit(0.8)
    label(3, "a"),                               # kept, hard label -> margin 0
    label(4, "a", p_a=0.6),                      # kept: |0.6 - 0.5| = 0.1, not < 0.1
    label(5, "error"),                           # error
    {"id": "L6", "prompt": "Question 6?", "preferred": "error"},  # error: no responses needed
    label(7, "tie", p_a=0.5),                    # tie
    label(8, "tie"),                             # tie
    label(9, "tie", a="Same.", b="Same."),       # tie comes before identical
    label(10, "a", a="Same.", b="  Same.\n"),    # identical after strip
    label(11, "b", a="x", b="x", p_a=0.1),       # identical
    label(12, "a", p_a=0.55),                    # low confidence
    label(13, "b", p_a=0.58),                    # low confidence (and disagrees with its label)
    label(14, "a", p_a=1.0),                     # kept, margin capped at logit(0.95)
]


def test_hygiene_counts_are_exact(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", CRAFTED)
    rows, dropped = ds.pairs_from_labels(labels, min_confidence=0.2)
    assert dropped == {"error": 2, "tie": 3, "empty": 0, "identical": 2, "low_confidence": 2}
    assert [row["id"] for row in rows] == ["L1", "L2", "L3", "L4", "L14"]

    result = CliRunner().invoke(main, ["export", "preference", "--labels", str(labels),
                                       "--min-confidence", "0.2", "-o", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    line = "read 14, kept 5; dropped: error 2, tie 3, empty 0, identical 2, low_confidence 2"
    assert line in result.output

    _, dropped = ds.pairs_from_labels(labels)  # without --min-confidence nothing is low-confidence
    assert dropped["low_confidence"] == 0


def test_pairs_are_trl_conversational_with_margins_from_soft_labels(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", CRAFTED)
    rows = {row["id"]: row for row in ds.pairs_from_labels(labels)[0]}
    assert rows["L2"]["prompt"] == [{"role": "user", "content": "Question 2?"}]
    assert rows["L2"]["chosen"] == [{"role": "assistant", "content": "Bad answer."}]
    assert rows["L2"]["rejected"] == [{"role": "assistant", "content": "Good answer."}]
    assert rows["L1"]["margin"] == pytest.approx(math.log(0.9 / 0.1))
    assert rows["L2"]["margin"] == pytest.approx(math.log(0.8 / 0.2))
    assert rows["L3"]["margin"] == 0.0
    assert rows["L14"]["margin"] == pytest.approx(math.log(0.95 / 0.05))
    assert rows["L13"]["margin"] == 0.0  # p_chosen 0.42 < 0.5 is clipped to no margin

    hard = write_jsonl(tmp_path / "hard.jsonl", [label(1, "a"), label(2, "b")])
    assert all("margin" not in row for row in ds.pairs_from_labels(hard)[0])


def test_chat_prompts_pass_through(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    labels = write_jsonl(tmp_path / "l.jsonl", [label(1, "a") | {"prompt": chat}])
    (row,), _ = ds.pairs_from_labels(labels)
    assert row["prompt"] == chat


def many_labels(n_prompts: int, per_prompt: int) -> list[dict]:
    return [
        label(i, "a", a=f"Good {j}.", b=f"Bad {j}.") | {"id": f"{i}-{j}"}
        for i in range(n_prompts) for j in range(per_prompt)
    ]


def test_split_is_by_prompt_seeded_and_loads_with_datasets(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", many_labels(20, 3))
    out = tmp_path / "pairs.jsonl"
    summary = ds.export_preference(out, labels=labels, test_size=0.25, seed=7)
    assert summary["train"] + summary["test"] == 60
    assert summary["test"] == 15  # 5 of 20 prompts, 3 pairs each

    cache = str(tmp_path / "hf-cache")
    train = load_dataset("json", data_files=str(out), split="train", cache_dir=cache)
    test = load_dataset("json", data_files=str(tmp_path / "pairs.test.jsonl"), split="train",
                        cache_dir=cache)
    assert set(train.column_names) == {"id", "prompt", "chosen", "rejected"}
    train_prompts = {p[0]["content"] for p in train["prompt"]}
    test_prompts = {p[0]["content"] for p in test["prompt"]}
    assert len(test_prompts) == 5 and not train_prompts & test_prompts

    again = ds.export_preference(tmp_path / "again.jsonl", labels=labels, test_size=0.25, seed=7)
    assert again["test"] == 15
    test_split = (tmp_path / "pairs.test.jsonl").read_text()
    assert (tmp_path / "again.test.jsonl").read_text() == test_split
    ds.export_preference(tmp_path / "other.jsonl", labels=labels, test_size=0.25, seed=8)
    assert (tmp_path / "other.test.jsonl").read_text() != test_split


def test_directory_export_is_a_dataset_dict(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", many_labels(10, 2))
    out = tmp_path / "pairs"
    result = CliRunner().invoke(main, ["export", "preference", "--labels", str(labels), "-o",
                                       str(out), "--test-size", "0.2"])
    assert result.exit_code == 0, result.output
    data = load_from_disk(str(out))
    assert isinstance(data, DatasetDict) and set(data) == {"train", "test"}
    assert (data["train"].num_rows, data["test"].num_rows) == (16, 4)
    assert not {json.dumps(p) for p in data["train"]["prompt"]} & {
        json.dumps(p) for p in data["test"]["prompt"]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left

    ds.export_preference(out, labels=labels)  # overwrite with a single split
    assert load_from_disk(str(out)).num_rows == 20


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "labels.jsonl:3: invalid JSON"),
        ('{"prompt": "q", "response_a": "x", "response_b": "y", "preferred": "A"}',
         "labels.jsonl:3: preferred must be"),
        ('{"prompt": "q", "response_a": "x", "response_b": "y", "preferred": "a", "p_a": 1.5}',
         "labels.jsonl:3: p_a must be"),
        ('{"prompt": "", "response_a": "x", "response_b": "y", "preferred": "a"}',
         "labels.jsonl:3: empty prompt"),
        ('{"prompt": "q", "response_a": 3, "response_b": "y", "preferred": "a"}',
         "labels.jsonl:3: response_a must be a string"),
    ],
)
def test_bad_labels_exit_2_with_file_and_line_and_write_nothing(tmp_path, line, message):
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps(label(1, "a")) + "\n\n" + line + "\n")
    out = tmp_path / "p.jsonl"
    result = CliRunner().invoke(main, ["export", "preference", "--labels", str(labels), "-o",
                                       str(out), "--test-size", "0.5"])
    assert result.exit_code == 2
    assert message in result.output
    assert list(tmp_path.iterdir()) == [labels]


def test_split_needs_two_prompts_and_a_fraction(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", [label(1, "a"), label(1, "b", a="Other.")])
    with pytest.raises(UserInputError, match="too few"):
        ds.export_preference(tmp_path / "p.jsonl", labels=labels, test_size=0.5)
    with pytest.raises(UserInputError, match="between 0 and 1"):
        ds.export_preference(tmp_path / "p.jsonl", labels=labels, test_size=1.0)


def test_missing_provider_module_is_a_clear_user_error():
    with pytest.raises(UserInputError, match="datagen.no_such_generator is not available"):
        ds.load_provider("datagen.no_such_generator:sft_examples")


def test_export_sft_and_prompts_from_flan_rows_in_the_project_db(tmp_path):
    db_path = tmp_path / "project.db"
    chats = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]
             for w in ("yes", "no", "maybe", "never")]
    rows = [{"id": f"s{i}", "messages": chat, "task": "say"} for i, chat in enumerate(chats)]
    store.save_rows(store.open_db(db_path), FLAN_EXAMPLES, rows)
    out = tmp_path / "sft.jsonl"
    result = CliRunner().invoke(main, ["export", "sft", "--source", "flan", "--db", str(db_path),
                                       "-o", str(out), "--test-size", "0.25"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for path in (out, tmp_path / "sft.test.jsonl")
            for line in path.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == ["s0", "s1", "s2", "s3"]
    assert {json.dumps(row["messages"]) for row in rows} == {json.dumps(c) for c in chats}

    summary = ds.export_prompts(tmp_path / "prompts.jsonl", source="flan", db=db_path)
    assert summary["rows"] == 4
    result = CliRunner().invoke(main, ["export", "sft", "--source", "flan", "--db",
                                       str(tmp_path / "missing.db"), "-o", str(out)])
    assert result.exit_code == 2 and "no such database" in result.output


def test_exports_pass_trl_data_preparation(tmp_path):
    from trl import (
        DPOConfig,
        DPOTrainer,
        RewardConfig,
        RewardTrainer,
        SFTConfig,
        SFTTrainer,
        is_conversational,
        maybe_apply_chat_template,
    )

    tokenizer = build_tokenizer()
    model_dir = str(build_policy(tokenizer, tmp_path / "policy"))
    labels = write_jsonl(tmp_path / "labels.jsonl", CRAFTED)
    ds.export_preference(tmp_path / "pairs", labels=labels, test_size=0.4)
    ds.export_prompts(tmp_path / "prompts.jsonl", labels=labels)
    sft = ds.sft_rows([{"id": "1", "messages": [{"role": "user", "content": "Hi?"},
                                                {"role": "assistant", "content": "Hello."}]}], "t")
    ds.write_export(sft, tmp_path / "sft.jsonl")

    pairs = ds.load_split(tmp_path / "pairs", "train")
    assert "margin" in pairs.column_names
    args = dict(max_length=64, max_steps=1, per_device_train_batch_size=2, **CPU)
    trainers = [
        SFTTrainer(model=model_dir, processing_class=tokenizer,
                   train_dataset=ds.load_split(tmp_path / "sft.jsonl"),
                   args=SFTConfig(output_dir=str(tmp_path / "o1"), **args)),
        RewardTrainer(model=model_dir, processing_class=tokenizer, train_dataset=pairs,
                      args=RewardConfig(output_dir=str(tmp_path / "o2"), **args)),
        DPOTrainer(model=model_dir, processing_class=tokenizer, train_dataset=pairs,
                   args=DPOConfig(output_dir=str(tmp_path / "o3"), **args)),
    ]
    assert "input_ids" in trainers[0].train_dataset.column_names
    assert {"chosen_ids", "rejected_ids", "margin"} <= set(trainers[1].train_dataset.column_names)
    assert trainers[1].train_dataset.num_rows == pairs.num_rows
    assert "chosen_ids" in trainers[2].train_dataset.column_names
    for trainer in trainers:
        trainer.train()  # one step each: the collators accept the prepared rows

    prompts = ds.load_split(tmp_path / "prompts.jsonl")
    assert prompts.column_names == ["id", "prompt"] and prompts.num_rows == len(CRAFTED)
    assert is_conversational(prompts[0])
    text = maybe_apply_chat_template(prompts[0], tokenizer)["prompt"]
    assert text.endswith("<|im_start|>assistant\n")  # what GRPO/RLOO generate from


def test_pairs_with_an_empty_side_are_dropped_and_counted(tmp_path):
    # issue 16: a blank reply is never chosen (nor kept as a rejected side)
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        label(1, "b", a="A real answer.", b="", p_a=0.076),
        label(2, "a", a="  \n", b="Another answer."),
        label(3, "a", p_a=0.9)])
    rows, dropped = ds.pairs_from_labels(labels)
    assert [row["id"] for row in rows] == ["L3"] and dropped["empty"] == 2
    result = CliRunner().invoke(main, ["export", "preference", "--labels", str(labels),
                                       "-o", str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    assert "read 3, kept 1; dropped: error 0, tie 0, empty 2, identical 0" in result.output
    rows, dropped = ds.preference_rows([{"id": "x", "prompt": "Q?", "chosen": " ",
                                         "rejected": "No."}], "db")
    assert rows == [] and dropped["empty"] == 1
