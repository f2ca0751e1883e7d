"""Packaging and the library by name: the wheel installs only ``rescompiler`` (backends as
``rescompiler.backends``, with the spec library and the JSON Schema inside), works from any
folder, beside a user's own ``backends`` package, and without torch it says which extra to
install instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler.cli import run
from rescompiler.library import library_names

ROOT = Path(__file__).resolve().parent.parent
USER_CODE = """\
import json, sys
import backends  # the user's own package of that name
import rescompiler
assert backends.MINE == 1, backends
spec = rescompiler.load_spec("resnet18", overrides={"num_classes": 10})
source = rescompiler.emit(spec, "torch")
keras_source = rescompiler.emit(spec, "keras")
compile(source, "t", "exec"), compile(keras_source, "k", "exec")
try:
    rescompiler.build(spec, "torch")
except rescompiler.BackendError as exc:
    print("BUILD:", exc)
else:
    print("BUILD: ok")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "backends")))
"""


def user_folder(tmp_path: Path) -> Path:
    """A folder with its own ``backends`` package and a spec extending a library spec."""
    folder = tmp_path / "user"
    (folder / "backends").mkdir(parents=True)
    (folder / "backends" / "__init__.py").write_text("MINE = 1\n")
    (folder / "mine.yaml").write_text(
        "version: 1\nextends: resnet18\nname: mine\nparams: {num_classes: 7}\n"
    )
    return folder


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_works_anywhere(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("rescompiler-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"rescompiler"}
    assert "rescompiler/backends/torch/templates/module.py.jinja" in names
    assert "rescompiler/_specs/resnet50.yaml" in names
    assert "rescompiler/_schema/spec.schema.json" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    folder = user_folder(tmp_path)

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=folder, capture_output=True, text=True, env=env)

    summary = call(str(venv / "bin" / "rescompile"), "resnet50", "--summary")
    assert summary.returncode == 0, summary.stderr
    assert "25,557,032" in summary.stdout
    extended = call(str(venv / "bin" / "rescompile"), "mine.yaml", "--summary", "--format", "json")
    assert extended.returncode == 0, extended.stderr
    assert '"name": "mine"' in extended.stdout
    listing = call(str(venv / "bin" / "rescompile"), "list")
    assert listing.returncode == 0 and "torchvision.models.resnet50" in listing.stdout
    schema = call(str(venv / "bin" / "rescompile"), "schema")
    assert schema.returncode == 0 and '"title": "rescompiler spec"' in schema.stdout
    user = call(str(venv / "bin" / "python"), "-c", USER_CODE)
    assert user.returncode == 0, user.stderr
    assert "BUILD: building with the torch backend needs torch" in user.stdout
    assert "pip install 'rescompiler[torch]'" in user.stdout
    assert user.stdout.strip().endswith('["backends"]')  # ours live under rescompiler.backends
    assert "Traceback" not in user.stderr


def test_editable_install_leaves_a_users_backends_package_alone(tmp_path: Path) -> None:
    folder = user_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", USER_CODE], cwd=folder, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "BUILD: ok" in result.stdout or "BUILD: building" in result.stdout
    assert result.stdout.strip().endswith('["backends"]')


def test_library_specs_by_name(write_spec: Callable[..., Path]) -> None:
    by_name = rescompiler.load_spec("resnet50")
    by_path = rescompiler.load_spec(ROOT / "specs" / "resnet50.yaml")
    assert by_name.graph.nodes == by_path.graph.nodes
    assert rescompiler.load_spec("resnet50.yaml").name == "resnet50"
    child = write_spec("version: 1\nextends: resnet18\nname: r18\nparams: {num_classes: 10}\n")
    assert rescompiler.load_spec(child).params["num_classes"] == 10
    assert "resnet50" in library_names() and len(library_names()) >= 27


def test_a_file_wins_over_a_library_name(
    write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = write_spec("version: 1\nname: mine\ninput_shape: [3, 8, 8]\nbody: [{op: relu}]\n")
    (mine.parent / "resnet18.yaml").write_text(mine.read_text())
    child = write_spec("version: 1\nextends: resnet18.yaml\nname: child\n", "child.yaml")
    assert [n.op for n in rescompiler.load_spec(child).graph.nodes] == ["relu"]
    monkeypatch.chdir(mine.parent)
    assert rescompiler.load_spec("resnet18.yaml").name == "mine"


def test_unknown_names_list_close_library_names(
    write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(rescompiler.SpecError, match="did you mean 'resnet50'"):
        rescompiler.load_spec("resnet5")
    child = write_spec("version: 1\nextends: resnt18\nname: c\n")
    with pytest.raises(rescompiler.SpecError, match="did you mean 'resnet18'") as info:
        rescompiler.load_spec(child)
    assert info.value.line == 2
    assert run(["resnet5", "--check"]) == 2  # a missing spec file is a usage error
    err = capsys.readouterr().err
    assert "rescompile: error: no spec file 'resnet5'" in err and "'resnet50'" in err


def test_rescompile_list_prints_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "params", "with", "BN", "stats", "reference"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(library_names())
    assert "11,689,512" in rows["resnet18"] and "torchvision.models.resnet18" in rows["resnet18"]
    assert "25,613,800" in rows["resnet50v2"]  # the Keras count, with BN statistics
