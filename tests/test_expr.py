"""The safe expression evaluator."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rescompiler.expr import ExprError, parse_expr, render_template, template_parts


def ev(source: str, **env: object) -> object:
    return parse_expr(source).evaluate(env)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("planes * 4", 256),
        ("planes * width_per_group // 64 * groups", 128),
        ("2 if i == 0 else 1", 2),
        ("depths[1]", 4),
        ("depths[-1] + 1", 4),
        ("max(planes, 3) - min(1, 2)", 63),
        ("not (i > 0 and planes < 10)", True),
        ("sum(depths) * 3 + 2", 50),
        ("len(depths)", 4),
        ("(depth - 2) // 9", 18),
        ("7 % 3 + 2 ** 3", 9),
        ("i in [0, 1]", True),
    ],
)
def test_evaluates(source: str, expected: object) -> None:
    env = {"planes": 64, "width_per_group": 128, "groups": 1, "i": 0, "depths": [3, 4, 6, 3]}
    assert ev(source, depth=164, **env) == expected


@pytest.mark.parametrize(
    "source",
    [
        "().__class__",
        "planes.real",
        "__import__('os')",
        "open('x')",
        "lambda: 1",
        "[x for x in y]",
        "{'a': 1}",
        "a[1:2]",
        "f'{a}'",
        "x := 1",
        "print(1)",
        "min(a, key=b)",
    ],
)
def test_forbidden_constructs_are_rejected(source: str) -> None:
    with pytest.raises(ExprError):
        parse_expr(source).evaluate({"a": [1, 2], "planes": 1, "y": [1]})


def test_errors_are_readable() -> None:
    with pytest.raises(ExprError, match="division by zero"):
        ev("1 // x", x=0)
    with pytest.raises(ExprError, match="did you mean 'planes'"):
        ev("plane * 4", planes=1)
    with pytest.raises(ExprError, match="out of range"):
        ev("d[7]", d=[1, 2])
    with pytest.raises(ExprError, match="too large"):
        ev("10 ** 10000")
    with pytest.raises(ExprError, match="not allowed"):
        ev("[0] * 100000000")
    with pytest.raises(ExprError, match="invalid expression"):
        parse_expr("1 +")


def test_names_and_python_translation() -> None:
    expr = parse_expr("planes * 4 if i == 0 else max(planes, base)")
    assert expr.names == {"planes", "i", "base"}
    assert expr.to_python(lambda n: f"self.{n}") == (
        "self.planes * 4 if self.i == 0 else max(self.planes, self.base)"
    )


def test_name_templates() -> None:
    assert render_template("denselayer{i + 1}", {"i": 2}) == "denselayer3"
    assert render_template("conv{s + 2}_block{i+1}", {"s": 0, "i": 0}) == "conv2_block1"
    parts = template_parts("a{i}b")
    assert parts[0] == "a" and parts[2] == "b" and parts[1].source == "i"


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.sampled_from("+-*"))
def test_integer_arithmetic_matches_python(a: int, b: int, op: str) -> None:
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert ev(f"a {op} b", a=a, b=b) == expected


@given(st.integers(-1000, 1000), st.integers(1, 50))
def test_floor_division_and_modulo_match_python(a: int, b: int) -> None:
    assert ev("a // b", a=a, b=b) == a // b
    assert ev("a % b", a=a, b=b) == a % b


# (depth, w_0, w_a, w_m, group_width): two library models, and two whose widths torchvision's
# float32 arithmetic rounds otherwise than float64 would (a stage one block longer; 944 vs 936)
REGNET_CASES = [
    (16, 48, 27.89, 2.09, 8),
    (23, 80, 49.56, 2.88, 120),
    (18, 120, 3.0, 1.44, 8),
    (19, 400, 88.357, 2.35, 16),
]


@pytest.mark.parametrize("case", REGNET_CASES)
def test_regnet_stages_is_torchvisions_block_params(case: tuple[int, ...]) -> None:
    regnet = pytest.importorskip("torchvision.models.regnet")
    for bottleneck in (1.0, 0.5):
        p = regnet.BlockParams.from_init_params(*case, bottleneck_multiplier=bottleneck)
        expected = [list(s) for s in zip(p.widths, p.depths, p.group_widths, strict=True)]
        env = dict(zip(("d", "w0", "wa", "wm", "g", "b"), (*case, bottleneck), strict=True))
        assert ev("regnet_stages(d, w0, wa, wm, g, b)", **env) == expected
    assert ev(f"regnet_stages{case}") == ev(f"regnet_stages({', '.join(map(str, case))}, 1.0)")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("regnet_stages(16, 48, 27.89, 2.09)", "takes depth, w_0, w_a, w_m, group_width"),
        ("regnet_stages(16.0, 48, 27.89, 2.09, 8)", "depth must be a positive integer"),
        ("regnet_stages(0, 48, 27.89, 2.09, 8)", "depth must be a positive integer"),
        ("regnet_stages(16, 48, 27.89, 2.09, g)", "group_width must be a positive integer"),
        ("regnet_stages(16, 44, 27.89, 2.09, 8)", "w_0 must be a multiple of 8"),
        ("regnet_stages(16, 48, -1, 2.09, 8)", "needs w_a >= 0, 1 < w_m"),
        ("regnet_stages(16, 48, 27.89, 1, 8)", "needs w_a >= 0, 1 < w_m"),
        ("regnet_stages(16, 48, 27.89, 2.09, 8, 0)", "bottleneck > 0"),
        ("regnet_stages(16, 48, 27.89, 2.09, 8, 0.01)", "w_0 * bottleneck must be at least 1"),
        ("regnet_stages(16, 48, [1], 2.09, 8)", "takes a number"),
        ("regnet_stages(10 ** 6, 48, 27.89, 2.09, 8)", "depth must be at most 2,500"),
        ("regnet_stages(16, 48, 10 ** 12, 2.09, 8)", "must stay below 2**31"),
        ("regnet_stages(2500, 8, 1e5, 1.0000001, 1)", "a stage width reaches 2**31"),
        ("regnet_stages(16, 48, 27.89, 2.09, 8, 1e308)", "infinity"),
    ],
)
def test_regnet_stages_checks_its_arguments(source: str, message: str) -> None:
    with pytest.raises(ExprError, match=re.escape(message)):
        ev(source, g=True)
