"""The timm specs (ResNet-D, SE-ResNet, SE-ResNeXt) reproduce timm's models: the parameter count
timm's model has, its state_dict (loaded with ``strict=True``), its initialisers, and its outputs
once its weights are loaded; the built and the generated torch models agree bit for bit.

The reference is found from each spec's ``reference:`` field (``timm.<model>``). Inputs are
1×3×64×64 to stay fast, plus an odd size for ResNet-D, where its ``ceil_mode`` pool matters."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from library import REFERENCE_PARAMS, TIMM, spec_path

import rescompiler

timm = pytest.importorskip("timm")

SHAPE = (1, 3, 64, 64)
ODD_SHAPE = (1, 3, 67, 71)  # ResNet-D's shortcut pools see odd sizes: ceil_mode counts


@dataclass
class Case:
    name: str
    spec: rescompiler.Spec
    reference: torch.nn.Module  # timm's model, random weights and BN parameters and statistics


def randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN parameters and statistics (fresh ones are 1 or 0, 0, 0, 1; timm's
    zero-initialised last BN of each block would hide the residual branch, SE included)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(like.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight, 0.2, 0.8))
                module.bias.copy_(uniform(module.bias, -0.2, 0.2))
                module.running_mean.copy_(uniform(module.running_mean, -0.2, 0.2))
                module.running_var.copy_(uniform(module.running_var, 0.5, 1.5))


def timm_name(spec: rescompiler.Spec) -> str:
    reference = spec.model.reference
    assert reference.startswith("timm."), reference
    return reference.removeprefix("timm.")


@pytest.fixture(scope="module", params=TIMM)
def case(request: pytest.FixtureRequest) -> Case:
    name = request.param
    spec = rescompiler.load_spec(spec_path(name))
    torch.manual_seed(0)
    reference = timm.create_model(timm_name(spec), pretrained=False)
    randomize_bn(reference, seed=1)
    return Case(name, spec, reference.eval())


def generated_module(name: str) -> Any:
    return importlib.import_module(f"generated.{name}_torch")


def test_reference_field_names_the_timm_model(case: Case) -> None:
    assert case.spec.model.reference == f"timm.{case.name}"
    assert case.name in timm.list_models(case.name)


def test_parameter_count_matches_timm(case: Case) -> None:
    expected, with_stats = REFERENCE_PARAMS[case.name]
    assert not with_stats
    counted = sum(p.numel() for p in case.reference.parameters() if p.requires_grad)
    assert counted == expected
    assert case.spec.graph.params == rescompiler.summarize(case.spec).trainable_params == expected
    statistics = sum(
        b.numel() for k, b in case.reference.named_buffers() if k.endswith(("_mean", "_var"))
    )
    assert case.spec.graph.stats == statistics
    assert not case.spec.warnings, [str(w) for w in case.spec.warnings]


def zeroed_bns(model: torch.nn.Module) -> set[str]:
    """Names of the BNs whose weight is all zeros."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d) and not module.weight.any()
    }


def test_initialisers_are_timms(case: Case) -> None:
    """timm initialises every conv (SE's included) kaiming-normal fan-out and zeroes the last BN
    of each block (``zero_init_last``); its fc and the conv biases keep torch's defaults."""
    fresh = timm.create_model(timm_name(case.spec), pretrained=False)
    built = rescompiler.build(case.spec, "torch")
    assert zeroed_bns(built) == zeroed_bns(fresh)
    assert zeroed_bns(built) == {n for n, _ in fresh.named_modules() if n.endswith(".bn3")}
    for node in case.spec.graph.nodes:
        if node.op == "conv":
            assert dict(node.attrs["init"]) == {"weight": "kaiming_normal_fan_out"}, node.id
        elif node.op == "linear":
            assert dict(node.attrs["init"]) == {
                "weight": "torch_default",
                "bias": "torch_default",
            }


def test_timm_weights_load_strictly_and_outputs_match(case: Case) -> None:
    """timm's state_dict loads with ``strict=True`` into the built and the generated model;
    both compute timm's function within DESIGN.md's tolerance, and each other's bit for bit."""
    state = case.reference.state_dict()
    built = rescompiler.build(case.spec, "torch").eval()
    generated = generated_module(case.name).build().eval()
    assert list(built.state_dict()) == list(generated.state_dict())
    built.load_state_dict(state, strict=True)
    generated.load_state_dict(state, strict=True)
    generator = torch.Generator().manual_seed(2)
    pools = any(node.op == "avgpool" for node in case.spec.graph.nodes)  # ResNet-D
    for shape in [SHAPE, ODD_SHAPE] if pools else [SHAPE]:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected, ours, theirs = case.reference(x), built(x), generated(x)
        scale = expected.abs().max().item()
        assert scale > 0.1  # the check means something: the output is not vanishing
        assert (expected - ours).abs().max().item() <= 1e-4 * scale + 1e-5, shape
        assert torch.equal(ours, theirs), shape


@pytest.mark.parametrize("name", [n for n in TIMM if n.startswith("se")])
def test_squeeze_excitation_is_a_small_class_of_the_generated_source(name: str) -> None:
    source = (spec_path(name).parent.parent / "generated" / f"{name}_torch.py").read_text()
    assert "class Se(nn.Module):" in source
    assert "self.se = Se(out_channels)" in source
    assert "out = self.bn3(out)\n        out = self.se(out)\n" in source
