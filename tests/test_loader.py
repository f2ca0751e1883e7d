"""Loader: positions, safety limits, malformed documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from rescompiler.errors import SpecError
from rescompiler.loader import load_document, parse_text


def test_positions_of_keys_and_items() -> None:
    doc = parse_text("a: 1\nblocks:\n  b:\n    body:\n      - {op: conv, out: 3}\n", "x.yaml")
    assert doc.data["blocks"]["b"]["body"][0]["op"] == "conv"
    loc = doc.locate(("blocks", "b", "body", 0, "out"))
    assert (loc.line, loc.column) == (5, 20)
    assert doc.locate(("blocks", "b", "body", 0)).line == 5
    # unknown paths fall back to the nearest ancestor
    assert doc.locate(("blocks", "b", "nothing")).line == 3


def test_json_is_positioned_too() -> None:
    doc = parse_text('{\n  "version": 1,\n  "body": [\n    {"op": "relu"}\n  ]\n}\n', "x.json")
    assert doc.locate(("body", 0, "op")).line == 4


@pytest.mark.parametrize(
    ("text", "file", "fragment", "line"),
    [
        ("a: 1\na: 2\n", "x.yaml", "duplicate key 'a'", 2),
        ("a: !!python/object/apply:os.system ['true']\n", "x.yaml", "not allowed", 1),
        ("a: !custom 3\n", "x.yaml", "not allowed", 1),
        ("", "x.yaml", "empty", 1),
        ("# only a comment\n", "x.yaml", "empty", 1),
        ("- 1\n- 2\n", "x.yaml", "must be a mapping", 1),
        ("a: [1, 2\n", "x.yaml", "invalid YAML", 2),
        ('{"a": 1,}', "x.json", "invalid JSON", 1),
        ("{1: 2}\n", "x.yaml", "must be a string", 1),
        ("a: \x00\n", "x.yaml", "binary", 1),
        ("a: &x [1]\nb: {<<: *x}\n", "x.yaml", "", 2),
    ],
)
def test_malformed_documents(text: str, file: str, fragment: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        parse_text(text, file)
    assert fragment in str(info.value)
    assert info.value.line == line
    assert str(info.value).startswith(f"{file}:")


def test_alias_bomb_is_refused_fast() -> None:
    lines = ["a0: [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    lines[0] = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"
    with pytest.raises(SpecError, match="alias bomb"):
        parse_text("\n".join(lines) + "\n", "bomb.yaml")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(SpecError, match="nesting"):
        parse_text("a: " + "[" * 200 + "]" * 200 + "\n", "deep.yaml")


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_document(tmp_path / "missing.yaml")
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_document(binary)
