"""The rescompile command, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, SPECS

SNAPSHOTS = Path(__file__).parent / "snapshots"


def rescompile(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rescompiler", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_ok() -> None:
    result = rescompile(str(SPECS / "resnet50.yaml"), "--check")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stderr and result.stdout == ""


def test_invalid_spec_exits_1_with_positions_and_no_traceback(
    write_spec: Callable[..., Path],
) -> None:
    path = write_spec(
        "version: 1\nname: bad\ninput_shape: [3, 8, 8]\n"
        "body:\n  - {op: conv, out: 4, kernel: 3, strid: 1}\n  - {op: relu, inputs: nope}\n"
    )
    result = rescompile(str(path), "--check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{path}:5:")
    assert "body[0].strid: unknown key 'strid'" in lines[0]
    assert len(lines) == 2  # validation errors do not stop the later checks
    assert lines[1].startswith(f"{path}:6:") and "unknown node 'nope'" in lines[1]


def test_compile_failure_writes_nothing(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    path = write_spec("version: 1\nname: bad\ninput_shape: [3, 8, 8]\nbody: [{op: nope}]\n")
    out = tmp_path / "out"
    result = rescompile(str(path), "--backend", "torch", "-o", str(out))
    assert result.returncode == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["specs/resnet50.yaml"],
        ["specs/resnet50.yaml", "--graph", "svg"],
        ["specs/resnet50.yaml", "--check", "--summary"],
        ["specs/resnet50.yaml", "--check", "--set", "novalue"],
        ["specs/resnet50.yaml", "--backend", "nosuch"],
        ["specs/resnet50.yaml", "--backend", "torch", "-o", "not_a_dir/resnet50.py"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = rescompile(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert not (ROOT / "not_a_dir").exists()  # -o names a directory: a file name is refused


def test_set_overrides_and_summary_json() -> None:
    result = rescompile(
        "specs/resnet50.yaml", "--summary", "--format", "json",
        "--set", "num_classes=10", "--set", "depths=[3,4,23,3]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["layers"][-1]["output_shape"] == [10]
    assert any(layer["name"] == "layer3.22.conv3" for layer in data["layers"])
    totals = data["totals"]
    assert totals["trainable_params"] == 44_549_160 - 2048 * 990 - 990
    assert totals["total_params"] == totals["trainable_params"] + totals["bn_statistics"]


def test_missing_file_is_a_usage_error() -> None:
    result = rescompile("specs/nope.yaml", "--check")
    assert result.returncode == 2
    assert result.stderr.startswith("rescompile: error: no spec file 'specs/nope.yaml'")


@pytest.mark.parametrize("name", ["resnet50", "resnet18"])
def test_summary_snapshot(name: str) -> None:
    if not (SPECS / f"{name}.yaml").exists():
        pytest.fail(f"spec {name} missing")
    result = rescompile(f"specs/{name}.yaml", "--summary")
    assert result.returncode == 0, result.stderr
    snapshot = SNAPSHOTS / f"{name}.summary.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(result.stdout)
    assert result.stdout == snapshot.read_text()


@pytest.mark.parametrize("kind", ["mermaid", "dot"])
def test_graph_has_stage_clusters_and_merge_styles(kind: str) -> None:
    result = rescompile("specs/resnet50.yaml", "--graph", kind)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    if kind == "mermaid":
        assert out.startswith("flowchart TD")
        assert out.count("subgraph") == 4 and 'layer3: stage bottleneck ×6"]' in out
        assert "classDef add" in out and "class n" in out
        assert '(("layer1.0.add<br/>+ 256×56×56"))' in out
    else:
        assert out.startswith('digraph "resnet50"')
        assert out.count("subgraph cluster_") == 4
        assert "shape=circle" in out


def test_schema_matches_committed_file() -> None:
    result = rescompile("schema")
    assert result.returncode == 0
    committed = (ROOT / "schema" / "spec.schema.json").read_text()
    assert json.loads(result.stdout) == json.loads(committed)
    assert result.stdout == committed


def test_check_summary_graph_never_import_frameworks(write_spec: Callable[..., Path]) -> None:
    bad = write_spec("version: 1\nname: b\ninput_shape: [3, 8, 8]\nbody: [{op: conv}]\n")
    code = (
        "import sys\n"
        "from rescompiler.cli import run\n"
        "codes = [run([a, *rest]) for a, rest in [\n"
        "  ('specs/resnet50.yaml', ['--check']), ('specs/resnet50.yaml', ['--summary']),\n"
        "  ('specs/resnet50.yaml', ['--graph', 'dot']), (sys.argv[1], ['--check']),\n"
        "  (sys.argv[1], ['--summary'])]]\n"
        "assert codes == [0, 0, 0, 1, 1], codes\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_import_rescompiler_is_framework_free() -> None:
    code = (
        "import sys, rescompiler\n"
        "rescompiler.summarize('specs/resnet50.yaml')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow')]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
