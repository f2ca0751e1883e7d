"""Malformed and hostile specs: every one ends in SpecError / exit 1 with file:line and a clear
one-line message; nothing is executed, nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rescompiler
from rescompiler.cli import run

MALFORMED = Path(__file__).parent / "malformed"
EXPECTED: dict[str, dict[str, object]] = json.loads((MALFORMED / "expected.json").read_text())


def test_corpus_covers_at_least_forty_kinds() -> None:
    files = sorted(p.name for p in MALFORMED.iterdir() if p.name != "expected.json")
    assert files == sorted(EXPECTED)
    assert len(files) >= 40


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_api_raises_spec_error_at_the_line(name: str) -> None:
    expected = EXPECTED[name]
    path = MALFORMED / name
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(path)
    err = info.value
    assert str(expected["message"]) in str(err)
    matching = [d for d in err.diagnostics if str(expected["message"]) in str(d)]
    assert any(d.location.line == expected["line"] for d in matching), str(err)
    for diagnostic in err.diagnostics:
        assert diagnostic.location.file
        assert "\n" not in diagnostic.message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_exits_1_with_one_line_per_error(
    name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = run([str(MALFORMED / name), "--backend", "torch", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    first = captured.err.splitlines()[0]
    assert first.startswith(str(MALFORMED / name) + ":") or first.startswith(str(MALFORMED))
    assert str(EXPECTED[name]["message"]) in captured.err
    assert not out.exists()


def test_cli_subprocess_never_shows_a_traceback() -> None:
    names = sorted(EXPECTED)[::6]
    for name in names:
        result = subprocess.run(
            [sys.executable, "-m", "rescompiler", str(MALFORMED / name), "--summary"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_unknown_override_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(MALFORMED.parent.parent / "specs" / "resnet50.yaml")
    assert run([spec, "--check", "--set", "num_clases=3"]) == 1
    assert "unknown param 'num_clases' (did you mean 'num_classes'?)" in capsys.readouterr().err


def test_unreachable_node_is_a_warning(write_spec, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_spec(
        "version: 1\nname: w\ninput_shape: [3, 8, 8]\n"
        "body:\n  - {op: relu, name: a}\n  - {op: relu, name: dead, inputs: input}\n"
        "  - {op: relu, inputs: a}\n"
    )
    assert run([str(path), "--check"]) == 0
    err = capsys.readouterr().err
    assert f"{path}:6:5: warning: body[1]: dead does not reach the output" in err
