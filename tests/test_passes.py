"""Validate → resolve → expand → infer → check merges, each on small specs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler import SpecError

HEADER = """\
version: 1
name: tiny
input_shape: [3, 32, 32]
"""

RESIDUAL = (
    HEADER
    + """\
params: {width: 16, n: 2}
blocks:
  basic:
    params: {planes: null, stride: 1}
    body:
      - {op: conv, name: conv1, out: planes, kernel: 3, stride: stride, padding: 1, bias: false}
      - {op: bn, name: bn1}
      - {op: relu}
      - {op: conv, name: conv2, out: planes, kernel: 3, padding: 1, bias: false}
      - {op: bn, name: bn2}
      - group: downsample
        inputs: input
        when: stride != 1 or in_channels != planes
        body:
          - {op: conv, out: planes, kernel: 1, stride: stride, bias: false}
          - {op: bn}
      - {op: add, inputs: [bn2, downsample]}
      - {op: relu}
body:
  - {op: conv, name: stem, out: width, kernel: 3, padding: 1}
  - {block: basic, name: layer1, repeat: n, args: {planes: width}}
  - {block: basic, name: layer2, repeat: n, args: {planes: width * 2, stride: "2 if i == 0 else 1"}}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, name: fc, out: 10}
"""
)

Writer = Callable[..., Path]


def errors_of(path: Path, **overrides: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        rescompiler.load_spec(path, overrides or None)
    return info.value


def test_residual_spec_expands_with_shapes_and_names(write_spec: Writer) -> None:
    spec = rescompiler.load_spec(write_spec(RESIDUAL))
    g = spec.graph
    ids = [n.id for n in g.nodes]
    assert "layer1.0.downsample.0" not in ids  # identity shortcut: same shape
    assert "layer2.0.downsample.0" in ids and "layer2.1.downsample.0" not in ids
    assert g.node("layer2.0.conv1").shape == (32, 16, 16)
    assert g.node("layer2.0.add").inputs == ("layer2.0.bn2", "layer2.0.downsample.1")
    assert g.node("layer1.1.add").inputs == ("layer1.1.bn2", "layer1.0.relu_1")
    assert g.shape_of(g.output) == (10,)
    assert g.containers["layer2"].kind == "stage"
    assert g.containers["layer2.0"].template == "basic"
    # parameters by hand: stem conv with bias + two stages + fc
    stem = 16 * 3 * 9 + 16
    basic16 = 2 * (16 * 16 * 9 + 2 * 16)
    basic32_first = 32 * 16 * 9 + 32 * 32 * 9 + 4 * 32 + (32 * 16 + 2 * 32)
    basic32 = 2 * (32 * 32 * 9 + 2 * 32)
    assert g.params == stem + 2 * basic16 + basic32_first + basic32 + 32 * 10 + 10
    assert g.stats == 2 * (16 * 2 * 2) + 2 * (32 * 2 * 2) + 32 * 2
    macs_stem = 16 * 32 * 32 * 3 * 9
    assert g.node("stem").macs == macs_stem


def test_overrides_change_params_and_input_shape(write_spec: Writer) -> None:
    path = write_spec(RESIDUAL)
    spec = rescompiler.load_spec(path, {"n": 3, "input_shape": [3, 64, 64]})
    assert spec.params["n"] == 3
    assert spec.graph.node("layer2.2.conv1").shape == (32, 32, 32)
    err = errors_of(path, nn=3)
    assert "unknown param 'nn' (did you mean 'n'?)" in str(err)
    err = errors_of(path, n=[1])
    assert "must be a number" in str(err)


def test_extends_overrides_only_what_it_names(write_spec: Writer) -> None:
    write_spec(RESIDUAL, "base.yaml")
    child = write_spec(
        "version: 1\nextends: base.yaml\nname: deeper\nparams: {n: 4}\n", "child.yaml"
    )
    spec = rescompiler.load_spec(child)
    assert spec.name == "deeper" and spec.params == {"width": 16, "n": 4}
    assert spec.graph.node("layer1.3.conv1").shape == (16, 32, 32)


def test_extends_errors_point_at_the_right_file(write_spec: Writer) -> None:
    base = write_spec(RESIDUAL.replace("kernel: 1, stride", "kernel: 1, strides"), "base.yaml")
    child = write_spec("version: 1\nextends: base.yaml\nname: c\n", "child.yaml")
    err = errors_of(child)
    assert err.file.endswith("base.yaml") and err.line == 18
    assert "unknown key 'strides' (did you mean 'stride'?)" in err.message
    assert base.exists()
    write_spec("version: 1\nextends: b.yaml\nname: a\n", "a.yaml")
    loop = write_spec("version: 1\nextends: a.yaml\nname: b\n", "b.yaml")
    assert "extends cycle" in str(errors_of(loop))
    missing = write_spec("version: 1\nextends: nope.yaml\nname: m\n", "m.yaml")
    err = errors_of(missing)
    assert "not found" in err.message and err.line == 2


def test_mismatched_add_names_both_inputs_and_shapes(write_spec: Writer) -> None:
    bad = RESIDUAL.replace("when: stride != 1 or in_channels != planes", "when: false")
    err = errors_of(write_spec(bad))
    assert len(err.diagnostics) == 1  # one mistake, reported once, not once per instance
    assert err.line == 20
    assert "layer2.0.bn2 is 32×16×16" in err.message
    assert "16×32×32" in err.message
    assert err.path == "blocks.basic.body[6].inputs"


def test_all_mistakes_are_reported(write_spec: Writer) -> None:
    bad = RESIDUAL.replace(
        "out: planes, kernel: 3, padding: 1", "out: planes, kernel: 3, padding: x"
    )
    bad = bad.replace("out: 10", "out: num_classes").replace("planes: width}", "plane: width}")
    err = errors_of(write_spec(bad))
    messages = [d.message for d in err.diagnostics]
    assert len(messages) == 3, messages
    assert any("unknown name 'x'" in m for m in messages)
    assert any("has no param 'plane'" in m for m in messages)
    assert any("unknown name 'num_classes'" in m for m in messages)
    assert [d.location.line for d in err.diagnostics] == sorted(
        d.location.line for d in err.diagnostics
    )


def test_validation_errors_are_positioned(write_spec: Writer) -> None:
    bad = (
        HEADER
        + "body:\n"
        + "  - {op: convv, out: 3, kernel: 3}\n"
        + "  - {op: conv, out: 3, kernel: 3, strid: 2}\n"
        + "  - {op: bn, eps: [1]}\n"
        + "  - {out: 3}\n"
    )
    err = errors_of(write_spec(bad))
    text = str(err).splitlines()
    assert len(text) == 4, text
    assert text[0].endswith("body[0].op: unknown op 'convv' (did you mean 'conv'?)")
    assert ":6:35: body[1].strid: unknown key 'strid' (did you mean 'stride'?)" in text[1]
    assert "body[2].eps" in text[2]
    assert "needs 'op'" in text[3]


def test_wrong_version_and_missing_fields(write_spec: Writer) -> None:
    err = errors_of(write_spec("version: 2\nname: x\ninput_shape: [3, 8, 8]\nbody: [{op: relu}]\n"))
    assert "unsupported spec version 2" in err.message and err.line == 1
    err = errors_of(write_spec("version: 1\nname: x\nbody: [{op: relu}]\n"))
    assert "missing required key 'input_shape'" in err.message


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        ("{op: conv, out: 0, kernel: 3}", "out must be positive"),
        ("{op: conv, out: 8, kernel: 64}", "larger than its padded input"),
        ("{op: conv, out: 8, kernel: 3, groups: 5}", "groups=5 must divide"),
        (
            "{op: conv, out: 8, kernel: 3, stride: 2, dilation: 2, padding: same}",
            "needs dilation 1",
        ),
        ("{op: conv, out: 3 / 2, kernel: 3}", "must be an integer"),
        ("{op: conv, out: 8 // 0, kernel: 3}", "division by zero"),
        ("{op: linear, out: 8}", "add a flatten"),
        ("{op: add, inputs: [input]}", "at least two inputs"),
        ("{op: relu, inputs: [nothing]}", "unknown node 'nothing'"),
        ("{op: relu, inputs: later}\n  - {op: relu, name: later}", "defined later"),
        ("{block: missing}", "unknown block 'missing'"),
        ("{op: crop, crop: 20}", "removes all"),
        ("{op: maxpool, kernel: 2, padding: 2}", "at most half the kernel"),
    ],
)
def test_node_errors(write_spec: Writer, node: str, fragment: str) -> None:
    err = errors_of(write_spec(HEADER + f"body:\n  - {node}\n"))
    assert fragment in str(err)
    assert err.line == 5


def test_same_padding_and_pool_shapes(write_spec: Writer) -> None:
    text = HEADER + (
        "body:\n"
        "  - {op: conv, name: a, out: 4, kernel: 4, padding: same}\n"
        "  - {op: maxpool, name: p, kernel: 3, stride: 2, padding: 1}\n"
        "  - {op: avgpool, name: q, kernel: 2}\n"
        "  - {op: zeropad, name: z, padding: [1, 2, 3, 4]}\n"
        "  - {op: conv_transpose, name: t, out: 2, kernel: 2, stride: 2}\n"
        "  - {op: upsample, name: u, scale: 2, mode: bilinear, align_corners: true}\n"
        "  - {op: subsample, name: s, stride: 2}\n"
        "  - {op: channel_pad, name: c, before: 1, after: 3}\n"
    )
    g = rescompiler.load_spec(write_spec(text)).graph
    assert g.node("a").attrs["padding"] == (1, 2, 1, 2) and g.node("a").shape == (4, 32, 32)
    assert g.node("p").shape == (4, 16, 16)
    assert g.node("q").shape == (4, 8, 8)
    assert g.node("z").shape == (4, 11, 15)
    assert g.node("t").shape == (2, 22, 30) and g.node("t").params == 4 * 2 * 4 + 2
    assert g.node("u").shape == (2, 44, 60)
    assert g.node("s").shape == (2, 22, 30)
    assert g.node("c").shape == (6, 22, 30)


def test_concat_crop_and_pad_to_match(write_spec: Writer) -> None:
    text = HEADER + (
        "body:\n"
        "  - {op: conv, name: a, out: 4, kernel: 3}\n"
        "  - {op: maxpool, name: p, kernel: 2}\n"
        "  - {op: crop_to, name: c, inputs: [a, p]}\n"
        "  - {op: concat, name: cat, inputs: [c, p]}\n"
        "  - {op: pad_to, name: back, inputs: [cat, a]}\n"
    )
    g = rescompiler.load_spec(write_spec(text)).graph
    assert g.node("c").shape == (4, 15, 15)
    assert g.node("cat").shape == (8, 15, 15)
    assert g.node("back").shape == (8, 30, 30)
    bad = text.replace("inputs: [c, p]", "inputs: [a, p]")
    err = errors_of(write_spec(bad))
    assert "concat inputs differ in spatial size: a is 4×30×30, p is 4×15×15" in err.message


def test_when_otherwise_and_unreachable_warning(write_spec: Writer) -> None:
    text = HEADER + (
        "params: {flag: false}\n"
        "body:\n"
        "  - {op: conv, name: a, out: 4, kernel: 1}\n"
        "  - {op: relu, name: dead, inputs: input}\n"
        "  - {op: conv, name: b, inputs: input, out: 4, kernel: 1, when: flag, otherwise: a}\n"
        "  - {op: add, inputs: [a, b]}\n"
    )
    spec = rescompiler.load_spec(write_spec(text))
    assert spec.graph.node("add").inputs == ("a", "a")
    assert [w.message for w in spec.warnings] == ["dead does not reach the output"]
    spec = rescompiler.load_spec(write_spec(text), {"flag": True})
    assert spec.graph.node("add").inputs == ("a", "b")


def test_stage_child_names_and_keras_names(write_spec: Writer) -> None:
    text = HEADER + (
        "blocks:\n"
        "  layer:\n"
        "    body:\n"
        "      - {op: conv, name: conv, out: 4, kernel: 1, names: {keras: 1_conv}}\n"
        "      - {op: concat, inputs: [input, conv], names: {keras: concat}}\n"
        "body:\n"
        "  - {block: layer, name: dense1, repeat: 3, child_name: 'denselayer{i + 1}',"
        " names: {keras: 'conv2_block{i + 1}'}}\n"
    )
    g = rescompiler.load_spec(write_spec(text)).graph
    assert [n.id for n in g.nodes if n.op == "conv"] == [
        "dense1.denselayer1.conv",
        "dense1.denselayer2.conv",
        "dense1.denselayer3.conv",
    ]
    assert g.node("dense1.denselayer2.conv").names["keras"] == "conv2_block2_1_conv"
    assert g.shape_of(g.output) == (15, 32, 32)
    dup = text.replace("names: {keras: concat}", "names: {keras: 1_conv}")
    assert "keras name 'conv2_block1_1_conv'" in str(errors_of(write_spec(dup)))


def test_caps_stop_huge_specs_before_allocation(write_spec: Writer) -> None:
    text = HEADER + (
        "params: {n: 100000000, w: 1000000000000}\n"
        "blocks:\n  b:\n    body: [{op: relu}]\n"
        "body:\n  - {block: b, repeat: n}\n"
    )
    err = errors_of(write_spec(text))
    assert "cap" in err.message and "RESCOMPILER_MAX_NODES" in err.message
    wide = HEADER + "params: {w: 1000000000000}\nbody:\n  - {op: conv, out: w, kernel: 3}\n"
    err = errors_of(write_spec(wide))
    assert "cap" in err.message


def test_recursive_blocks_are_rejected(write_spec: Writer) -> None:
    text = HEADER + (
        "blocks:\n  a:\n    body: [{block: b}]\n  b:\n    body: [{block: a}]\n"
        "body:\n  - {block: a}\n"
    )
    err = errors_of(write_spec(text))
    assert "uses itself (a -> b -> a)" in err.message


def test_empty_inputs_list_is_an_error(write_spec: Writer) -> None:
    # shrunk from a fuzz failure: `inputs: []` crashed the expander with IndexError
    err = errors_of(write_spec(HEADER + "body:\n  - {op: relu}\n  - {op: add, inputs: []}\n"))
    assert err.line == 6 and "inputs" in err.path


def test_liveness_conditions_match_what_the_expander_keeps() -> None:
    """codegen.liveness gives, per node of a template, the condition under which it reaches
    the output; simplified so generated code stays readable."""
    from rescompiler.codegen import all_of, any_of, liveness

    rows = [
        ("a", ["input"], "input", None),
        ("b", ["a"], "a", None),
        ("gate", ["b"], "a", "c == 1"),  # off: passes a on, so b is used only when c == 1
        ("add", ["gate", "input"], "gate", "s > 1 or t"),
        ("dead", ["a"], "a", None),
        ("out", ["add"], "add", None),
    ]
    assert liveness(rows, "out") == [True, "c == 1", True, True, False, True]
    assert all_of("x and y", "y") == "x and y"
    assert all_of("u or v", "w") == "(u or v) and w"
    assert all_of('f("a and b")', True) == 'f("a and b")'
    assert any_of(["x", "not (x)"]) is True
    assert any_of([False, "x", "x"]) == "x"


def test_dead_code_warnings_come_once_per_line_with_a_hint(write_spec: Writer) -> None:
    """A template node unused in every instance is one warning naming the instances; a merge
    whose ``when`` is false keeps its first input: the warning says which one went unused."""
    path = write_spec(
        HEADER
        + """\
blocks:
  inv:
    params: {out: null, stride: 1}
    body:
      - {op: conv, name: project, out: out, kernel: 1}
      - {op: add, inputs: [input, project], when: stride == 1 and in_channels == out}
body:
  - {block: inv, name: a, args: {out: 8}}
  - {block: inv, name: b, args: {out: 8, stride: 2}, repeat: 2}
"""
    )
    spec = rescompiler.load_spec(path)
    assert [(w.location.line, w.message) for w in spec.warnings] == [
        (
            9,
            "where 'when' is false this add passes its first input 'input' on and 'project' "
            "goes unused: list the input to keep first, or name it with 'otherwise'",
        ),
        (8, "a.project does not reach the output (nor do b.0.project, b.1.project)"),
    ]


def test_block_param_defaults_are_expressions_like_args(write_spec: Writer) -> None:
    """Regression: defaults were used raw ("'relu'" kept its quotes, ``base * 2`` stayed a
    string) while args are evaluated; both backends also got them wrong (a required param
    after a defaulted one was a SyntaxError in torch)."""
    path = write_spec(
        HEADER
        + """\
params: {base: 4}
blocks:
  blk:
    params: {act: "'relu'", width: base * 2, k: 2 - 1, out: null}
    body:
      - {op: conv, out: width + out, kernel: k}
      - {op: relu, when: act == 'relu'}
body:
  - {block: blk, name: u1, args: {out: 1}}
  - {block: blk, name: u2, args: {act: "'none'", out: 2}}
"""
    )
    spec = rescompiler.load_spec(path, {"base": 5})
    nodes = {node.id: node for node in spec.graph.nodes}
    assert list(nodes) == ["u1.conv", "u1.relu", "u2.conv"]
    assert (nodes["u1.conv"].shape[0], nodes["u2.conv"].shape[0]) == (11, 12)
    for backend in ("torch", "keras"):
        source = rescompiler.emit(spec, backend)
        compile(source, f"<{backend}>", "exec")  # was a SyntaxError in torch
        assert 'act: str = "relu"' in source and "width = base * 2" in source
