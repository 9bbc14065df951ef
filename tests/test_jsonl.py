"""Direct tests of datagen.jsonl: the FILE:LINE errors of the JSONL readers and the atomic
writers (the old file survives any failure, no temporary file is left behind)."""

from __future__ import annotations

import json

import pytest

from datagen.errors import UserInputError
from datagen.jsonl import (
    ObjectLine,
    atomic_write,
    note_unique,
    numbered_lines,
    parse_json,
    parse_object,
    read_objects,
    read_text,
    read_utf8,
    write_jsonl,
)


def message(excinfo: pytest.ExceptionInfo[UserInputError]) -> str:
    return excinfo.value.message


# --- reading ---------------------------------------------------------------------------------


def test_read_text_returns_the_text(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": "é"}\n', encoding="utf-8")
    assert read_text(path) == '{"a": "é"}\n'


@pytest.mark.parametrize("make, expected", [
    (lambda p: p / "missing.jsonl",
     "missing.jsonl: cannot read: [Errno 2] No such file or directory"),
    (lambda p: p, ": cannot read: [Errno 21] Is a directory"),
    (lambda p: (p / "latin.jsonl").write_bytes(b'{"a": "\xe9"}\n') and p / "latin.jsonl",
     "latin.jsonl: cannot read: 'utf-8' codec can't decode byte 0xe9 in position 7"),
])
def test_read_text_errors(tmp_path, make, expected):
    with pytest.raises(UserInputError) as caught:
        read_text(make(tmp_path))
    assert expected in message(caught)


def test_read_text_words_the_reading(tmp_path):
    with pytest.raises(UserInputError) as caught:
        read_text(tmp_path / "seeds.jsonl", cannot_read="cannot read seed tasks")
    assert message(caught).startswith(f"{tmp_path / 'seeds.jsonl'}: cannot read seed tasks: ")


def test_read_utf8_returns_the_text_with_its_line_ends(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\r\n{"b": 2}\n')
    assert read_utf8(path) == '{"a": 1}\r\n{"b": 2}\n'


def test_read_utf8_errors(tmp_path):
    missing = tmp_path / "missing.jsonl"
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\x00\x01PK")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": "\xe9"}\n')
    cases = [
        (lambda: read_utf8(tmp_path, expected="a JSONL file"),
         f"{tmp_path}: is a directory, expected a JSONL file"),
        (lambda: read_utf8(tmp_path), f"{tmp_path}: cannot read: Is a directory"),
        (lambda: read_utf8(missing), f"{missing}: cannot read: No such file or directory"),
        (lambda: read_utf8(binary, reject_binary=True),
         f"{binary}: looks like a binary file, expected JSONL text"),
        (lambda: read_utf8(latin), f"{latin}: not UTF-8 text (byte 7)"),
    ]
    for call, expected in cases:
        with pytest.raises(UserInputError) as caught:
            call()
        assert message(caught) == expected
    assert read_utf8(binary) == "\x00\x01PK"  # NUL bytes are only refused when asked


def test_numbered_lines_skips_blank_lines_and_counts_every_line():
    text = '{"a": 1}\n\n   \r\n{"b": 2}\r{"c": 3}'
    assert list(numbered_lines("f.jsonl", text)) == [
        (1, "f.jsonl:1", '{"a": 1}'), (4, "f.jsonl:4", '{"b": 2}'), (5, "f.jsonl:5", '{"c": 3}')]


def test_numbered_lines_keeps_unicode_line_separators_inside_a_line():
    row = {"text": "one\u2028two\x85three"}
    text = json.dumps(row, ensure_ascii=False) + "\n"
    [(number, _, raw)] = numbered_lines("f.jsonl", text)
    assert number == 1 and json.loads(raw) == row


def test_parse_json_and_parse_object():
    assert parse_json("[1, 2]", "f:1") == [1, 2]
    assert parse_object('{"a": 1}', "f:1") == {"a": 1}
    with pytest.raises(UserInputError) as caught:
        parse_json("{not json", "f:3")
    assert message(caught) == (
        "f:3: not valid JSON (Expecting property name enclosed in double quotes)")
    with pytest.raises(UserInputError) as caught:
        parse_object("[1, 2]", "f:4")
    assert message(caught) == "f:4: expected a JSON object"


def test_read_objects_yields_number_location_and_object(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    lines = list(read_objects(path, empty_message="unused"))
    assert lines == [ObjectLine(1, f"{path}:1", {"a": 1}), ObjectLine(3, f"{path}:3", {"b": 2})]
    number, where, obj = lines[1]
    assert (number, where, obj) == (3, f"{path}:3", {"b": 2})


def test_read_objects_uses_the_text_it_is_given(tmp_path):
    path = tmp_path / "never-read.jsonl"
    assert [line.obj for line in read_objects(path, '{"a": 1}', empty_message=None)] == [{"a": 1}]


@pytest.mark.parametrize("content, expected", [
    ('{"a": 1}\nnot json\n', ":2: not valid JSON (Expecting value)"),
    ('{"a": 1}\n[1]\n', ":2: expected a JSON object"),
    ("", ": empty"),
    ("\n  \n", ": empty"),
])
def test_read_objects_errors(tmp_path, content, expected):
    path = tmp_path / "a.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError) as caught:
        list(read_objects(path, empty_message=f"{path}: empty"))
    assert message(caught) == f"{path}{expected}"


def test_read_objects_reports_read_errors_with_read_text(tmp_path):
    with pytest.raises(UserInputError) as caught:
        list(read_objects(tmp_path / "missing.jsonl", empty_message=None))
    assert "missing.jsonl: cannot read: [Errno 2]" in message(caught)


def test_read_objects_without_empty_message_allows_an_empty_file(tmp_path):
    assert list(read_objects(tmp_path / "x.jsonl", "\n", empty_message=None)) == []


def test_read_objects_parses_lazily_so_the_first_bad_line_is_named(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": ""}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserInputError) as caught:
        for _, where, obj in read_objects(path, empty_message=None):
            if not obj["id"]:
                raise UserInputError(f"{where}: empty id")
    assert message(caught) == f"{path}:1: empty id"


def test_read_objects_words_line_errors_as_the_caller_asks(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n{oops\n[1]\n', encoding="utf-8")
    with pytest.raises(UserInputError) as caught:
        list(read_objects(path, empty_message=None, not_json="invalid JSON"))
    assert message(caught) == f"{path}:2: invalid JSON (Expecting property name enclosed in " \
                              "double quotes)"
    path.write_text("[1]\n", encoding="utf-8")
    with pytest.raises(UserInputError) as caught:
        list(read_objects(path, empty_message=None, not_object="missing key 'prompt'"))
    assert message(caught) == f"{path}:1: missing key 'prompt'"


def test_read_objects_with_a_skipped_list_keeps_bad_lines_as_messages(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('not json\n{"a": 1}\n[2]\n{"b": 3}\n', encoding="utf-8")
    skipped: list[str] = []
    objects = [line.obj for line in read_objects(path, empty_message="x", skipped=skipped)]
    assert objects == [{"a": 1}, {"b": 3}]
    assert skipped == [f"{path}:1: not valid JSON (Expecting value)",
                       f"{path}:3: expected a JSON object"]
    path.write_text("[1]\n", encoding="utf-8")  # a file of bad lines is not an empty file
    assert list(read_objects(path, empty_message="empty", skipped=skipped)) == []


def test_note_unique_names_the_first_line():
    seen: dict[str, int] = {}
    note_unique(seen, "a", 1, "f:1", what="id")
    note_unique(seen, "b", 3, "f:3", what="id")
    with pytest.raises(UserInputError) as caught:
        note_unique(seen, "a", 5, "f:5", what="prompt id")
    assert message(caught) == "f:5: duplicate prompt id 'a' (first on line 1)"
    assert seen == {"a": 1, "b": 3}


# --- writing ---------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n", encoding="utf-8")
    with atomic_write(path) as out:
        out.write("new é\n")
        assert path.read_text(encoding="utf-8") == "old\n"  # nothing shows before the end
    assert path.read_text(encoding="utf-8") == "new é\n"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_write_failure_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_write(str(path)) as out:
        out.write("half")
        raise RuntimeError("stop")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_write_failure_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_write(tmp_path / "out.txt") as out:
        out.write("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_a_directory(tmp_path):
    with pytest.raises(UserInputError) as caught, atomic_write(tmp_path):
        pass
    assert message(caught) == f"{tmp_path}: is a directory"
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_into_a_missing_folder_is_a_user_error(tmp_path):
    target = tmp_path / "no-such-folder" / "out.jsonl"
    with pytest.raises(UserInputError) as caught, atomic_write(target):
        pass
    assert message(caught) == f"{target}: cannot write (No such file or directory)"


def test_write_jsonl_writes_one_object_per_line(tmp_path):
    path = tmp_path / "out.jsonl"
    rows = [{"a": 1, "text": "é\u2028"}, {"b": [1, 2]}]
    write_jsonl(path, rows)
    assert path.read_text(encoding="utf-8") == '{"a": 1, "text": "é\u2028"}\n{"b": [1, 2]}\n'
    assert [obj for _, _, obj in read_objects(path, empty_message=None)] == rows


def test_write_jsonl_failure_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"old": true}\n', encoding="utf-8")

    def rows():
        yield {"a": 1}
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        write_jsonl(path, rows())
    with pytest.raises(TypeError):
        write_jsonl(path, [{"a": 1}, {"not json": object()}])
    assert path.read_text(encoding="utf-8") == '{"old": true}\n'
    assert list(tmp_path.iterdir()) == [path]
