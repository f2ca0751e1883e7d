"""CLI manners: ordinary file modes, quiet pipes, cheap checks before framework imports, YAML
syntax errors that say what to look at."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler.cli import run

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS_AFTER = """\
import sys
from rescompiler.cli import run
code = run(sys.argv[1:])
loaded = sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules)
print(code, loaded)
"""


def test_generated_files_get_an_ordinary_mode(tmp_path: Path) -> None:
    spec = ROOT / "specs" / "cifar_resnet20.yaml"
    old = os.umask(0o022)
    try:
        target = rescompiler.compile_spec(spec, "torch", tmp_path)
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        target.chmod(0o600)  # an existing file keeps its mode, as open(..., "w") would
        rescompiler.compile_spec(spec, "torch", tmp_path)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        os.umask(0o077)
        other = rescompiler.compile_spec(spec, "keras", tmp_path)
        assert stat.S_IMODE(other.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rescompiler", "preact_resnet1001", "--summary", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().strip() == b"{"
    process.stdout.close()  # as `| head -1` does
    err = process.stderr.read().decode()
    assert process.wait() == 141
    assert err == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--convert", "missing.pth", "--to", "keras", "-o", "x.weights.h5"], "no such file"),
        (["--convert", ".", "--to", "keras", "-o", "x.weights.h5"], "is a directory"),
        (["--verify", "--device", "gpu"], "--device takes cpu, cuda or cuda:N"),
    ],
)
def test_cheap_checks_fail_before_any_framework_loads(
    args: list[str], message: str, tmp_path: Path
) -> None:
    spec = str(ROOT / "specs" / "cifar_resnet20.yaml")
    result = subprocess.run(
        [sys.executable, "-c", FRAMEWORKS_AFTER, spec, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert message in result.stderr


@pytest.mark.skipif(
    any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")),
    reason="this machine has a GPU driver",
)
def test_cuda_without_a_driver_fails_before_any_framework_loads(tmp_path: Path) -> None:
    spec = str(ROOT / "specs" / "cifar_resnet20.yaml")
    result = subprocess.run(
        [sys.executable, "-c", FRAMEWORKS_AFTER, spec, "--verify", "--device", "cuda"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert "no GPU driver" in result.stderr


@pytest.mark.parametrize(
    ("text", "where", "hint"),
    [
        ("name: a: b\n", ":2:8:", "a value holding ': ' must be quoted"),
        ("name:x\nbody: 1\n", ":3:1:", "a key needs ': ' after it"),
        ("a:\n\tb: 1\n", ":3:1:", "indent with spaces, not tabs"),
        ("a:\n  b: 1\n c: 2\n", ":4:2:", "indented differently"),
        ("a: [1, 2\nb: 3\n", ":3:2:", "a [...] list is not closed"),
        ('a: "x\nb: 2\n', ":4:1:", "a quote is not closed"),
    ],
)
def test_yaml_syntax_errors_say_what_to_look_at(
    text: str,
    where: str,
    hint: str,
    write_spec: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_spec("version: 1\n" + text)
    assert run([str(path), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}{where} invalid YAML: ") and hint in err, err
    assert len(err.strip().splitlines()) == 1


MISTAKES_OF_EVERY_KIND = """\
version: 1
name: multi
input_shape: [3, 16, 16]
blocks:
  basic:
    params: {planes: null}
    body:
      - {op: conv, name: conv1, out: planes, kernel: 3, padding: 1}
      - {op: reluu, name: act}
      - {op: conv, name: conv2, out: planes, kernel: 3, padding: 1, inputs: act}
      - {op: add, inputs: [conv2, input]}
body:
  - {op: conv, name: stem, out: 8, kernel: 3, padding: 1}
  - {block: basic, name: b1, args: {planes: 8}}
  - {op: relu, inputs: stemm, inplace: true}
  - {op: conv, name: c2, out: 16, kernel: 1, inputs: stem}
  - {op: add, inputs: [c2, stem]}
"""


def test_every_kind_of_mistake_is_reported_in_one_run(write_spec: Callable[..., Path]) -> None:
    """An invalid node (unknown op, unknown key) does not hide a bad reference or a shape
    mismatch elsewhere; what reads the invalid node is not checked (its shape is unknown)."""
    path = write_spec(MISTAKES_OF_EVERY_KIND)
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(path)
    found = [(d.location.line, d.message) for d in info.value.diagnostics]
    assert found == [
        (9, "unknown op 'reluu' (did you mean 'relu'?)"),
        (15, "unknown node 'stemm' (did you mean 'stem'?)"),
        (15, "unknown key 'inplace'"),
        (17, "add inputs differ in shape: c2 is 16×16×16, stem is 8×16×16 (in add)"),
    ], found


def test_a_broken_required_key_stops_after_validation(write_spec: Callable[..., Path]) -> None:
    path = write_spec(MISTAKES_OF_EVERY_KIND.replace("name: multi", "name: 1multi"))
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(path)
    assert [d.location.line for d in info.value.diagnostics] == [2, 9, 15]
