"""The RegNet specs (regnet_x_* and regnet_y_*, every one a params-only variant of
regnet_y_400mf) equal torchvision's: parameter counts, state_dict names and shapes (so every
stage's width, depth and group width), strides, groups and BN settings for all fifteen, read
from the IR and from torchvision's model on the meta device; ``regnet_stages`` (the
evaluator's and the generated modules') equals torchvision's ``BlockParams`` on every model
and on random params; for x_400mf, y_400mf and y_1_6gf, torchvision's weights (with
non-trivial BN statistics) load strictly and give bit-identical eval outputs, built and
generated; torch and Keras agree on y_400mf (``--verify``). Seeded init: test_seeded_init.py."""

from __future__ import annotations

import contextlib
import importlib
import random
from collections.abc import Iterator
from unittest import mock

import pytest
import torch
import torchvision
from library import REFERENCE_PARAMS, spec_path
from torchvision.models.regnet import BlockParams

import rescompiler
from rescompiler.expr import evaluate
from rescompiler.ir import Graph, IRNode

REGNETS = [
    *(f"regnet_x_{size}" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
    *(f"regnet_y_{size}" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
    "regnet_y_128gf",
]
# the small ones, checked with real weights and outputs
FULL = ["regnet_x_400mf", "regnet_y_400mf", "regnet_y_1_6gf"]
# given in the issue; the others were measured from torchvision and are in tests/library.py
GIVEN = {
    "regnet_x_400mf": 5_495_976,
    "regnet_x_3_2gf": 15_296_552,
    "regnet_y_400mf": 4_344_144,
    "regnet_y_1_6gf": 11_202_430,
    "regnet_y_16gf": 83_590_140,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """The meta device, except for torchvision's BlockParams.from_init_params: it computes the
    widths with torch tensors and reads them back (``tolist``), which meta tensors cannot."""
    from_init_params = BlockParams.from_init_params.__func__  # type: ignore[attr-defined]

    def on_cpu(cls: type, *args: object, **kwargs: object) -> BlockParams:
        with torch.device("cpu"):
            return from_init_params(cls, *args, **kwargs)

    with (
        mock.patch.object(BlockParams, "from_init_params", classmethod(on_cpu)),
        torch.device("meta"),
    ):
        yield


Meta = tuple[str, rescompiler.Spec, torch.nn.Module]


@pytest.fixture(scope="module", params=REGNETS)
def meta(request: pytest.FixtureRequest) -> Meta:
    """A spec and torchvision's model on the meta device (no memory, no init)."""
    name = request.param
    with meta_device():
        theirs = getattr(torchvision.models, name)(weights=None)
    return name, rescompiler.load_spec(spec_path(name)), theirs


def layers(graph: Graph) -> Iterator[tuple[IRNode, int]]:
    """The IR's conv, bn and linear nodes, with their input channels."""
    for node in graph.nodes:
        if node.op in ("conv", "bn", "linear"):
            yield node, graph.shape_of(node.inputs[0])[0]


def test_parameter_count_matches_torchvision(meta: Meta) -> None:
    name, spec, theirs = meta
    counted = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert rescompiler.summarize(spec).trainable_params == counted == REFERENCE_PARAMS[name][0]
    assert GIVEN.get(name, counted) == counted
    assert not spec.warnings, [str(w) for w in spec.warnings]


def test_state_dict_names_and_shapes_match_torchvision(meta: Meta) -> None:
    """Every stage's width, number of blocks and group width, SE widths included, as the IR
    has them (the torch builds of the small ones load torchvision's state_dict below)."""
    _, spec, theirs = meta
    ours: dict[str, tuple[int, ...]] = {}
    for node, channels in layers(spec.graph):
        a = node.attrs
        if node.op == "conv":
            ours[f"{node.id}.weight"] = (a["out"], channels // a["groups"], *a["kernel"])
        elif node.op == "linear":
            ours[f"{node.id}.weight"] = (a["out"], channels)
        tensors = ("weight", "bias", "running_mean", "running_var")
        for tensor in ("bias",) if node.op != "bn" else tensors:
            if node.op == "bn" or a["bias"]:
                ours[f"{node.id}.{tensor}"] = (a["out"] if node.op != "bn" else channels,)
    theirs_shapes = {
        k: tuple(v.shape)
        for k, v in theirs.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert ours == theirs_shapes


def test_strides_groups_and_norms_match_torchvision(meta: Meta) -> None:
    _, spec, theirs = meta
    ours = {}
    for node, _ in layers(spec.graph):
        a = node.attrs
        if node.op == "conv":
            padding = a["padding"]
            assert padding[0] == padding[1] == padding[2] == padding[3]
            ours[node.id] = (a["stride"], (padding[0], padding[0]), a["groups"])
        elif node.op == "bn":
            ours[node.id] = (a["eps"], a["momentum"])
    expected = {}
    for name, module in theirs.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            expected[name] = (module.stride, module.padding, module.groups)
        elif isinstance(module, torch.nn.BatchNorm2d):
            expected[name] = (module.eps, module.momentum)
    assert ours == expected


def torchvision_stages(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int, bottleneck: float = 1.0
) -> list[list[int]]:
    params = BlockParams.from_init_params(
        depth=depth,
        w_0=w_0,
        w_a=w_a,
        w_m=w_m,
        group_width=group_width,
        bottleneck_multiplier=bottleneck,
    )
    return [list(s) for s in zip(params.widths, params.depths, params.group_widths, strict=True)]


def test_regnet_stages_is_torchvisions_on_every_model_and_random_params() -> None:
    """The expression language's regnet_stages and the one the generated modules define give
    torchvision's stages: on every library model's params and on random ones (widths rounded
    in float32 as torchvision's tensors do; in float64, some of these would differ)."""
    generated = importlib.import_module("generated.regnet_y_400mf_torch")
    cases = []
    for name in REGNETS:
        p = rescompiler.load_spec(spec_path(name)).params
        cases.append((p["depth"], p["w_0"], p["w_a"], p["w_m"], p["group_width"], p["bottleneck"]))
    rng = random.Random(0)
    for _ in range(300):
        cases.append(
            (
                rng.randint(1, 40),
                8 * rng.randint(1, 60),
                round(rng.uniform(0, 200), rng.choice([0, 1, 2])),
                round(rng.uniform(1.05, 3.5), rng.choice([1, 2])),
                rng.choice([1, 8, 16, 24, 48, 120, 1000]),
                rng.choice([1.0, 0.25, 0.5, 2.0, 0.75]),
            )
        )
    for case in cases:
        expected = torchvision_stages(*case)
        env = dict(zip("abcdef", case, strict=True))
        assert evaluate("regnet_stages(a, b, c, d, e, f)", env) == expected, case
        assert generated.regnet_stages(*case) == expected, case
    assert evaluate("regnet_stages(16, 48, 27.89, 2.09, 8)", {}) == torchvision_stages(
        16, 48, 27.89, 2.09, 8
    )


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
def test_torchvision_weights_load_strictly_and_outputs_are_identical(name: str) -> None:
    spec = rescompiler.load_spec(spec_path(name), overrides={"input_shape": [3, 64, 64]})
    generated = importlib.import_module(f"generated.{name}_torch")
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    randomise_batchnorms(reference)
    state = reference.state_dict()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = reference.eval()(x)
        for model in (rescompiler.build(spec, "torch"), generated.build(input_shape=(3, 64, 64))):
            model.load_state_dict(state, strict=True)
            assert torch.equal(model.eval()(x), want)


def test_torch_and_keras_agree_on_regnet_y_400mf() -> None:
    spec = rescompiler.load_spec(
        spec_path("regnet_y_400mf"), overrides={"input_shape": [3, 32, 32]}
    )
    report = rescompiler.verify(spec)
    assert report.ok, report.to_text()
    assert report.output_shape == [1000]
