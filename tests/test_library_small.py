"""The small-model specs (d2l, CIFAR, pre-activation, U-Net): parameter counts, shapes, names,
variants and the U-Net size-mismatch diagnostic. Front end only: no framework is imported."""

from __future__ import annotations

from pathlib import Path

import pytest

import rescompiler

SPECS = Path(__file__).resolve().parent.parent / "specs"

# trainable parameters, as the references count them
PARAMS = {
    "d2l_resnet18": 11_178_378,
    "d2l_densenet": 758_226,
    "cifar_residual_net": 5_027_210,
    "cifar_resnet20": 269_722,
    "cifar_resnet56": 853_018,
    "cifar_resnet110": 1_727_962,
    "preact_resnet164": 1_703_258,
    "preact_resnet1001": 10_327_706,
    "unet": 31_037_698,
    "unet_original": 31_030_658,
}
OUTPUT = {
    "d2l_resnet18": (10,),
    "d2l_densenet": (10,),
    "cifar_residual_net": (10,),
    "cifar_resnet20": (10,),
    "cifar_resnet56": (10,),
    "cifar_resnet110": (10,),
    "preact_resnet164": (10,),
    "preact_resnet1001": (10,),
    "unet": (2, 256, 256),
    "unet_original": (2, 388, 388),
}
VARIANTS = {
    "cifar_resnet56": "cifar_resnet20.yaml",
    "cifar_resnet110": "cifar_resnet20.yaml",
    "preact_resnet1001": "preact_resnet164.yaml",
}


def load(name: str, **overrides: object) -> rescompiler.Spec:
    return rescompiler.load_spec(SPECS / f"{name}.yaml", overrides=overrides or None)


def output_shape(spec: rescompiler.Spec) -> tuple[int, ...]:
    return spec.graph.shape_of(spec.graph.output)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_output_shape(name: str) -> None:
    spec = load(name)
    assert rescompiler.summarize(spec).trainable_params == PARAMS[name]
    assert spec.graph.params == PARAMS[name]
    assert output_shape(spec) == OUTPUT[name]
    assert not spec.warnings, [str(w) for w in spec.warnings]


@pytest.mark.parametrize("name", list(PARAMS))
def test_spec_points_at_schema_and_is_named_after_its_file(name: str) -> None:
    path = SPECS / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == (
        "# yaml-language-server: $schema=../schema/spec.schema.json"
    )
    assert load(name).name == name


@pytest.mark.parametrize(("name", "base"), list(VARIANTS.items()))
def test_variants_extend_their_base_in_a_few_lines(name: str, base: str) -> None:
    text = (SPECS / f"{name}.yaml").read_text()
    assert f"extends: {base}" in text
    assert len([line for line in text.splitlines() if line.strip()]) <= 10


@pytest.mark.parametrize(("depth", "params"), [(20, 269_722), (32, 464_154), (44, 658_586)])
def test_cifar_resnet_depth_param(depth: int, params: int) -> None:
    assert load("cifar_resnet20", depth=depth).graph.params == params


def test_cifar_resnet_option_a_shortcut_is_parameter_free() -> None:
    graph = load("cifar_resnet20").graph
    assert graph.node("layer2.0.shortcut.0").op == "subsample"
    pad = graph.node("layer2.0.shortcut.1")
    assert pad.op == "channel_pad"
    assert pad.shape == (32, 16, 16)
    assert pad.params == 0
    ids = {node.id for node in graph.nodes}
    assert "layer1.0.shortcut.0" not in ids  # identity where the shape is unchanged
    assert "layer2.1.shortcut.0" not in ids


def test_preact_projection_only_where_the_shape_changes() -> None:
    graph = load("preact_resnet164").graph
    ids = {node.id for node in graph.nodes}
    assert {"layer1.0.downsample.0", "layer2.0.downsample.0", "layer3.0.downsample.0"} <= ids
    assert not any(i.startswith("layer1.1.downsample") for i in ids)
    projection = graph.node("layer2.0.downsample.0")
    assert projection.inputs == ("layer2.0.preact",)  # from the pre-activated input
    assert projection.shape == (128, 16, 16)
    assert graph.shape_of("layer3.17.add") == (256, 8, 8)


def test_d2l_densenet_channels_grow_and_halve() -> None:
    graph = load("d2l_densenet").graph
    assert graph.shape_of("net.dense_blk1.3.concat") == (192, 24, 24)
    assert graph.shape_of("net.tran_blk1.avgpool") == (96, 12, 12)
    assert graph.shape_of("net.dense_blk4.3.concat") == (248, 3, 3)


def test_unet_uses_milesial_module_names() -> None:
    graph = load("unet").graph
    for node_id in (
        "inc.double_conv.0",
        "down1.maxpool_conv.1.double_conv.0",
        "up1.up",
        "up1.conv.double_conv.0",
        "outc.conv",
    ):
        graph.node(node_id)
    assert graph.node("up1.up").op == "conv_transpose"
    assert graph.shape_of("up1.up") == (512, 32, 32)


def test_unet_at_an_odd_size_pads_the_upsampled_map() -> None:
    spec = load("unet", input_shape=[3, 250, 250])
    assert output_shape(spec) == (2, 250, 250)
    assert spec.graph.shape_of("up1.up") == (512, 30, 30)
    assert spec.graph.shape_of("up1.pad") == (512, 31, 31)
    assert spec.graph.params == PARAMS["unet"]


def test_unet_original_crops_the_skips() -> None:
    spec = load("unet_original")
    assert spec.input_shape == (1, 572, 572)
    assert spec.graph.shape_of("down4.conv.double_conv.3") == (1024, 28, 28)
    assert spec.graph.shape_of("up1.crop") == (512, 56, 56)
    assert spec.graph.shape_of("up4.crop") == (64, 392, 392)
    assert output_shape(spec) == (2, 388, 388)
    assert output_shape(load("unet_original", input_shape=[1, 188, 188])) == (2, 4, 4)


def test_unet_without_pad_to_reports_the_concat(tmp_path: Path) -> None:
    lines = (SPECS / "unet.yaml").read_text().splitlines()
    kept = [line for line in lines if "op: pad_to" not in line]
    assert len(kept) == len(lines) - 1
    text = "\n".join(kept).replace("inputs: [x2, pad]", "inputs: [x2, up]") + "\n"
    broken = tmp_path / "unet.yaml"
    broken.write_text(text)
    concat_line = 1 + next(i for i, line in enumerate(text.splitlines()) if "op: concat" in line)

    load_spec = rescompiler.load_spec
    assert output_shape(load_spec(broken)) == (2, 256, 256)  # even sizes need no padding
    with pytest.raises(rescompiler.SpecError) as info:
        load_spec(broken, overrides={"input_shape": [3, 250, 250]})
    err = info.value
    assert err.file == str(broken)
    assert err.line == concat_line
    assert err.path.startswith("blocks.up.body[")
    assert "down3.maxpool_conv.1.double_conv.5" in err.message
    assert "up1.up" in err.message
    assert "512×31×31" in err.message
    assert "512×30×30" in err.message
    assert str(err).startswith(f"{broken}:{concat_line}:")
