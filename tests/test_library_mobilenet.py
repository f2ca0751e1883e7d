"""The MobileNet specs (V2, V3-Large, V3-Small) reproduce torchvision's models: its parameter
count, its state_dict (loaded with ``strict=True``, keys in torchvision's order), its outputs bit
for bit once its weights are loaded, and its seeded initialisation; built and generated torch
models agree bit for bit. The width multiplier and V3's ``reduced_tail``/``dilated`` options
are params and reproduce torchvision's models with the same arguments.

Each spec is loaded and built once; inputs are 2×3×64×64 (the spatial size reaches 2×2)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from library import ROOT, spec_path  # noqa: E402

import rescompiler  # noqa: E402

# spec name -> torchvision's parameter count (parameters only, no BN statistics)
MOBILENETS = {
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
}
SHAPE = (2, 3, 64, 64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: these small models run ~100x slower on a busy machine with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Case:
    name: str
    spec: rescompiler.Spec
    reference: torch.nn.Module  # torchvision's, random weights, BN parameters and statistics
    built: torch.nn.Module
    generated: torch.nn.Module


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN parameters and statistics and conv biases (fresh ones are 1, 0, 0, 1 and
    the SE convs' biases 0), so that every tensor of the state_dict changes the output."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(like.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                module.bias.copy_(uniform(module.bias, -0.2, 0.2))
                module.running_mean.copy_(uniform(module.running_mean, -0.2, 0.2))
                module.running_var.copy_(uniform(module.running_var, 0.5, 1.5))
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(uniform(module.bias, -0.5, 0.5))


def reference_builder(spec: rescompiler.Spec) -> Any:
    reference = spec.model.reference
    assert reference.startswith("torchvision.models."), reference
    return getattr(torchvision.models, reference.removeprefix("torchvision.models."))


@pytest.fixture(scope="module", params=list(MOBILENETS))
def case(request: pytest.FixtureRequest) -> Case:
    name = request.param
    spec = rescompiler.load_spec(spec_path(name))
    torch.manual_seed(0)
    reference = reference_builder(spec)(weights=None)
    randomize(reference, 1)
    state = reference.state_dict()
    built = rescompiler.build(spec, "torch")
    generated = importlib.import_module(f"generated.{name}_torch").build()
    for model in (built, generated):
        model.load_state_dict(state, strict=True)
        model.eval()
    return Case(name, spec, reference.eval(), built, generated)


def test_parameter_count_is_torchvision_s(case: Case) -> None:
    def count(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    expected = MOBILENETS[case.name]
    assert count(case.reference) == expected
    assert case.spec.graph.params == count(case.built) == count(case.generated) == expected
    assert not case.spec.warnings, [str(w) for w in case.spec.warnings]


def test_state_dict_keys_and_shapes_in_torchvision_s_order(case: Case) -> None:
    theirs = {k: tuple(v.shape) for k, v in case.reference.state_dict().items()}
    for model in (case.built, case.generated):
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert list(ours.items()) == list(theirs.items())


def test_outputs_equal_torchvision_s_bit_for_bit(case: Case) -> None:
    torch.manual_seed(2)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        expected = case.reference(x)
        built, generated = case.built(x), case.generated(x)
    assert expected.shape == (SHAPE[0], 1000)
    assert expected.abs().max() > 0
    assert torch.equal(built, generated)
    assert torch.equal(built, expected)


def test_residual_and_gate_structure(case: Case) -> None:
    """The residual adds sit where torchvision's ``use_res_connect`` holds; V3's SE modules
    where torchvision has them (``block.N`` with ``fc1``/``fc2``)."""
    theirs = [m.use_res_connect for m in case.reference.features if hasattr(m, "use_res_connect")]
    ours = [m.use_residual for m in case.generated.features if hasattr(m, "use_residual")]
    assert ours == theirs and any(theirs)
    se = torchvision.ops.SqueezeExcitation
    reference_se = [n for n, m in case.reference.named_modules() if isinstance(m, se)]
    built_modules = dict(case.built.named_modules())
    for name in reference_se:
        assert hasattr(built_modules[name], "fc1") and hasattr(built_modules[name], "fc2")


VARIANTS = [
    ("mobilenet_v2", {"width_mult": 0.35, "num_classes": 10}),
    ("mobilenet_v2", {"width_mult": 1.4}),
    ("mobilenet_v3_large", {"width_mult": 0.75, "reduced_tail": True, "dilated": True}),
    ("mobilenet_v3_small", {"width_mult": 0.5, "dilated": True}),
    ("mobilenet_v3_small", {"width_mult": 1.25, "reduced_tail": True}),
]


@pytest.mark.parametrize(("name", "overrides"), VARIANTS)
def test_variants_reproduce_torchvision_with_the_same_arguments(
    name: str, overrides: dict[str, Any]
) -> None:
    """Seeded init and outputs equal torchvision's, built with the same keyword arguments."""
    spec = rescompiler.load_spec(spec_path(name), overrides)
    torch.manual_seed(0)
    reference = reference_builder(spec)(**overrides)
    torch.manual_seed(0)
    built = rescompiler.build(spec, "torch")
    theirs, ours = reference.state_dict(), built.state_dict()
    assert list(ours) == list(theirs)
    assert [k for k in theirs if not torch.equal(ours[k], theirs[k])] == []
    randomize(reference, 3)
    built.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert torch.equal(built.eval()(x), reference.eval()(x))


@pytest.mark.parametrize("name", list(MOBILENETS))
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_generated_sources_are_up_to_date(
    name: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    source = rescompiler.emit(rescompiler.load_spec(f"specs/{name}.yaml"), backend)
    target = ROOT / "generated" / f"{name}_{backend}.py"
    assert target.read_text() == source, f"regenerate with rescompile --backend {backend}"
