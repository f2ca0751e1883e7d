"""Specs are untrusted data: hostile files and values end in a located one-line SpecError.

Covers reading (FIFOs, devices, the size cap), ``extends`` targets, explicitly tagged scalars,
huge integers, deep nesting, non-finite numbers (in specs and in overrides) and control
characters echoed into diagnostics. A hang fails the test (``signal.setitimer``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import rescompiler
from rescompiler import loader
from rescompiler.cli import run
from rescompiler.errors import Diagnostic, DiagnosticSink, Location, SpecError, format_path
from rescompiler.loader import parse_text

BASE = """\
version: 1
name: tiny
input_shape: [3, 8, 8]
params: {width: 4, classes: 10, zero_init: false}
body:
  - {op: conv, name: stem, out: width, kernel: 3, padding: 1}
  - {op: bn, name: bn, eps: 0.00001}
  - {op: relu}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, name: fc, out: classes}
"""

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
needs_alarm = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no interval timer")


@contextmanager
def deadline(seconds: float = 5.0) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging when the body takes longer than ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s (hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def spec_error(call: Callable[[], Any]) -> SpecError:
    """Run ``call`` under a deadline; return the SpecError it must raise."""
    with deadline(), pytest.raises(SpecError) as info:
        call()
    err = info.value
    for diagnostic in err.diagnostics:
        assert str(diagnostic).isprintable(), repr(str(diagnostic))
    return err


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_base_spec_is_valid(tmp_path: Path) -> None:
    """The hostile variants below differ from this valid spec in one value only."""
    spec = rescompiler.load_spec(write(tmp_path, BASE))
    assert spec.params["classes"] == 10


# --- 1. reading: only regular files, at most MAX_FILE_BYTES ---------------------------------


@needs_fifo
@needs_alarm
def test_fifo_spec_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    err = spec_error(lambda: rescompiler.load_spec(fifo))
    assert str(err) == f"{fifo}: cannot read file: is a FIFO, not a regular file"


@needs_alarm
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    assert link.stat().st_size == 0  # the size cap alone would let it through
    err = spec_error(lambda: rescompiler.load_spec(link))
    assert err.file == str(link)
    assert "is a character device, not a regular file" in err.message


@needs_alarm
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="no /proc")
def test_size_cap_holds_on_bytes_read_not_st_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "status.yaml"
    link.symlink_to("/proc/self/status")  # a regular file whose st_size reads 0
    assert link.stat().st_size == 0
    read = os.read
    total = 0

    def counting_read(fd: int, n: int) -> bytes:
        nonlocal total
        chunk = read(fd, n)
        total += len(chunk)
        return chunk

    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 64)
    monkeypatch.setattr(os, "read", counting_read)
    err = spec_error(lambda: loader.load_document(link))
    assert err.message == "file larger than 64 bytes"
    assert 0 < total <= 65


def test_directory_and_os_errors_are_located(tmp_path: Path) -> None:
    cases = {
        tmp_path: "cannot read file: is a directory",
        tmp_path / "missing.yaml": f"no spec file {str(tmp_path / 'missing.yaml')!r} and no "
        "library spec of that name; see 'rescompile list'",
        tmp_path / ("x" * 300 + ".yaml"): "cannot read file: File name too long",
        tmp_path / "nul\0.yaml": "cannot read file: file name contains a NUL byte",
    }
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    cases[loop] = "cannot read file: Too many levels of symbolic links"
    for path, message in cases.items():
        err = spec_error(lambda path=path: rescompiler.load_spec(path))
        assert err.message == message
        assert err.file == str(path).replace("\0", "\\x00")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_names_the_reason(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    path.chmod(0)
    err = spec_error(lambda: rescompiler.load_spec(path))
    assert str(err) == f"{path}: cannot read file: Permission denied"


# --- 2. extends: what the target is, not "not found" ----------------------------------------


@needs_alarm
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ('"base\\0.yaml"', "base spec 'base\\x00.yaml' is not a valid file name"),
        ("b" * 300 + ".yaml", "File name too long"),
        ('"."', "base spec '.' is a directory"),
        ("sub", "base spec 'sub' is a directory"),
        ("fifo.yaml", "base spec 'fifo.yaml' is a FIFO, not a regular file"),
        ("zero.yaml", "base spec 'zero.yaml' is a character device, not a regular file"),
        ("loop.yaml", "cannot read base spec 'loop.yaml'"),
        ("missing.yaml", "base spec 'missing.yaml' not found"),
        ("!!int base.yaml", "'base.yaml' is not a valid integer (!!int)"),
        ("!!float base.yaml", "'base.yaml' is not a valid number (!!float)"),
        ("7", "extends must be a file path, got 7"),
        ("[base.yaml]", "extends must be a file path, got ['base.yaml']"),
        ("{a: 1}", "extends must be a file path, got {'a': 1}"),
        ("true", "extends must be a file path, got True"),
    ],
)
def test_extends_targets(tmp_path: Path, target: str, message: str) -> None:
    write(tmp_path, BASE, "base.yaml")
    (tmp_path / "sub").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.yaml")
    if Path("/dev/zero").exists():
        (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    child = write(tmp_path, f"version: 1\nname: child\nextends: {target}\n", "child.yaml")
    err = spec_error(lambda: rescompiler.load_spec(child))
    assert (err.file, err.line, err.path) == (str(child), 3, "extends")
    assert message in err.message


def test_extends_a_regular_base_still_works(tmp_path: Path) -> None:
    write(tmp_path, BASE, "base.yaml")
    child = write(tmp_path, "version: 1\nname: child\nextends: base.yaml\nparams: {classes: 3}\n")
    assert rescompiler.load_spec(child).params["classes"] == 3


# --- 3. tags, huge integers, deep nesting ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "'abc' is not a valid integer (!!int)"),
        ("!!int 1.5", "'1.5' is not a valid integer (!!int)"),
        ("!!int ''", "'' is not a valid integer (!!int)"),
        ("!!int 0b", "'0b' is not a valid integer (!!int)"),
        ("!!bool maybe", "'maybe' is not a valid boolean (!!bool)"),
        ("!!float abc", "'abc' is not a valid number (!!float)"),
        ("!!float ''", "'' is not a valid number (!!float)"),
        ("!!null x", "'x' is not a valid null (!!null)"),
        ("!!seq abc", "tag !!seq cannot tag a scalar"),
        ("!!map [1]", "tag !!map cannot tag a list"),
        ("!!int {a: 1}", "tag !!int cannot tag a mapping"),
        ("9" * 5000, "is too large (magnitude above 2**62)"),
        ("-" + "9" * 5000, "is too large (magnitude above 2**62)"),
        (str(2**62 + 1), f"integer '{2**62 + 1}' is too large"),
        (str(-(2**62) - 1), "is too large (magnitude above 2**62)"),
        ("0x" + "f" * 5000, "is too large (magnitude above 2**62)"),
        ("0" + "7" * 5000, "is too large (magnitude above 2**62)"),
        (":".join(["59"] * 200_000), "is too large (magnitude above 2**62)"),
    ],
)
def test_bad_scalars_are_located(value: str, message: str) -> None:
    text = BASE.replace("width: 4,", f"width: {value},")
    err = spec_error(lambda: parse_text(text, "t.yaml"))
    assert (err.line, err.path) == (4, "params.width")
    assert message in err.message
    assert len(str(err)) < 200  # long literals are cut


@pytest.mark.parametrize(
    ("value", "expected"),
    [("!!int 12", 12), ("!!float 2", 2.0), ("!!bool yes", True), ("!!null ~", None)],
)
def test_good_tagged_scalars_and_the_int_limit(value: str, expected: Any) -> None:
    doc = parse_text(f"a: {value}\nb: {2**62}\nc: {-(2**62)}\n", "t.yaml")
    assert doc.data == {"a": expected, "b": 2**62, "c": -(2**62)}


@needs_alarm
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_ten_thousand_deep_nesting_is_located(suffix: str) -> None:
    text = '{\n  "version": 1,\n  "body": ' + "[" * 10_000 + "]" * 10_000 + "\n}\n"
    err = spec_error(lambda: parse_text(text, "deep" + suffix))
    assert err.line == 3
    assert err.message == "nesting deeper than 64 levels"


# --- 4. non-finite numbers, in specs and in overrides -------------------------------------


@pytest.mark.parametrize(
    "value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "!!float nan", "1.0e+999", "!!float inf"]
)
def test_non_finite_numbers_are_rejected_at_their_line(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, BASE.replace("eps: 0.00001", f"eps: {value}"))
    err = spec_error(lambda: rescompiler.load_spec(path))
    assert (err.line, err.path) == (7, "body[1].eps")
    assert err.message.endswith("is not a finite number")


def test_non_finite_mapping_key_is_rejected() -> None:
    err = spec_error(lambda: parse_text("a: 1\n? .nan\n: 2\n", "t.yaml"))
    assert err.line == 2 and "not a finite number" in err.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "nan is not a finite number"),
        (float("-inf"), "-inf is not a finite number"),
        (2**62 + 1, "integer too large (magnitude above 2**62)"),
        ([3, float("inf"), 8], "inf is not a finite number"),
    ],
)
def test_api_overrides_must_be_finite(tmp_path: Path, value: Any, message: str) -> None:
    path = write(tmp_path, BASE)
    key = "input_shape" if isinstance(value, list) else "classes"
    err = spec_error(lambda: rescompiler.load_spec(path, overrides={key: value}))
    assert err.file == str(path) and err.path == f"overrides.{key}"
    assert err.message == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".nan", "'.nan' is not a finite number"),
        ("-.inf", "'-.inf' is not a finite number"),
        ("9" * 5000, "is too large (magnitude above 2**62)"),
        ("!!int abc", "'abc' is not a valid integer (!!int)"),
        ("[" * 10_000, "nesting deeper than 64 levels"),
    ],
)
def test_cli_set_values_no_spec_may_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    path = write(tmp_path, BASE)
    with deadline():
        code = run([str(path), "--check", "--set", f"classes={value}"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.splitlines() == [f"{path}: overrides.classes: " + err.split(": ", 2)[2].strip()]
    assert message in err and "Traceback" not in err


def test_cli_set_still_parses_good_values_and_reports_syntax(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BASE)
    assert run([str(path), "--check", "--set", "classes=3"]) == 0
    assert run([str(path), "--check", "--set", "classes=[1,"]) == 2
    assert "cannot parse value" in capsys.readouterr().err
    # a usage problem wins over a bad value
    assert run([str(path), "--set", "classes=.nan"]) == 2


# --- 5. no control characters in diagnostics ------------------------------------------------


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x1b", "\x85", "\u2028", "\u202e"])
def test_keys_cannot_forge_diagnostic_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], char: str
) -> None:
    key = f"evil{char}x.yaml:1:1: forged"
    quoted = key.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    path = write(tmp_path, BASE.replace("  - {op: relu}", f'  - {{op: relu, "{quoted}": 1}}'))
    err = spec_error(lambda: rescompiler.load_spec(path))
    shown = ascii(char)[1:-1]
    assert err.line == 8
    assert err.path == f"body[2].evil{shown}x.yaml:1:1: forged"
    assert run([str(path), "--check"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:8:")


def test_every_diagnostic_is_escaped_centrally() -> None:
    chars = "".join(chr(c) for c in [*range(0x00, 0xA1), 0x2028, 0x2029, 0x202E, 0xFEFF])
    diagnostic = Diagnostic(Location(f"f{chars}.yaml", 1, 2), f"p{chars}", f"m{chars}")
    for text in (str(diagnostic), diagnostic.path, diagnostic.message, diagnostic.location.file):
        assert text.isprintable(), repr(text)
    assert "\\n" in diagnostic.message and "\\x1b" in diagnostic.path
    assert "\\u2028" in diagnostic.location.file
    sink = DiagnosticSink()
    sink.error(Location("a.yaml", 3, 1), "x\ny", "bad\r\nvalue")
    sink.warning(Location("a.yaml", 4, 1), "", "w\x00")
    with pytest.raises(SpecError) as info:
        sink.raise_if_errors()
    assert str(info.value) == "a.yaml:3:1: x\\ny: bad\\r\\nvalue"
    assert str(sink.warnings[0]) == "a.yaml:4:1: warning: w\\x00"


def test_long_paths_stay_truncated_after_escaping() -> None:
    path = format_path(("blocks", "\x1b" * 200, "body", 3))
    assert len(path) == 120 and path.endswith("...") and path.isprintable()
    assert format_path(("blocks", "a", "body", 3, "stride")) == "blocks.a.body[3].stride"
