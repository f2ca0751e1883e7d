"""The EfficientNet specs (B0-B7 as variants of B0, V2-S, and V2-M/L as variants of V2-S) equal
torchvision's: parameter counts, state_dict names and shapes, BatchNorm eps and momentum,
dropout and every block's stochastic depth rate, for all eleven (ours and torchvision's built
on the meta device: cheap); and for B0, B1 and V2-S, seeded init, a strict load of torchvision's
weights (with non-trivial BN statistics) and bit-identical eval outputs, built and generated."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
import torch
import torchvision
from library import spec_path
from torchvision.ops import StochasticDepth

import rescompiler

# name -> parameter count as torchvision counts it
EFFICIENTNETS: dict[str, int] = {
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet_v2_s": 21_458_488,
    "efficientnet_v2_m": 54_139_356,
    "efficientnet_v2_l": 118_515_272,
}
# the small ones, checked with real weights and outputs
FULL = ["efficientnet_b0", "efficientnet_b1", "efficientnet_v2_s"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One thread: on a busy machine torch's thread pool makes a V2-S forward pass 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


Meta = tuple[str, rescompiler.Spec, torch.nn.Module, torch.nn.Module]


@pytest.fixture(scope="module", params=list(EFFICIENTNETS))
def meta(request: pytest.FixtureRequest) -> Meta:
    """A spec, our torch build and torchvision's model, both on the meta device."""
    name = request.param
    spec = rescompiler.load_spec(spec_path(name))
    with torch.device("meta"):
        ours = rescompiler.build(spec, "torch")
        theirs = getattr(torchvision.models, name)(weights=None)
    return name, spec, ours, theirs


def drop_rates(model: torch.nn.Module) -> dict[str, float]:
    """Stochastic depth rate per module name (ours: DropPath; torchvision: StochasticDepth)."""
    return {
        name: module.p
        for name, module in model.named_modules()
        if isinstance(module, StochasticDepth) or type(module).__name__ == "DropPath"
    }


def test_parameter_count_matches_torchvision(meta: Meta) -> None:
    name, spec, ours, theirs = meta
    counted = sum(p.numel() for p in theirs.parameters())
    assert spec.graph.params == sum(p.numel() for p in ours.parameters())
    assert spec.graph.params == counted == EFFICIENTNETS[name]
    assert not spec.warnings, [str(w) for w in spec.warnings]


def test_state_dict_names_and_shapes_match_torchvision(meta: Meta) -> None:
    _, _, ours, theirs = meta
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]


def test_norms_dropout_and_stochastic_depth_match_torchvision(meta: Meta) -> None:
    _, _, ours, theirs = meta

    def norms(model: torch.nn.Module) -> list[tuple[str, float, float | None]]:
        bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
        return [(n, m.eps, m.momentum) for n, m in bns]

    def dropouts(model: torch.nn.Module) -> list[float]:
        return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]

    assert norms(ours) == norms(theirs)
    assert dropouts(ours) == dropouts(theirs)
    # torchvision gives every block a StochasticDepth but applies it only where the block
    # adds its input (stride 1, channels kept); ours has one exactly there, at the same rate
    applied = {
        f"{name}.stochastic_depth"
        for name, module in theirs.named_modules()
        if getattr(module, "use_res_connect", False)
    }
    reference = {k: p for k, p in drop_rates(theirs).items() if k in applied}
    assert drop_rates(ours) == reference
    assert len(reference) > 0 and max(reference.values()) < 0.2


def test_v2_m_and_l_add_a_seventh_stage_before_the_head() -> None:
    spec = rescompiler.load_spec(spec_path("efficientnet_v2_m"))
    ids = {node.id for node in spec.graph.nodes}
    assert "features.7.4.block.3.0" in ids  # the seventh stage's last block: 512 channels
    assert "features.8.0" in ids and "features.7.0" not in ids  # the head conv moved on


def seeded(make, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """A model built after ``manual_seed(seed)``, and where it left the random stream."""
    torch.manual_seed(seed)
    model = make()
    return model, torch.rand(4)


def randomise_batchnorms(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so that a misplaced one shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)


@pytest.mark.parametrize("name", FULL)
def test_seeded_init_weights_and_outputs_equal_torchvision(name: str) -> None:
    spec = rescompiler.load_spec(spec_path(name))
    generated = importlib.import_module(f"generated.{name}_torch")
    reference, after = seeded(lambda: getattr(torchvision.models, name)(weights=None))
    built, after_built = seeded(lambda: rescompiler.build(spec, "torch"))
    emitted, after_emitted = seeded(generated.build)
    expected = reference.state_dict()
    for model, stream in ((built, after_built), (emitted, after_emitted)):
        state = model.state_dict()
        assert list(state) == list(expected)
        assert [k for k in expected if not torch.equal(state[k], expected[k])] == []
        assert torch.equal(stream, after)  # the same number of random draws

    randomise_batchnorms(reference)
    state = reference.state_dict()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = reference.eval()(x)
        for model in (built, emitted):
            model.load_state_dict(state, strict=True)
            assert torch.equal(model.eval()(x), want)
