"""PyTorch backend: built vs generated vs torchvision, initialisers, compile/fx/channels_last."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from library import ROOT, TORCHVISION, library, small_input, spec_path

import rescompiler

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(autouse=True)
def _deterministic_math() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def device_or_skip(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(device)


def load(name: str, **overrides: object) -> rescompiler.Spec:
    return rescompiler.load_spec(spec_path(name), overrides or None)


def generated_module(name: str):
    return importlib.import_module(f"generated.{name}_torch")


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    diff = (a - b).abs().max().item()
    assert diff <= 1e-4 * b.abs().max().item() + 1e-5, diff


@pytest.mark.parametrize("name", library())
def test_built_and_generated_agree_with_each_other_and_the_ir(name: str) -> None:
    shape = small_input(name)
    spec = load(name, input_shape=shape)
    torch.manual_seed(0)
    built = rescompiler.build(spec, "torch").eval()
    generated = generated_module(name).build(input_shape=tuple(shape)).eval()
    assert list(built.state_dict()) == list(generated.state_dict())
    generated.load_state_dict(built.state_dict(), strict=True)
    count = sum(p.numel() for p in built.parameters())
    assert count == spec.graph.params
    # every IR node that is a module reports the shape the front end inferred
    modules = dict(built.named_modules())
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[node.id].register_forward_hook(
            lambda _m, _i, out, key=node.id: seen.__setitem__(key, tuple(out.shape[1:]))
        )
        for node in spec.graph.nodes
        if node.id in modules
    ]
    x = torch.randn(2, *shape)
    with torch.no_grad():
        a, b = built(x), generated(x)
    for hook in hooks:
        hook.remove()
    assert torch.equal(a, b)
    assert tuple(a.shape[1:]) == spec.graph.shape_of(spec.graph.output)
    for node in spec.graph.nodes:
        if node.id in seen:
            assert seen[node.id] == node.shape, node.id


@pytest.mark.parametrize("name", TORCHVISION)
@pytest.mark.parametrize("device", DEVICES)
def test_torchvision_weights_load_strictly_and_outputs_match(name: str, device: str) -> None:
    dev = device_or_skip(device)
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval().to(dev)
    state = reference.state_dict()
    for model in (
        rescompiler.build(load(name), "torch"),
        generated_module(name).build(),
    ):
        model.load_state_dict(state, strict=True)
        model.eval().to(dev)
        assert sum(p.numel() for p in model.parameters()) == sum(
            p.numel() for p in reference.parameters()
        )
        x = torch.randn(2, 3, 64, 64, device=dev)
        with torch.no_grad():
            close(model(x), reference(x))


def test_initialisers_match_torchvision_statistically() -> None:
    torch.manual_seed(1)
    ours = rescompiler.build(load("resnet50"), "torch")
    reference = torchvision.models.resnet50(weights=None)
    theirs = dict(reference.named_parameters())
    checked = 0
    for key, value in ours.named_parameters():
        if value.dim() == 4:
            ref_std = theirs[key].std().item()
            assert abs(value.std().item() - ref_std) <= 0.05 * ref_std, key
            checked += 1
        elif key.endswith("bn3.weight"):
            assert torch.equal(value, theirs[key])
    assert checked == 53
    zero = rescompiler.build(load("resnet50", zero_init_residual=True), "torch")
    assert all(zero.get_submodule(f"layer{s}.0.bn3").weight.abs().sum() == 0 for s in (1, 2, 3, 4))


@pytest.mark.parametrize("name", ["cifar_resnet20", "densenet121", "unet"])
def test_fx_trace_compile_and_channels_last(name: str) -> None:
    shape = small_input(name)
    torch.manual_seed(0)
    model = generated_module(name).build(input_shape=tuple(shape)).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = model(x)
        traced = torch.fx.symbolic_trace(model)
        assert torch.equal(traced(x), expected)
        last = model.to(memory_format=torch.channels_last)
        close(last(x.to(memory_format=torch.channels_last)), expected)
    if name == "cifar_resnet20":
        compiled = torch.compile(model.to(memory_format=torch.contiguous_format), fullgraph=True)
        with torch.no_grad():
            close(compiled(x), expected)


def test_generated_sources_are_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    stale = []
    for name in library():
        source = rescompiler.emit(rescompiler.load_spec(f"specs/{name}.yaml"), "torch")
        target = ROOT / "generated" / f"{name}_torch.py"
        if not target.exists() or target.read_text() != source:
            stale.append(target.name)
    assert not stale, f"regenerate with rescompile: {stale}"


def test_emit_is_deterministic() -> None:
    a = rescompiler.emit(load("densenet121"), "torch")
    b = rescompiler.emit(load("densenet121"), "torch")
    assert a == b


def test_source_size_grows_with_templates_not_layers() -> None:
    small = rescompiler.emit(load("preact_resnet164"), "torch")
    big = rescompiler.emit(load("preact_resnet1001"), "torch")
    assert len(big.splitlines()) <= len(small.splitlines()) + 5


def test_generated_module_runs_without_rescompiler(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    result = subprocess.run(
        [sys.executable, "-m", "rescompiler", "specs/resnet50v2.yaml", "--backend", "torch",
         "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "resnet50v2_torch.py")
    code = (
        "import sys; sys.modules['rescompiler'] = None\n"
        "import torch\n"
        "from generated.resnet50v2_torch import build\n"
        "model = build(num_classes=7).eval()\n"
        "with torch.no_grad():\n"
        "    y = model(torch.randn(1, 3, 64, 64))\n"
        "assert y.shape == (1, 7), y.shape\n"
        "assert 'rescompiler' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr


def test_spatial_flatten_sizes_the_next_layer(write_spec) -> None:
    path = write_spec(
        "version: 1\nname: flat\ninput_shape: [3, 5, 4]\n"
        "body:\n  - {op: conv, out: 4, kernel: 1}\n  - {op: flatten}\n"
        "  - {op: bn}\n  - {op: linear, out: 6}\n"
    )
    spec = rescompiler.load_spec(path)
    model = rescompiler.build(spec, "torch").eval()
    assert sum(p.numel() for p in model.parameters()) == spec.graph.params
    with torch.no_grad():
        assert model(torch.randn(2, 3, 5, 4)).shape == (2, 6)
