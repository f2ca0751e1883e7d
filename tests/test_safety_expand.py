"""Specs are untrusted data: every expression, value, stage and attribute is bounded, so a
hostile spec ends in a located one-line SpecError within a second or two, never a hang, a
MemoryError or a RecursionError."""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import rescompiler
from rescompiler import SpecError, expand
from rescompiler.attrs import RULES, AttrError
from rescompiler.expr import (
    MAX_ELEMENTS,
    MAX_NESTING,
    ExprError,
    check_value,
    evaluate,
    expression_names,
    parse_expr,
    render_template,
    suggest,
)
from rescompiler.infer import InferError, infer_node

Writer = Callable[..., Path]
ROOT = Path(__file__).resolve().parent.parent
MALFORMED = Path(__file__).parent / "malformed"
HEADER = "version: 1\nname: hostile\ninput_shape: [3, 16, 16]\n"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging) when the body runs longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def spec_error(path: Path, seconds: float = 10) -> SpecError:
    """The SpecError of a spec that must fail, within ``seconds``."""
    with deadline(seconds), pytest.raises(SpecError) as info:
        rescompiler.load_spec(path)
    for diagnostic in info.value.diagnostics:
        assert diagnostic.location.line > 0, str(diagnostic)
        assert "\n" not in diagnostic.message
    return info.value


def ev(source: str, **env: object) -> object:
    return parse_expr(source).evaluate(env)


# -- 1. every evaluator function has a bounded cost ----------------------------------------


def test_expressions_that_compute_for_ever_in_c_fail_at_once() -> None:
    """round(8, -10**9) computes 10**(10**9) inside C, where no signal interrupts it: run the
    hostile expressions in a subprocess that is killed when it takes too long."""
    code = textwrap.dedent(
        """
        from rescompiler.expr import ExprError, parse_expr
        for source in [
            "round(8, -1000000000)",
            "round(8, 1000000000)",
            "round(1.5, -400)",
            "int('9' * 4000)",
            "int(1e308) + 1",
            "round(1e308)",
            "(-8) ** 0.5",
            "'%999999999d' % 1",
            "sum([1, 2], [])",
            "65536 ** 64",
        ]:
            try:
                parse_expr(source).evaluate({})
            except ExprError as exc:
                print("error:", source, "->", exc)
            else:
                print("accepted:", source)
        """
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 20
    lines = result.stdout.splitlines()
    assert len(lines) == 10 and all(line.startswith("error:") for line in lines), lines
    assert "ndigits must be between -32 and 32" in lines[0]
    assert "not a real number" in lines[6]
    assert "not allowed" in lines[7]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("round(8, -33)", "ndigits must be between -32 and 32"),
        ("round(8, 1.5)", "ndigits must be an integer"),
        ("round(8, True)", "ndigits must be an integer"),
        ("round(1, 2, 3)", "one or two arguments"),
        ("int(digits)", "longer than 40 characters"),
        ("int('10', 2)", "int() takes one argument"),
        ("int(1e300)", "too large"),
        ("sum(3)", "takes a list of numbers"),
        ("sum([[1], [2]])", "takes a list of numbers"),
        ("sum([1], 2)", "takes one argument"),
        ("[1] + [2]", "joining lists or strings with + is not allowed"),
        ("'a' + 'b'", "joining lists or strings with + is not allowed"),
        ("'%s' % 1", "arithmetic on lists or strings is not allowed"),
        ("[1] * 2", "repeating lists or strings"),
        ("(-8) ** 0.5", "not a real number"),
        ("1e999", "is not finite"),
        ("1e308 * 10", "not a finite number"),
        ("9" * 30, "too large"),
        ("[1, 2][True]", "only lists can be indexed"),
        ("-" * 70 + "1", "nested deeper than 64 levels"),
        ("(" * 210 + "1" + ")" * 210, "invalid expression"),
    ],
)
def test_evaluator_limits(source: str, fragment: str) -> None:
    with deadline(5), pytest.raises(ExprError, match=None) as info:
        ev(source, digits="1" * 41)
    assert fragment in str(info.value)


def test_functions_keep_working_within_the_limits() -> None:
    assert ev("round(2.567, 2)") == 2.57
    assert ev("round(1234, -2)") == 1200
    assert ev("int('42') + int(3.9)") == 45
    assert ev("sum(depths) + sum([0.5])", depths=[3, 4, 6, 3]) == 16.5
    assert ev("max(d) + min(d) + len(d)", d=[1, 5]) == 8
    assert ev("'relu' == act and 1 in [1, 2]", act="relu") is True
    assert ev("-" * 60 + "1") == 1


def test_values_are_capped_in_size_depth_and_kind() -> None:
    big = list(range(MAX_ELEMENTS // 2 + 1))
    assert ev("big", big=big) is big
    with pytest.raises(ExprError, match="at most 10,000 elements"):
        ev("[big, big]", big=big)
    with pytest.raises(ExprError, match="at most 10,000 elements"):
        ev("x", x=list(range(MAX_ELEMENTS + 1)))
    deep: list[object] = [1]
    for _ in range(MAX_NESTING - 1):
        deep = [deep]
    assert ev("d", d=deep) is deep
    with pytest.raises(ExprError, match="nested deeper than 32 levels"):
        ev("[d]", d=deep)
    with pytest.raises(ExprError, match="string longer than 1,000"):
        ev("s", s="x" * 1001)
    with pytest.raises(ExprError, match="got a mapping"):
        ev("m", m={"a": 1})
    with pytest.raises(ExprError, match="too large"):
        ev("x", x=2**80)
    with pytest.raises(ExprError, match="not a finite number"):
        ev("x", x=math.inf)
    with pytest.raises(ExprError, match="nested deeper"):
        evaluate([[[[1]]]] * 1 if False else _nested(40), {})
    # a value measured once is remembered, but a new list around it is measured again
    shared = list(range(6000))
    assert check_value(shared) is shared
    with pytest.raises(ExprError):
        check_value([shared, shared])


def _nested(levels: int) -> list[object]:
    value: list[object] = [1]
    for _ in range(levels):
        value = [value]
    return value


def test_deep_values_do_not_exhaust_the_stack() -> None:
    assert expression_names(_nested(5000)) == set()
    with pytest.raises(ExprError, match="nested deeper"):
        evaluate(_nested(5000), {})
    with pytest.raises(ExprError, match="nested deeper"):
        check_value(_nested(5000))


def test_name_templates_reject_lists() -> None:
    with pytest.raises(ExprError, match="is a list"):
        render_template("layer{d}", {"d": [1, 2]})


def test_suggestions_stay_fast_with_many_names() -> None:
    names = [f"name{k}" for k in range(200_000)]
    with deadline(2):
        for _ in range(50):
            suggest("name7x", names)
    assert suggest("plane", ["planes", "stride"]) == " (did you mean 'planes'?)"


# -- 1 and 2 through whole specs -----------------------------------------------------------


def test_doubling_let_list_is_capped(write_spec: Writer) -> None:
    lets = "".join(f'  d{k}: "[d{k - 1}, d{k - 1}]"\n' for k in range(1, 41))
    path = write_spec(HEADER + "let:\n  d0: 1\n" + lets + "body:\n  - {op: relu}\n")
    err = spec_error(path)
    assert err.path == "let.d13" and "at most 10,000 elements" in err.message


def test_three_thousand_deep_let_chain(write_spec: Writer) -> None:
    lets = "".join(f'  d{k}: "[d{k - 1}]"\n' for k in range(1, 3000))
    body = 'body:\n  - {op: conv, out: "len(d2999)", kernel: 1}\n'
    err = spec_error(write_spec(HEADER + "let:\n  d0: 1\n" + lets + body))
    assert err.path == "let.d33" and "nested deeper than 32 levels" in err.message
    assert err.line == 38


def test_long_unary_chains(write_spec: Writer) -> None:
    lets = "".join(f'  d{k}: "-d{k - 1}"\n' for k in range(1, 2000))
    body = 'body:\n  - {op: conv, out: "d1999 + 2", kernel: 1}\n'
    with deadline(10):
        spec = rescompiler.load_spec(write_spec(HEADER + "let:\n  d0: 1\n" + lets + body))
    assert spec.graph.node("conv").shape[0] == 1
    nested = HEADER + 'body:\n  - {op: conv, out: "' + "-" * 498 + '2", kernel: 1}\n'
    err = spec_error(write_spec(nested))
    assert err.path == "body[0].out" and "nested deeper than 64" in err.message


def test_hostile_corpus_files_fail_fast() -> None:
    for name in (
        "70_round_huge_ndigits.yaml",
        "71_let_list_doubling.yaml",
        "72_let_chain_too_deep.yaml",
        "74_nested_stage_product.yaml",
        "89_blocks_nested_too_deep.yaml",
    ):
        start = time.monotonic()
        spec_error(MALFORMED / name, seconds=10)
        assert time.monotonic() - start < 5, name


# -- 3. the node cap holds before expansion ------------------------------------------------

STAGES = """\
blocks:
  inner:
    body:
      - group: g
        body: {group_body}
  outer:
    body:
      - {{block: inner, repeat: {inner}}}
body:
  - {{block: outer, repeat: {outer}}}
"""


def test_stages_of_stages_of_empty_groups(write_spec: Writer) -> None:
    text = HEADER + STAGES.format(group_body="[]", inner=250000, outer=250000)
    err = spec_error(write_spec(text), seconds=5)
    assert err.path == "blocks.inner.body[0].body"
    assert err.message == "a group needs at least one node" and err.line == 8


@pytest.mark.parametrize("outer", [250000, 1000])
def test_product_of_nested_repeats_is_capped_before_expansion(
    write_spec: Writer, outer: int
) -> None:
    group_body = "[{op: relu, when: false}]"
    text = HEADER + STAGES.format(group_body=group_body, inner=250000, outer=outer)
    start = time.monotonic()
    err = spec_error(write_spec(text), seconds=5)
    assert time.monotonic() - start < 3
    assert "RESCOMPILER_MAX_NODES" in err.message and "repeat" in err.path
    if outer == 1000:
        assert "makes 250,000,000 block instances" in err.message
        assert err.path == "blocks.outer.body[0].repeat"


def test_instances_groups_and_switched_off_nodes_count(
    write_spec: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expand, "MAX_NODES", 100)
    off = HEADER + (
        "blocks:\n  b:\n    body:\n"
        + "      - {op: relu, when: false}\n" * 10
        + "body:\n  - {block: b, repeat: 20}\n"
    )
    err = spec_error(write_spec(off))
    assert "cap of 100 layers" in err.message and "switched-off" in err.message
    ok = off.replace("repeat: 20", "repeat: 8")
    assert rescompiler.load_spec(write_spec(ok, "ok.yaml")).graph.nodes == ()


def test_evaluations_are_budgeted(write_spec: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expand, "MAX_EVALUATIONS", 1000)
    lets = "".join(f"      v{k}: {k}\n" for k in range(100))
    text = HEADER + (
        "blocks:\n  b:\n    let:\n" + lets + "    body:\n      - {op: relu}\n"
        "body:\n  - {block: b, repeat: 20}\n"
    )
    err = spec_error(write_spec(text))
    assert "RESCOMPILER_MAX_EVALUATIONS" in err.message


def test_block_nesting_is_bounded(write_spec: Writer) -> None:
    chain = "".join(f"  b{k}:\n    body:\n      - {{block: b{k + 1}}}\n" for k in range(200))
    text = (
        HEADER + "blocks:\n" + chain + "  b200:\n    body: [{op: relu}]\nbody:\n  - {block: b0}\n"
    )
    err = spec_error(write_spec(text))
    assert "nested deeper than 32 levels" in err.message
    assert "b0 -> b1 -> b2 -> ... -> b30 -> b31" in err.message


def test_recursion_error_is_a_located_error_as_a_last_resort(
    write_spec: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expand, "MAX_NESTING", 10_000)
    chain = "".join(f"  b{k}:\n    body:\n      - {{block: b{k + 1}}}\n" for k in range(300))
    text = (
        HEADER + "blocks:\n" + chain + "  b300:\n    body: [{op: relu}]\nbody:\n  - {block: b0}\n"
    )
    path = write_spec(text)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 400)
    try:
        with pytest.raises(SpecError) as info:
            rescompiler.load_spec(path)
    finally:
        sys.setrecursionlimit(limit)
    assert "nested too deeply" in str(info.value)
    assert info.value.line > 0


# -- 4. a bool is not a number; sizes and ranges -------------------------------------------


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ("{op: conv, out: true, kernel: 1}", "body[0].out: expected an integer"),
        ("{op: conv, out: 4, kernel: false}", "body[0].kernel: expected an integer"),
        ("{op: conv, out: 4, kernel: [3, true]}", "body[0].kernel"),
        ("{op: conv, out: 4.0, kernel: 1}", "body[0].out: expected an integer"),
        ("{op: conv, out: 4, kernel: 1, bias: 1}", "body[0].bias: expected true/false"),
        ("{op: bn, eps: true}", "body[0].eps: expected a number"),
        ("{op: relu, when: 0}", "body[0].when: expected true/false"),
        ("{op: upsample, scale: true}", "body[0].scale: expected an integer"),
        ("{block: b, repeat: true}", "body[0].repeat: expected an integer"),
    ],
)
def test_literal_bools_and_numbers_are_not_interchangeable(
    write_spec: Writer, node: str, fragment: str
) -> None:
    blocks = "blocks:\n  b:\n    body: [{op: relu}]\n"
    err = spec_error(write_spec(HEADER + blocks + f"body:\n  - {node}\n"))
    assert fragment in str(err) and err.line == 8


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ("{op: conv, out: flag, kernel: 1}", "out must be an integer, got True"),
        ("{op: conv, out: 4, kernel: flag}", "kernel must be an integer, got True"),
        ("{op: dropout, p: 1.5}", "p must be in [0, 1), got 1.5"),
        ("{op: dropout, p: 1}", "p must be in [0, 1), got 1"),
        ("{op: dropout, p: -0.1}", "p must be in [0, 1)"),
        ("{op: bn, eps: 0}", "eps must be positive"),
        ("{op: bn, eps: -1e-5}", "eps must be positive"),
        ("{op: bn, momentum: 1.01}", "momentum must be in [0, 1], got 1.01"),
        ("{op: bn, momentum: flag}", "momentum must be a number, got True"),
        ("{op: leaky_relu, slope: 1e308 * 10}", "not a finite number"),
        ("{op: upsample, scale: 0}", "scale must be positive"),
        ("{op: channel_pad, before: -1, after: 0}", "before must be non-negative"),
    ],
)
def test_attribute_ranges(write_spec: Writer, node: str, fragment: str) -> None:
    err = spec_error(write_spec(HEADER + f"params: {{flag: true}}\nbody:\n  - {node}\n"))
    assert fragment in str(err) and err.line == 6, str(err)


def test_values_in_range_still_pass(write_spec: Writer) -> None:
    body = (
        "body:\n  - {op: bn, eps: 1, momentum: 0}\n  - {op: bn, momentum: 1}\n"
        "  - {op: dropout, p: 0}\n  - {op: leaky_relu, slope: -0.5}\n  - {op: upsample, scale: 1}\n"
    )
    spec = rescompiler.load_spec(write_spec(HEADER + body))
    assert [n.op for n in spec.graph.nodes] == ["bn", "bn", "dropout", "leaky_relu", "upsample"]


def test_float_rules_reject_non_finite_numbers() -> None:
    for field in ("eps", "momentum", "slope", "p"):
        for value in (math.inf, -math.inf, math.nan, 10**400):
            with pytest.raises(AttrError, match="finite"):
                RULES[field](value, field)


def test_every_inferred_size_is_at_least_one(write_spec: Writer) -> None:
    with pytest.raises(InferError, match="subsample output 3×0×0 is empty"):
        infer_node("subsample", {"stride": (2, 2)}, ["x"], [(3, 0, 0)])
    with pytest.raises(InferError, match="flatten output 0 is empty"):
        infer_node("flatten", {}, ["x"], [(0, 4, 4)])
    four = HEADER + "body:\n" + "  - {op: conv, out: 3, kernel: 3, stride: 2}\n" * 4
    err = spec_error(write_spec(four))
    assert err.path == "body[3]" and "larger than its padded input 1" in err.message


# -- 5. block param defaults are checked at check time -------------------------------------


def test_block_defaults_are_evaluated_even_when_overridden_or_unused(write_spec: Writer) -> None:
    text = HEADER + (
        "params: {depths: [1, 2], base: 4}\n"
        "blocks:\n"
        "  used:\n"
        '    params: {out: "sum(3)", width: "base * 2"}\n'
        "    body: [{op: conv, out: out + width, kernel: 1}]\n"
        "  unused:\n"
        '    params: {w: "depths[5]"}\n'
        "    body: [{op: relu}]\n"
        "body:\n  - {block: used, args: {out: 4}}\n"
    )
    err = spec_error(write_spec(text))
    assert [(d.path, d.location.line) for d in err.diagnostics] == [
        ("blocks.used.params.out", 7),
        ("blocks.unused.params.w", 10),
    ]
    assert "sum() takes a list of numbers, got 3" in err.diagnostics[0].message
    assert "index 5 out of range" in err.diagnostics[1].message
    good = text.replace('"sum(3)"', '"base"').replace("depths[5]", "depths[1]")
    spec = rescompiler.load_spec(write_spec(good, "good.yaml"))
    assert spec.graph.node("used.conv").shape[0] == 12


# -- 6. child names and backend names ------------------------------------------------------

STAGE = (
    HEADER
    + """\
blocks:
  b:
    body:
      - {{op: conv, out: 4, kernel: 1}}
body:
  - {{block: b, name: stage, repeat: 3, {extra}}}
"""
)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("child_name: a", "blocks 0 and 1 of this stage are both named 'a'"),
        ("child_name: 'x{i // 2}'", "blocks 0 and 1 of this stage are both named 'x0'"),
        ("child_name: '{i / 2}'", "child name '0.0' of block 0 is not a valid name"),
        ("child_name: '{i - 1}'", "child name '-1' of block 0 is not a valid name"),
        (
            "child_name: class",
            "child name 'class' of block 0 is not a valid name: it is a reserved",
        ),
        ("child_name: '0{i}'", "child name '00' of block 0 is not a valid name"),
        ("child_name: 'b{i}-'", "child name 'b0-' of block 0 is not a valid name"),
        ("names: {keras: 'a b{i}'}", "keras name 'a b0' is not a valid name"),
        ("names: {keras: 'x{i / 2}'}", "keras name 'x0.0' is not a valid name"),
    ],
)
def test_child_and_backend_names_must_be_valid_and_unique(
    write_spec: Writer, extra: str, fragment: str
) -> None:
    err = spec_error(write_spec(STAGE.format(extra=extra)))
    assert fragment in err.message and err.line == 9
    assert err.path.startswith("body[0].")


def test_valid_child_names_still_work(write_spec: Writer) -> None:
    for extra, ids in [
        ("child_name: 'layer{i + 1}'", ["stage.layer1", "stage.layer2", "stage.layer3"]),
        ("child_name: '{i * 10}'", ["stage.0", "stage.10", "stage.20"]),
        ("child_name: 'block1-{i}'", ["stage.block1-0", "stage.block1-1", "stage.block1-2"]),
        ("names: {keras: 'blk{i}'}", ["stage.0", "stage.1", "stage.2"]),
    ]:
        spec = rescompiler.load_spec(write_spec(STAGE.format(extra=extra)))
        assert [n.id.rsplit(".", 1)[0] for n in spec.graph.nodes] == ids


def test_a_stage_built_by_torch_has_the_summarised_parameters(write_spec: Writer) -> None:
    """A constant child name gave three children one torch name (the built model held fewer
    parameters than the summary counted; that is an error now, see above): with distinct
    child names the built model holds exactly the parameters the summary counts."""
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(write_spec(STAGE.format(extra="child_name: 'c{i}'")))
    model = rescompiler.build(spec, "torch")
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) == spec.graph.params
