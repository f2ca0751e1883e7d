"""The torchvision specs reproduce torchvision's module names, tensor shapes, parameter counts
and initialisers, read from the IR alone (no backend involved)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from library import REFERENCE_PARAMS, TORCHVISION, spec_path

import rescompiler
from rescompiler.ir import Graph, IRNode

BN_TENSORS = ("running_mean", "running_var")


def expected_tensors(graph: Graph, node: IRNode) -> dict[str, tuple[int, ...]]:
    """The state_dict entries (suffix -> shape) the IR node implies."""
    attrs = node.attrs
    in_channels = graph.shape_of(node.inputs[0])[0]
    out: dict[str, tuple[int, ...]] = {}
    if node.op == "conv":
        out["weight"] = (attrs["out"], in_channels // attrs["groups"], *attrs["kernel"])
        if attrs["bias"]:
            out["bias"] = (attrs["out"],)
    elif node.op == "linear":
        out["weight"] = (attrs["out"], in_channels)
        if attrs["bias"]:
            out["bias"] = (attrs["out"],)
    elif node.op == "bn":
        tensors = ("weight", "bias", *BN_TENSORS) if attrs["affine"] else BN_TENSORS
        out.update(dict.fromkeys(tensors, (in_channels,)))
    elif node.op in ("layernorm", "groupnorm"):
        out.update(dict.fromkeys(("weight", "bias"), (in_channels,)))
    elif node.op == "layer_scale":  # a parameter of its block: its key is the node's id
        out[""] = (in_channels, 1, 1) if len(node.shape) == 3 else (in_channels,)
    return {name: tuple(shape) for name, shape in out.items()}


Pair = tuple[str, rescompiler.Spec, torch.nn.Module]


@pytest.fixture(scope="module", params=TORCHVISION)
def pair(request: pytest.FixtureRequest) -> Pair:
    """A library spec and its torchvision model, built on the meta device (no memory, no init)."""
    name = request.param
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    return name, rescompiler.load_spec(spec_path(name)), model


def test_state_dict_names_and_shapes_match_torchvision(pair: Pair) -> None:
    _, spec, model = pair
    graph = spec.graph
    ours = {
        f"{node.id}.{tensor}" if tensor else node.id: shape
        for node in graph.nodes
        for tensor, shape in expected_tensors(graph, node).items()
    }
    theirs = {
        key: tuple(tensor.shape)
        for key, tensor in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    assert sorted(ours.keys() - theirs.keys()) == []
    assert sorted(theirs.keys() - ours.keys()) == []
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}


def test_parameter_count_matches_torchvision(pair: Pair) -> None:
    name, spec, model = pair
    expected, with_stats = REFERENCE_PARAMS[name]
    assert not with_stats
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert spec.graph.params == counted == expected
    assert not spec.warnings, [str(w) for w in spec.warnings]


def test_initialisers_are_torchvision_s(pair: Pair) -> None:
    name, spec, _ = pair
    families = ("densenet", "convnext", "mobilenet", "efficientnet")
    family = next((f for f in families if name.startswith(f)), "resnet")
    expected = {
        "resnet": {
            "conv": {"weight": "kaiming_normal_fan_out"},
            "bn": {"weight": "ones", "bias": "zeros"},
            "linear": {"weight": "torch_default", "bias": "torch_default"},
        },
        "densenet": {
            "conv": {"weight": "kaiming_normal_fan_in"},
            "bn": {"weight": "ones", "bias": "zeros"},
            "linear": {"weight": "torch_default", "bias": "zeros"},
        },
        "mobilenet": {
            "conv": {"weight": "kaiming_normal_fan_out", "bias": "zeros"},
            "bn": {"weight": "ones", "bias": "zeros"},
            "linear": {"weight": "normal_001", "bias": "zeros"},
        },
        "efficientnet": {
            "conv": {"weight": "kaiming_normal_fan_out", "bias": "zeros"},
            "bn": {"weight": "ones", "bias": "zeros"},
            "linear": {"weight": "uniform_fan_out", "bias": "zeros"},
        },
        "convnext": {
            "conv": {"weight": "trunc_normal_002", "bias": "zeros"},
            "linear": {"weight": "trunc_normal_002", "bias": "zeros"},
        },
    }[family]
    for node in spec.graph.nodes:
        if node.op in expected:
            assert dict(node.attrs["init"]) == expected[node.op], node.id


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_zeroes_the_last_bn_of_each_block(name: str) -> None:
    spec = rescompiler.load_spec(spec_path(name), overrides={"zero_init_residual": True})
    last = "bn2" if name == "resnet18" else "bn3"
    zeroed = {
        n.id for n in spec.graph.nodes if n.op == "bn" and n.attrs["init"]["weight"] == "zeros"
    }
    assert zeroed == {n.id for n in spec.graph.nodes if n.local_name == last}
    assert zeroed


def test_densenet_dropout_appears_only_with_a_drop_rate() -> None:
    path = spec_path("densenet121")
    assert not [n for n in rescompiler.load_spec(path).graph.nodes if n.op == "dropout"]
    spec = rescompiler.load_spec(path, overrides={"drop_rate": 0.2})
    dropouts = [n for n in spec.graph.nodes if n.op == "dropout"]
    assert len(dropouts) == 6 + 12 + 24 + 16 and dropouts[0].attrs["p"] == 0.2
    assert spec.graph.params == REFERENCE_PARAMS["densenet121"][0]
