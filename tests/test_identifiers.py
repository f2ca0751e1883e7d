"""Spec text and names reach generated source only as inert literals or checked identifiers:
the code-execution repro of the untrusted-specs issue, docstrings with quotes, names that
would shadow the generated module's imports or clash with nn.Module, Keras layer names."""

from __future__ import annotations

import ast
import builtins
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rescompiler
from rescompiler.expr import FUNCTIONS
from rescompiler.identifiers import (
    GENERATED_BUILTINS,
    MODULE_GLOBALS,
    TORCH_MODULE_ATTRIBUTES,
    TORCH_SEQUENTIAL_ATTRIBUTES,
)
from rescompiler.pytext import docstring, literal, string_literal

ROOT = Path(__file__).resolve().parent.parent
IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

# the repro of the issue, verbatim: a description wrapped so that a raw """ started a line
PWN = {
    "version": 1,
    "name": "m",
    "input_shape": [3, 16, 16],
    "body": [
        {"op": "conv", "name": "c1", "out": 8, "kernel": 3, "padding": 1},
        {"op": "global_avgpool"},
        {"op": "flatten"},
        {"op": "linear", "name": "fc", "out": 2},
    ],
    "description": "X" * 86 + '"""""' + ";open('PWNED','w').close();_='''",
    "params": {
        "z": "''';import torch;from torch import nn;from typing import Any;"
        "from collections.abc import Sequence;DEFAULTS={'z':0,#"
    },
}


def module_docstrings(source: str) -> list[str]:
    """The docstrings of a module and of its classes and functions."""
    tree = ast.parse(source)
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef))]
    return [doc for doc in (ast.get_docstring(n, clean=False) for n in nodes) if doc]


def top_level_kinds(source: str) -> set[str]:
    """The kinds of a module's top-level statements (an injected call would show as Expr)."""
    tree = ast.parse(source)
    kinds = set()
    for index, statement in enumerate(tree.body):
        if (
            index == 0
            and isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Constant)
        ):
            continue  # the module docstring
        kinds.add(type(statement).__name__)
    return kinds


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_code_execution_repro_stays_text(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(PWN))
    spec = rescompiler.load_spec(path)
    source = rescompiler.emit(spec, backend)
    compile(source, f"m_{backend}.py", "exec")
    assert top_level_kinds(source) <= {
        "ImportFrom",
        "Import",
        "AnnAssign",
        "Assign",
        "ClassDef",
        "FunctionDef",
    }
    assert any("open('PWNED','w')" in doc for doc in module_docstrings(source))
    if backend == "torch":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("keras")
    model = rescompiler.build(spec, backend)  # compiles and runs the emitted source
    assert model is not None
    (tmp_path / "m_gen.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("m_gen")
    assert not (tmp_path / "PWNED").exists()
    assert not Path(ROOT / "PWNED").exists()


DOCS = [
    'Bottleneck, as in "Deep Residual Learning"',
    'ends in a quote"',
    'ends in two quotes""',
    '"""',
    "'''",
    'a \\"\\"\\" b',
    "back\\slash at the end\\",
    "x" * 95 + '\\"""' + "y" * 10,
    "line one\nline two with \"quotes\" and ''' and \\n",
]


@pytest.mark.parametrize("doc", DOCS)
def test_block_docs_and_descriptions_compile_and_keep_their_text(
    doc: str, write_spec: Callable[..., Path]
) -> None:
    path = write_spec(
        json.dumps(
            {
                "version": 1,
                "name": "d",
                "description": doc,
                "reference": doc,
                "input_shape": [3, 8, 8],
                "blocks": {
                    "b": {"doc": doc, "body": [{"op": "conv", "name": "c", "out": 4, "kernel": 1}]}
                },
                "body": [{"block": "b", "name": "first"}, {"op": "relu"}],
            }
        ),
        "d.json",
    )
    spec = rescompiler.load_spec(path)
    flat = "".join(doc.split())  # wrapping may break long words
    for backend in ("torch", "keras"):
        source = rescompiler.emit(spec, backend)
        compile(source, f"d_{backend}.py", "exec")
        docs = ["".join(d.split()) for d in module_docstrings(source)]
        assert any(flat in d for d in docs), (backend, docs)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text(max_size=300), st.sampled_from([0, 4, 8]))
def test_docstring_is_one_constant_with_the_wrapped_text(text: str, indent: int) -> None:
    source = docstring(text, indent)
    tree = ast.parse(source, mode="eval")
    assert isinstance(tree.body, ast.Constant) and isinstance(tree.body.value, str)
    shown = "".join(tree.body.value.split())  # wrapping may break long words
    expected = "".join("".join(c if c.isprintable() else " " for c in text).split())
    assert shown == expected


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text())
def test_string_literal_round_trips(text: str) -> None:
    assert ast.literal_eval(string_literal(text)) == text


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_literal_is_a_python_literal_of_the_value(value: object) -> None:
    def as_tuples(v: object) -> object:
        if isinstance(v, list):
            return tuple(as_tuples(x) for x in v)
        if isinstance(v, dict):
            return {k: as_tuples(x) for k, x in v.items()}
        return v

    assert ast.literal_eval(literal(value)) == as_tuples(value)


def spec_text(**parts: str) -> str:
    """A small valid spec whose pieces can be replaced."""
    fields = {
        "params": "{width: 4}",
        "let": "{}",
        "block_params": "{}",
        "block_let": "{}",
        "node": "c",
        "top": "fc",
        "child": "'{i}'",
        "keras": "",
        "repeat": "2",
    }
    fields.update(parts)
    return f"""\
version: 1
name: ident
input_shape: [3, 8, 8]
params: {fields["params"]}
let: {fields["let"]}
blocks:
  b:
    params: {fields["block_params"]}
    let: {fields["block_let"]}
    body:
      - {{op: conv, name: {fields["node"]}, out: 4, kernel: 1{fields["keras"]}}}
body:
  - {{block: b, repeat: {fields["repeat"]}, child_name: {fields["child"]}}}
  - {{op: global_avgpool}}
  - {{op: flatten}}
  - {{op: linear, name: {fields["top"]}, out: 2}}
"""


REFUSED = [
    ({"params": "{nn: 4}"}, 4, "param 'nn' cannot be used: the generated torch module imports"),
    ({"params": "{torch: 4}"}, 4, "param 'torch'"),
    ({"params": "{F: 4}"}, 4, "param 'F'"),
    ({"params": "{layers: [2, 2]}"}, 4, "param 'layers' cannot be used: the generated Keras"),
    ({"params": "{input_shape: 4}"}, 4, "input_shape is the spec's own field"),
    ({"params": "{range: 4}"}, 4, "calls Python's range()"),
    ({"params": "{min: 4}"}, 4, "min() is a function of the expression language"),
    ({"params": "{DEFAULTS: 4}"}, 4, "define DEFAULTS"),
    ({"let": "{build: 4}"}, 5, "let 'build'"),
    ({"block_params": "{in_channels: 4}"}, 8, "block param 'in_channels' cannot be used"),
    ({"block_let": "{Sequence: 4}"}, 9, "block let 'Sequence'"),
    ({"node": "forward"}, 11, "node name 'forward' cannot be used: nn.Module has"),
    ({"node": "float"}, 11, "node name 'float'"),
    ({"node": "to"}, 11, "node name 'to'"),
    ({"top": "train"}, 16, "node name 'train'"),
    ({"top": "state_dict"}, 16, "node name 'state_dict'"),
    ({"node": "out_channels"}, 11, "the generated torch classes set an attribute"),
    ({"child": "append", "repeat": "1"}, 13, "nn.Sequential has a method 'append'"),
    ({"keras": ", names: {keras: 'a/b'}"}, 11, "keras name 'a/b'"),
]


@pytest.mark.parametrize(("parts", "line", "message"), REFUSED)
def test_names_the_generated_code_cannot_carry_are_refused_at_their_line(
    parts: dict[str, str], line: int, message: str, write_spec: Callable[..., Path]
) -> None:
    path = write_spec(spec_text(**parts))
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(path)
    matching = [d for d in info.value.diagnostics if message in str(d)]
    assert matching, str(info.value)
    assert matching[0].location.line == line, str(info.value)


def test_group_children_are_checked_against_sequential(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        "version: 1\nname: g\ninput_shape: [3, 8, 8]\nbody:\n"
        "  - group: features\n    body:\n      - {op: conv, name: insert, out: 4, kernel: 1}\n"
    )
    with pytest.raises(
        rescompiler.SpecError, match=r"nn\.Sequential has a method 'insert'"
    ) as info:
        rescompiler.load_spec(path)
    assert info.value.line == 7


def test_spec_names_that_shadow_nothing_still_compile(write_spec: Callable[..., Path]) -> None:
    """Names close to the reserved ones, and block names equal to a param in CamelCase."""
    path = write_spec(
        spec_text(params="{Bb: 4, nn_width: 2, layer: 3, inputs_: 1}", node="conv_to")
    )
    spec = rescompiler.load_spec(path)
    for backend in ("torch", "keras"):
        compile(rescompiler.emit(spec, backend), backend, "exec")


def test_torch_attribute_list_matches_torch() -> None:
    nn = pytest.importorskip("torch.nn")
    names = {a for a in set(dir(nn.Module)) | set(vars(nn.Module())) if IDENT.match(a)}
    assert names == TORCH_MODULE_ATTRIBUTES
    sequential = {a for a in set(dir(nn.Sequential)) - set(dir(nn.Module)) if IDENT.match(a)}
    assert sequential == TORCH_SEQUENTIAL_ATTRIBUTES


def generated_sources() -> list[tuple[str, str]]:
    """Every committed generated module, plus inference builds of a few specs."""
    sources = [(p.name, p.read_text()) for p in sorted((ROOT / "generated").glob("*_*.py"))]
    for name in ("resnet50", "densenet121", "unet", "cifar_resnet20"):
        spec = rescompiler.load_spec(ROOT / "specs" / f"{name}.yaml")
        for backend in ("torch", "keras"):
            sources.append(
                (
                    f"{name}_{backend}_inference",
                    rescompiler.emit(spec, backend, optimize="inference"),
                )
            )
    return sources


def test_reserved_lists_cover_what_generated_code_uses() -> None:
    """Every builtin the generated code reads and every module-level name it binds is one
    that spec params and lets are kept from."""
    for name, source in generated_sources():
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and hasattr(builtins, node.id):
                assert node.id in GENERATED_BUILTINS | set(FUNCTIONS), (name, node.id)
        for statement in tree.body:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                bound = [a.asname or a.name.split(".")[0] for a in statement.names]
            elif isinstance(statement, ast.Assign):
                bound = [t.id for t in statement.targets if isinstance(t, ast.Name)]
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                bound = [statement.target.id]
            else:
                continue
            for bound_name in bound:
                if IDENT.match(bound_name):
                    assert bound_name in MODULE_GLOBALS, (name, bound_name)


BACKEND_REFUSALS = [
    (
        "version: 1\nname: ct\ninput_shape: [4, 8, 8]\nbody:\n"
        "  - {op: conv_transpose, name: up, out: 4, kernel: 2, stride: 2, groups: 2}\n",
        5,
        "keras: Conv2DTranspose has no groups",
    ),
    (
        "version: 1\nname: st\ninput_shape: [4, 8, 8]\nblocks:\n  two:\n    inputs: [a, b]\n"
        "    body:\n      - {op: add, inputs: [a, b]}\nbody:\n  - {op: relu, name: r}\n"
        "  - {block: two, repeat: 2, inputs: [r, input]}\n",
        11,
        "torch: stages of multi-input blocks are not supported",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), BACKEND_REFUSALS)
def test_check_reports_what_a_backend_refuses_at_its_line(
    text: str,
    line: int,
    message: str,
    write_spec: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--check`` passing means every backend emits the spec; a refusal is located."""
    from rescompiler.cli import run

    path = write_spec(text)
    rescompiler.load_spec(path)  # the front end accepts it
    assert run([str(path), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and message in err, err
    assert "Traceback" not in err
