"""Code generation is injection-proof; writes are atomic; compiles are deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler import api

HOSTILE = 'x"""; import os; os.system("touch pwned") #'
SPEC = """\
version: 1
name: hostile
description: '{text}'
reference: '{text} \\\\ \\u0007'
input_shape: [3, 16, 16]
params: {{width: 4}}
blocks:
  b:
    doc: '{text}'
    body:
      - {{op: conv, name: c, out: width, kernel: 3, padding: 1}}
      - {{op: relu}}
body:
  - {{block: b, name: first}}
  - {{op: global_avgpool}}
  - {{op: flatten}}
  - {{op: linear, name: fc, out: 2}}
"""


def test_hostile_strings_end_up_inert(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    path = write_spec(SPEC.format(text=HOSTILE.replace("'", "''")))
    source = rescompiler.emit(rescompiler.load_spec(path), "torch")
    compile(source, "hostile_torch.py", "exec")
    module = tmp_path / "hostile_torch.py"
    module.write_text(source)
    code = (
        "import hostile_torch, torch; print(hostile_torch.build()(torch.randn(1, 3, 16, 16)).shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


@pytest.mark.parametrize(
    "name", ['x"""; import os #', "a.b", "1abc", "os.system", "__class__", "é", "a b"]
)
def test_hostile_names_are_rejected(write_spec: Callable[..., Path], name: str) -> None:
    text = SPEC.format(text="ok").replace("name: c,", f"name: {name!r},")
    with pytest.raises(rescompiler.SpecError, match="not a valid name"):
        rescompiler.load_spec(write_spec(text))


def test_failed_compile_leaves_existing_file_untouched(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    good = write_spec(SPEC.format(text="ok"), "hostile.yaml")
    target = rescompiler.compile_spec(good, "torch", tmp_path)
    before = target.read_bytes()
    good.write_text(good.read_text().replace("out: width", "out: widht"))
    with pytest.raises(rescompiler.SpecError):
        rescompiler.compile_spec(good, "torch", tmp_path)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.yaml", "hostile_torch.py"]


def test_write_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.py"
    target.write_text("original\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        api.write_atomic(target, "new contents\n")
    assert target.read_text() == "original\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.py"]


def test_two_compiles_are_byte_identical(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parent.parent / "specs" / "resnet50.yaml"
    a = rescompiler.compile_spec(spec, "torch", tmp_path / "a").read_bytes()
    b = rescompiler.compile_spec(spec, "torch", tmp_path / "b").read_bytes()
    assert a == b
