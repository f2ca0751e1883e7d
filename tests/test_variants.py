"""Variants edited by name (``edit``), what a variant inherits, and params nothing reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rescompiler
from rescompiler import SpecError
from rescompiler.cli import run

Writer = Callable[..., Path]

RESNET50D = """\
version: 1
extends: resnet50
name: resnet50d
reference: timm.resnet50d
edit:
  body:
    conv1: {replace: {group: conv1, body: [
      {op: conv, out: 32, kernel: 3, stride: 2, padding: 1}, {op: bn}, {op: relu},
      {op: conv, out: 32, kernel: 3, padding: 1}, {op: bn}, {op: relu},
      {op: conv, out: 64, kernel: 3, padding: 1}]}}
  blocks.bottleneck.body:
    downsample.0:
      insert_before: {op: avgpool, kernel: 2, stride: 2, ceil_mode: true, count_include_pad: false, when: stride != 1}
      set: {stride: 1}
"""  # noqa: E501 (the variant as the README shows it)
TIMM_RESNET50D_PARAMS = 25_576_264

BASE = """\
version: 1
name: base
description: a small residual net
reference: nowhere.base
input_shape: [3, 16, 16]
params: {width: 8, classes: 10}
blocks:
  basic:
    doc: two 3x3 convs and a projection
    params: {planes: null, stride: 1}
    body:
      - {op: conv, name: conv1, out: planes, kernel: 3, stride: stride, padding: 1}
      - {op: bn, name: bn1}
      - {op: relu}
      - {op: conv, name: conv2, out: planes, kernel: 3, padding: 1}
      - {op: bn, name: bn2}
      - group: shortcut
        inputs: input
        when: stride != 1 or in_channels != planes
        body:
          - {op: conv, out: planes, kernel: 1, stride: stride}
          - {op: bn, name: norm}
      - {op: add, inputs: [bn2, shortcut]}
      - {op: relu}
  spare:
    doc: kept as it is
    params: {planes: null}
    body:
      - {op: conv, out: planes, kernel: 1}
body:
  - {op: conv, name: stem, out: width, kernel: 3, padding: 1}
  - {op: relu}
  - {block: basic, name: layer1, repeat: 2, args: {planes: width}}
  - {block: basic, name: layer2, repeat: 2, args: {planes: width * 2, stride: "2 if i == 0 else 1"}}
  - {op: global_avgpool, name: pool}
  - {op: flatten}
  - {op: linear, name: fc, out: classes}
"""


def variant(write_spec: Writer, text: str, base: str = BASE) -> Path:
    """Write ``base.yaml`` and a child ``child.yaml`` next to it; return the child."""
    write_spec(base, "base.yaml")
    return write_spec("version: 1\nextends: base.yaml\nname: child\n" + text, "child.yaml")


def errors_of(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        rescompiler.load_spec(path)
    return info.value


def body_of(spec: rescompiler.Spec, block: str | None = None) -> list[dict[str, Any]]:
    nodes = spec.model.body if block is None else spec.model.blocks[block].body
    return [n.model_dump(exclude_defaults=True, by_alias=True) for n in nodes]


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of ``path`` that contains ``needle``."""
    lines = path.read_text().splitlines()
    return next(k for k, line in enumerate(lines, 1) if needle in line)


# -- ResNet-D by name-editing resnet50 ---------------------------------------------------------
def test_resnet50d_is_a_short_edit_of_resnet50_with_timms_parameter_count(
    write_spec: Writer,
) -> None:
    path = write_spec(RESNET50D, "resnet50d.yaml")
    assert len([line for line in RESNET50D.splitlines() if line.strip()]) <= 15
    spec = rescompiler.load_spec(path)
    info = rescompiler.summarize(spec)
    assert info.trainable_params == TIMM_RESNET50D_PARAMS
    ops = {row.name: (row.op, row.shape) for row in info.rows}
    assert [ops[f"conv1.{k}"][0] for k in range(7)] == [
        "conv", "bn", "relu", "conv", "bn", "relu", "conv"
    ]  # fmt: skip
    assert ops["conv1.6"][1] == (64, 112, 112) and ops["bn1"][1] == (64, 112, 112)
    # layer1.0 does not stride: no pool, the projection is downsample.1 as in timm
    assert "layer1.0.downsample.0" not in ops
    assert ops["layer1.0.downsample.1"] == ("conv", (256, 56, 56))
    assert ops["layer2.0.downsample.0"] == ("avgpool", (256, 28, 28))
    assert ops["layer2.0.downsample.1"] == ("conv", (512, 28, 28))  # stride 1 after the pool
    pool = spec.graph.node("layer2.0.downsample.0")
    assert pool.attrs["ceil_mode"] is True and pool.attrs["count_include_pad"] is False
    assert spec.model.reference == "timm.resnet50d"
    assert spec.model.description == ""  # edited: not inherited from resnet50
    assert spec.model.blocks["bottleneck"].doc == ""
    assert run([str(path), "--check"]) == 0


def test_resnet50d_has_timms_structure(write_spec: Writer) -> None:
    """Every module of timm's resnet50d with parameters is a node of ours with as many."""
    timm = pytest.importorskip("timm")
    reference = timm.create_model("resnet50d", pretrained=False)
    assert sum(p.numel() for p in reference.parameters()) == TIMM_RESNET50D_PARAMS
    theirs = {
        name: sum(p.numel() for p in module.parameters(recurse=False))
        for name, module in reference.named_modules()
    }
    theirs = {name: count for name, count in theirs.items() if count}
    info = rescompiler.summarize(rescompiler.load_spec(write_spec(RESNET50D, "resnet50d.yaml")))
    ours = {row.name: row.params for row in info.rows if row.params}
    assert ours == theirs
    pools = {n: type(m).__name__ for n, m in reference.named_modules() if "downsample.0" in n}
    ours_pools = {row.name: row.op for row in info.rows if row.name.endswith("downsample.0")}
    assert {n for n, kind in pools.items() if kind == "AvgPool2d"} == set(ours_pools)


def test_resnet50d_built_with_torch_equals_timm(write_spec: Writer) -> None:
    """Loaded with timm's state_dict (strict), the built and the generated model compute
    timm's function, also at odd sizes where ``ceil_mode`` matters. (Where the pool is off, the
    group's next children keep their names: downsample.1 and .2, as timm's.)"""
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(write_spec(RESNET50D, "resnet50d.yaml"))
    namespace: dict[str, object] = {}
    exec(compile(rescompiler.emit(spec, "torch"), "resnet50d_torch.py", "exec"), namespace)
    built = rescompiler.build(spec, "torch").eval()
    generated = namespace["build"]().eval()  # type: ignore[operator]
    reference = timm.create_model("resnet50d", pretrained=False).eval()
    for ours in (built, generated):
        ours.load_state_dict(reference.state_dict(), strict=True)
        for shape in [(2, 3, 224, 224), (1, 3, 97, 101)]:
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                expected, got = reference(x), ours(x)
            scale = expected.abs().max().item()
            assert (expected - got).abs().max().item() <= 1e-4 * scale + 1e-5


# -- each kind of edit ---------------------------------------------------------------------------
def test_replace_a_node_with_several_keeps_the_data_flow(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  body:\n"
        "    stem:\n"
        "      replace:\n"
        "        - {op: conv, name: stem_a, out: 4, kernel: 3, padding: 1}\n"
        "        - {op: conv, name: stem_b, out: width, kernel: 3, padding: 1}\n"
        "  blocks.basic.body:\n"
        "    bn2: {replace: {op: bn, name: bn2b, eps: 0.001}}\n",
    )
    spec = rescompiler.load_spec(path)
    names = [n.get("name") for n in body_of(spec)[:3]]
    assert names == ["stem_a", "stem_b", None]
    g = spec.graph
    assert g.node("stem_b").inputs == ("stem_a",)
    assert g.node("relu").inputs == ("stem_b",)
    assert g.node("layer1.0.add").inputs == ("layer1.0.bn2b", "relu")  # no projection
    assert g.node("layer2.0.add").inputs == ("layer2.0.bn2b", "layer2.0.shortcut.norm")
    assert g.node("layer1.0.bn2b").attrs["eps"] == 0.001


def test_insert_before_a_branch_runs_on_its_input(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n  blocks.basic.body:\n    shortcut:\n      insert_before: {op: relu, name: pre}\n",
    )
    spec = rescompiler.load_spec(path)
    nodes = body_of(spec, "basic")
    assert nodes[5] == {"op": "relu", "name": "pre", "inputs": "input"}
    assert "inputs" not in nodes[6] and nodes[6]["group"] == "shortcut"
    g = spec.graph
    assert g.node("layer2.0.pre").inputs == ("layer1.1.relu_1",)
    assert g.node("layer2.0.shortcut.0").inputs == ("layer2.0.pre",)


def test_insert_before_a_group_child_renumbers_the_group(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  blocks.basic.body:\n"
        "    shortcut.0:\n"
        "      insert_before: {op: avgpool, kernel: 2, stride: 2, when: stride != 1}\n"
        "      set: {stride: 1}\n",
    )
    g = rescompiler.load_spec(path).graph
    assert g.node("layer2.0.shortcut.0").op == "avgpool"
    assert g.node("layer2.0.shortcut.1").op == "conv"
    assert g.node("layer2.0.shortcut.1").attrs["stride"] in (1, (1, 1))
    assert g.node("layer2.0.shortcut.norm").op == "bn"  # a named child keeps its name
    ids = [n.id for n in g.nodes]
    assert "layer1.0.shortcut.0" not in ids  # when is false: no pool where nothing strides
    assert "layer1.0.shortcut.1" not in ids  # layer1 keeps its width: no projection at all


def test_insert_after_redirects_what_read_the_node(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  blocks.basic.body:\n"
        "    bn2:\n"
        "      insert_after: [{op: relu}, {op: conv, name: extra, out: planes, kernel: 1}]\n",
    )
    spec = rescompiler.load_spec(path)
    g = spec.graph
    assert g.node("layer1.0.relu_1").inputs == ("layer1.0.bn2",)
    assert g.node("layer1.0.extra").inputs == ("layer1.0.relu_1",)
    assert g.node("layer1.0.add").inputs == ("layer1.0.extra", "relu")
    assert g.node("layer2.0.add").inputs == ("layer2.0.extra", "layer2.0.shortcut.norm")
    # the block's last relu was relu_1; it is relu_2 now, and still the block's output
    assert g.node("layer1.1.conv1").inputs == ("layer1.0.relu_2",)


def test_delete_a_branch_passes_its_input_on(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n  body:\n    relu: {delete: true}\n    layer2: {delete: true}\n"
        "  blocks.basic.body:\n    shortcut: {delete: true}\n",
    )
    spec = rescompiler.load_spec(path)
    assert [n.get("name") for n in body_of(spec)][:3] == ["stem", "layer1", "pool"]
    assert body_of(spec, "basic")[5] == {"op": "add", "inputs": ["bn2", "input"]}
    g = spec.graph
    assert g.node("layer1.0.conv1").inputs == ("stem",)
    assert g.node("layer1.0.add").inputs == ("layer1.0.bn2", "stem")


def test_delete_a_merge_that_a_node_reads_is_an_error(write_spec: Writer) -> None:
    base = BASE.replace(
        "      - {op: add, inputs: [bn2, shortcut]}\n      - {op: relu}\n",
        "      - {op: add, name: sum, inputs: [bn2, shortcut]}\n      - {op: relu, inputs: sum}\n",
    )
    path = variant(write_spec, "edit:\n  blocks.basic.body:\n    sum: {delete: true}\n", base)
    err = errors_of(path)
    assert len(err.diagnostics) == 1
    assert err.file == str(path) and err.line == 6
    assert "'relu_1' reads 'sum', which this edit deletes" in err.message
    assert "edit 'relu_1' too" in err.message


def test_set_changes_fields_merges_mappings_and_null_removes(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  body:\n"
        "    layer2: {set: {args: {planes: 24}, repeat: 3}}\n"
        "    stem: {set: {padding: null, kernel: 1}}\n"
        "  blocks.basic.body:\n"
        "    shortcut: {set: {when: null}}\n"
        "    shortcut.norm: {set: {eps: 0.01}}\n",
    )
    spec = rescompiler.load_spec(path)
    nodes = body_of(spec)
    assert nodes[0] == {"op": "conv", "name": "stem", "out": "width", "kernel": 1}
    assert nodes[3]["args"] == {"planes": 24, "stride": "2 if i == 0 else 1"}
    assert nodes[3]["repeat"] == 3
    g = spec.graph
    assert g.node("layer2.2.conv1").shape == (24, 8, 8)
    assert g.node("layer1.1.shortcut.norm").attrs["eps"] == 0.01  # now in every block


def test_a_name_read_by_position_follows_its_node(write_spec: Writer) -> None:
    """``relu_1`` names the second unnamed relu; after a relu is inserted before the first,
    the reader still reads the same node (now ``relu_2``)."""
    base = (
        "version: 1\nname: base\ninput_shape: [3, 8, 8]\n"
        "body:\n"
        "  - {op: conv, name: c, out: 4, kernel: 1}\n"
        "  - {op: relu}\n"
        "  - {op: conv, name: d, out: 4, kernel: 1}\n"
        "  - {op: relu}\n"
        "  - {op: add, inputs: [relu_1, c]}\n"
    )
    path = variant(write_spec, "edit:\n  body:\n    d: {insert_before: {op: relu}}\n", base)
    g = rescompiler.load_spec(path).graph
    assert g.node("relu_1").inputs == ("relu",) and g.node("d").inputs == ("relu_1",)
    assert g.node("add").inputs == ("relu_2", "c")
    assert g.node("relu_2").inputs == ("d",)


def test_edits_are_addressed_before_any_edit_applies(write_spec: Writer) -> None:
    """``relu`` means the base's relu even though an insert before it adds another."""
    path = variant(
        write_spec,
        "edit:\n"
        "  body:\n"
        "    stem: {insert_after: {op: relu, name: first}}\n"
        "    relu: {set: {when: 'width > 100'}}\n",
    )
    nodes = body_of(rescompiler.load_spec(path))
    assert nodes[1] == {"op": "relu", "name": "first"}
    assert nodes[2] == {"op": "relu", "when": "width > 100"}


# -- mistakes ------------------------------------------------------------------------------------
def test_unknown_names_are_errors_at_their_line_with_the_closest(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  body:\n"
        "    stme: {delete: true}\n"
        "    pool: {insert_befor: {op: relu}}\n"
        "  blocks.basik.body:\n"
        "    conv1: {delete: true}\n"
        "  blocks.basic.body:\n"
        "    shortcut.nrom: {delete: true}\n"
        "    shortcut.2: {delete: true}\n",
    )
    err = errors_of(path)
    found = {(d.location.line, d.message) for d in err.diagnostics}
    assert found == {
        (6, "no node 'stme' in body (did you mean 'stem'?)"),
        (
            7,
            "unknown edit 'insert_befor' (did you mean 'insert_before'?); "
            "an edit is replace, insert_before, insert_after, delete, set",
        ),
        (
            8,
            "unknown body 'blocks.basik.body' to edit (did you mean 'blocks.basic.body'?); "
            "edit 'body' or 'blocks.NAME.body'",
        ),
        (11, "no node 'shortcut.nrom' in blocks.basic.body (did you mean 'shortcut.norm'?)"),
        (12, "no node 'shortcut.2' in blocks.basic.body (did you mean 'shortcut.1'?)"),
    }
    assert all(d.location.file == str(path) for d in err.diagnostics)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("stem: {replace: {op: relu}, set: {kernel: 1}}", "'replace' cannot be combined with"),
        ("stem: {delete: yes please}", "delete must be true, got 'yes please'"),
        ("stem: {set: {}}", "set needs a mapping of fields, got {}"),
        ("stem: {insert_after: []}", "expected a node or a non-empty list of nodes, got []"),
        ("stem: delete", "an edit is a mapping of replace, insert_before"),
        ("fc: {delete: true}\n    fc: {delete: true}", "duplicate key 'fc'"),
    ],
)
def test_malformed_edits_are_errors_at_their_line(
    write_spec: Writer, edit: str, message: str
) -> None:
    path = variant(write_spec, f"edit:\n  body:\n    {edit}\n")
    err = errors_of(path)
    assert message in err.message, str(err)
    assert err.file == str(path) and err.line >= 6


def test_a_node_is_edited_once_and_not_inside_a_replaced_one(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  blocks.basic.body:\n"
        "    shortcut.1: {set: {eps: 0.1}}\n"
        "    shortcut.norm: {set: {eps: 0.2}}\n"
        "    shortcut: {replace: {op: identity, inputs: input}}\n",
    )
    messages = [(d.location.line, d.message) for d in errors_of(path).diagnostics]
    assert (7, "'shortcut.norm' is the node 'shortcut.1' edited above: edit it once") in messages
    assert (6, "'shortcut.1' is inside 'shortcut', which this edit replaces") in messages


def test_edit_needs_extends(write_spec: Writer) -> None:
    path = write_spec(BASE + "edit:\n  body:\n    stem: {delete: true}\n")
    err = errors_of(path)
    assert err.line == BASE.count("\n") + 1
    assert "edit needs extends" in err.message


# -- positions -----------------------------------------------------------------------------------
def test_edited_nodes_point_into_the_child_and_inherited_ones_into_the_base(
    write_spec: Writer,
) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  body:\n"
        "    stem:\n"
        "      replace:\n"
        "        - {op: conv, name: stem_a, out: 4, kernel: 3, padding: 1}\n"
        "        - {op: conv, name: stem_b, out: width, kernel: 3, padding: 1}\n"
        "  blocks.basic.body:\n"
        "    shortcut.0: {set: {out: planes * 1}}\n",
    )
    base = path.parent / "base.yaml"
    doc = rescompiler.load_spec(path).document
    assert doc is not None
    where = {p: doc.locate(p) for p in [("body", 0), ("body", 1), ("body", 2), ("body", 3)]}
    assert (where["body", 0].file, where["body", 0].line) == (str(path), 8)
    assert (where["body", 1].file, where["body", 1].line) == (str(path), 9)
    assert (where["body", 2].file, where["body", 2].line) == (
        str(base),
        line_of(base, "name: stem,") + 1,
    )
    assert where["body", 3].line == line_of(base, "name: layer1")
    conv = ("blocks", "basic", "body", 5, "body", 0)
    assert doc.locate(conv).file == str(base)
    assert (doc.locate((*conv, "out")).file, doc.locate((*conv, "out")).line) == (
        str(path),
        11,
    )


def test_errors_in_edited_nodes_are_reported_in_the_child(write_spec: Writer) -> None:
    path = variant(
        write_spec,
        "edit:\n"
        "  body:\n"
        "    stem: {insert_after: {op: conv, out: 4, kernal: 3}}\n"
        "  blocks.basic.body:\n"
        "    conv2: {set: {strid: 2}}\n",
    )
    err = errors_of(path)
    found = {(d.location.file, d.location.line, d.path, d.message) for d in err.diagnostics}
    assert (
        str(path),
        6,
        "body[1].kernal",
        "unknown key 'kernal' (did you mean 'kernel'?)",
    ) in found
    assert (
        str(path),
        8,
        "blocks.basic.body[3].strid",
        "unknown key 'strid' (did you mean 'stride'?)",
    ) in found


# -- chains and inheritance ----------------------------------------------------------------------
def test_a_chain_of_extends_applies_edits_in_order(write_spec: Writer) -> None:
    write_spec(BASE, "base.yaml")
    write_spec(
        "extends: base.yaml\nname: middle\nreference: somewhere.middle\n"
        "edit:\n  body:\n    stem: {insert_after: {op: bn, name: stem_bn}}\n",
        "middle.yaml",
    )
    top = write_spec(
        "extends: middle.yaml\nname: top\n"
        "edit:\n  body:\n    stem_bn: {set: {eps: 0.5}}\n    relu: {delete: true}\n",
        "top.yaml",
    )
    spec = rescompiler.load_spec(top)
    nodes = body_of(spec)
    assert nodes[:2] == [
        {"op": "conv", "name": "stem", "out": "width", "kernel": 3, "padding": 1},
        {"op": "bn", "name": "stem_bn", "eps": 0.5},
    ]
    assert nodes[2]["name"] == "layer1"
    doc = spec.document
    assert doc is not None
    assert doc.locate(("body", 1)).file == str(top.parent / "middle.yaml")
    assert doc.locate(("body", 1, "eps")).file == str(top)
    assert spec.model.reference == ""  # top edits: middle's reference is not inherited
    params_only = write_spec("extends: middle.yaml\nname: p\nparams: {width: 4}\n", "p.yaml")
    assert rescompiler.load_spec(params_only).model.reference == "somewhere.middle"


def test_a_variant_that_edits_inherits_no_reference_nor_description(write_spec: Writer) -> None:
    edited = rescompiler.load_spec(
        variant(write_spec, "edit:\n  blocks.basic.body:\n    bn1: {set: {eps: 0.1}}\n")
    )
    assert (edited.model.reference, edited.model.description) == ("", "")
    assert edited.model.blocks["basic"].doc == ""  # its body is edited
    assert edited.model.blocks["spare"].doc == "kept as it is"
    restated = rescompiler.load_spec(
        variant(
            write_spec,
            "reference: elsewhere.child\ndescription: mine\n"
            "blocks:\n  basic: {doc: still two convs}\n"
            "edit:\n  blocks.basic.body:\n    bn1: {set: {eps: 0.1}}\n",
        )
    )
    assert (restated.model.reference, restated.model.description) == ("elsewhere.child", "mine")
    assert restated.model.blocks["basic"].doc == "still two convs"
    by_blocks = rescompiler.load_spec(
        variant(write_spec, "blocks:\n  spare: {params: {planes: 3}}\n")
    )
    assert by_blocks.model.reference == "" and by_blocks.model.blocks["spare"].doc == ""
    assert by_blocks.model.blocks["basic"].doc == "two 3x3 convs and a projection"
    params_only = rescompiler.load_spec(variant(write_spec, "params: {width: 4}\n"))
    assert params_only.model.reference == "nowhere.base"
    assert params_only.model.description == "a small residual net"
    assert params_only.model.blocks["basic"].doc == "two 3x3 convs and a projection"


# -- params that nothing reads -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "column", "message"),
    [
        ("{num_clases: 10}", 10, "'num_clases' is never read (did you mean 'num_classes'?)"),
        ("{width_per_grup: 8}", 10, "'width_per_grup' is never read (did you mean 'width_per_group'?)"),  # noqa: E501
    ],
)  # fmt: skip
def test_a_typo_in_a_variants_params_is_an_error(
    write_spec: Writer, capsys: pytest.CaptureFixture[str], params: str, column: int, message: str
) -> None:
    path = write_spec(f"extends: resnet50.yaml\nname: mine\nparams: {params}\n", "mine.yaml")
    err = errors_of(path)
    assert len(err.diagnostics) == 1
    assert (err.file, err.line, err.column) == (str(path), 3, column)
    assert err.message == f"param {message}"
    assert run([str(path), "--check"]) == 1
    assert f"{path}:3:{column}: params." in capsys.readouterr().err


def test_a_typo_in_a_specs_own_params_is_an_error(write_spec: Writer) -> None:
    text = BASE.replace("params: {width: 8, classes: 10}", "params: {width: 8, clases: 10}")
    err = errors_of(write_spec(text))
    assert sorted((d.location.line, d.message) for d in err.diagnostics) == [
        (6, "param 'clases' is never read (did you mean 'classes'?)"),
        (
            line_of(write_spec(text), "out: classes"),
            "unknown name 'classes' (did you mean 'clases'?)",
        ),
    ]


def test_a_block_param_nothing_reads_is_reported(write_spec: Writer) -> None:
    text = BASE.replace("params: {planes: null}", "params: {planes: null, plane: 2}")
    err = errors_of(write_spec(text))
    assert [(d.location.line, d.path, d.message) for d in err.diagnostics] == [
        (
            line_of(write_spec(text), "plane: 2"),
            "blocks.spare.params.plane",
            "param 'plane' of block 'spare' is never read (did you mean 'planes'?)",
        )
    ]


def test_a_param_close_to_nothing_read_is_a_warning(write_spec: Writer) -> None:
    text = BASE.replace("params: {width: 8, classes: 10}", "params: {width: 8, classes: 10, z: 1}")
    spec = rescompiler.load_spec(write_spec(text))
    assert [(w.location.line, w.message) for w in spec.warnings] == [(6, "param 'z' is never read")]


def test_reads_count_everywhere_an_expression_may_be(write_spec: Writer) -> None:
    """Params read only by a name template, a block param default, ``when``, an ``init``,
    ``input_shape`` or a ``child_name`` are read; a stage's own ``i`` and ``n`` are not the
    params of those names."""
    text = (
        "version: 1\nname: r\ninput_shape: [c, 8, 8]\n"
        "params: {c: 3, suffix: 1, base: 4, gate: true, zero: false, first: 0, n: 1, i: 0}\n"
        "blocks:\n"
        "  b:\n"
        "    params: {out: base}\n"
        "    body:\n"
        "      - {op: conv, out: out, kernel: 1, names: {keras: 'c{suffix}'}}\n"
        "      - {op: bn, when: gate, init: {weight: 'zeros if zero else ones'}}\n"
        "body:\n"
        "  - {block: b, name: s, repeat: 2, child_name: 'x{i + first}', args: {out: n + 3}}\n"
    )
    spec = rescompiler.load_spec(write_spec(text))
    unread = sorted(w.message for w in spec.warnings if "never read" in w.message)
    assert unread == ["param 'i' is never read", "param 'n' is never read"]


def test_library_specs_have_no_unread_params() -> None:
    from library import every_spec, spec_path

    for name in every_spec():
        spec = rescompiler.load_spec(spec_path(name))
        assert not [w for w in spec.warnings if "never read" in w.message], name
