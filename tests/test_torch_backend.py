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
from library import ROOT, TORCHVISION, every_spec, library, small_input, spec_path

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
        if node.id in seen:  # a channels-last map is N×H×W×C in torch
            last = node.layout == "channels_last"
            assert seen[node.id] == (node.shape[1:] + node.shape[:1] if last else node.shape)


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
    for name in every_spec():
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


@pytest.mark.parametrize("flag", [True, False])
def test_conditional_node_reads_its_input_not_its_otherwise(write_spec, flag: bool) -> None:
    """Regression: ``when``/``otherwise`` where the node's input dies and ``otherwise`` lives
    on; the otherwise value used to be assigned to the input's variable before the call."""
    path = write_spec(
        """
        version: 1
        name: cond
        input_shape: [3, 6, 6]
        params: {flag: true}
        body:
          - {op: conv, name: a, out: 4, kernel: 1}
          - {op: conv, name: b, out: 4, kernel: 1}
          - {op: relu, name: r, when: flag, otherwise: a}
          - {op: add, inputs: [r, a]}
        """
    )
    model = rescompiler.build(rescompiler.load_spec(path, {"flag": flag}), "torch").eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        a = model.a(x)
        expected = (torch.relu(model.b(a)) if flag else a) + a
        assert torch.equal(model(x), expected)


MOBILE_BLOCK = """
version: 1
name: inverted
input_shape: [3, 16, 16]
blocks:
  inverted:
    params: {out: null, stride: 1}
    body:
      - {op: conv, name: expand, out: in_channels * 2, kernel: 1, bias: false}
      - {op: relu6}
      - {op: conv, name: dw, out: in_channels * 2, kernel: 3, stride: stride, padding: 1,
         groups: in_channels * 2, bias: false}
      - {op: conv, name: project, out: out, kernel: 1, bias: false}
      - {op: add, name: res, inputs: [project, input], when: stride == 1 and in_channels == out}
      - {op: concat, name: cat, inputs: [res, input], when: stride == 1, otherwise: res}
body:
  - {op: conv, name: stem, out: 4, kernel: 3, padding: 1}
  - {block: inverted, name: same, args: {out: 4}}
  - {block: inverted, name: wider, args: {out: 6}}
  - {block: inverted, name: down, args: {out: 6, stride: 2}}
  - {op: global_avgpool}
  - {op: flatten}
  - {op: linear, out: 3}
"""


def test_conditional_merges_become_flags_like_use_res_connect(write_spec) -> None:
    """``add``/``concat`` with ``when`` (MobileNetV2's inverted residual): the condition is a
    flag set in ``__init__``, forward merges only when it holds, channels follow."""
    spec = rescompiler.load_spec(write_spec(MOBILE_BLOCK))
    source = rescompiler.emit(spec, "torch")
    assert "self.use_res = stride == 1 and in_channels == out" in source
    model = rescompiler.build(spec, "torch").eval()
    flags = {
        name: (getattr(model, name).use_res, getattr(model, name).use_cat)
        for name in ("same", "wider", "down")
    }
    assert flags == {"same": (True, True), "wider": (False, True), "down": (False, False)}
    assert sum(p.numel() for p in model.parameters()) == spec.graph.params

    def block(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = m.project(m.dw(torch.nn.functional.relu6(m.expand(x))))
        y = y + x if m.use_res else y
        return torch.cat([y, x], 1) if m.use_cat else y

    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        h = model.stem(x)
        for name in ("same", "wider", "down"):
            h = block(getattr(model, name), h)
            assert h.shape[1] == getattr(model, name).out_channels
        close(model(x), model.linear(h.mean((2, 3))))


DEAD_CODE = """
version: 1
name: partly_used
input_shape: [3, 8, 8]
params: {use_branch: true}
blocks:
  gated:
    params: {out: null, stride: 1}
    body:
      - {op: conv, name: expand, out: out, kernel: 1, stride: stride}
      - {op: bn, name: ebn}
      - {op: conv, name: mid, out: out, kernel: 3, padding: 1}
      - {op: bn, name: mid_bn}
      - {op: relu, name: gate, when: in_channels == out, otherwise: ebn}
      - {op: add, name: res, inputs: [gate, ebn], when: stride == 1}
      - {op: conv, name: mix, out: out, kernel: 1}
body:
  - {op: conv, name: stem, out: 4, kernel: 1}
  - {block: gated, name: same, args: {out: 4}}
  - {block: gated, name: down, args: {out: 8, stride: 2}}
  - {op: conv, name: branch, out: 8, kernel: 1, inputs: down}
  - {op: add, name: join, inputs: [down, branch], when: use_branch}
  - {op: conv, name: nowhere, out: 8, kernel: 1, inputs: down}
  - {op: relu, inputs: join}
"""


@pytest.mark.parametrize("use_branch", [True, False])
def test_nodes_used_only_in_some_blocks_are_built_only_there(write_spec, use_branch) -> None:
    """The front end drops nodes that do not reach the output (with a warning); the torch
    model must hold the same parameters: ``mid`` exists only where ``gate`` is on, ``branch``
    only with ``use_branch``, ``nowhere`` never. Folding leaves such BNs alone."""
    spec = rescompiler.load_spec(write_spec(DEAD_CODE), {"use_branch": use_branch})
    assert any("mid does not reach the output" in w.message for w in spec.warnings)
    model = rescompiler.build(spec, "torch").eval()
    assert sum(p.numel() for p in model.parameters()) == spec.graph.params
    assert (model.same.mid is not None, model.down.mid is None) == (True, True)
    assert (model.branch is not None) == use_branch and not hasattr(model, "nowhere")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        s = model.same
        h = model.stem(x)
        h = s.mix(torch.relu(s.mid_bn(s.mid(s.ebn(s.expand(h))))) + s.ebn(s.expand(h)))
        d = model.down
        h = d.mix(d.ebn(d.expand(h)))
        h = torch.relu(h + model.branch(h) if use_branch else h)
        close(model(x), h)
        inference = rescompiler.build(spec, "torch", optimize="inference")
        inference.load_state_dict(model.state_dict())
        close(inference(x), h)
    folded = {bn for _conv, bn, _eps, _side in type(inference.same).FOLDED_BN}
    assert "ebn" in folded and "mid_bn" not in folded


def test_stage_counters_do_not_shadow_params_named_i_n_or_block(write_spec) -> None:
    """Regression: the emitter wrote ``n = <repeat>`` and ``for i in ...`` into ``__init__``,
    rebinding params named ``n``/``i``/``block`` for every later line. Inside a stage's args
    ``i``/``n`` are the block's position and the count; everywhere else they are the params."""
    path = write_spec(
        """
        version: 1
        name: shadow
        input_shape: [3, 8, 8]
        params: {n: 2, i: 5, block: 1}
        blocks:
          b:
            params: {out: null}
            body:
              - {op: conv, out: out + block - 1, kernel: 1}
              - {op: relu}
        body:
          - {block: b, name: s1, repeat: n + 1, args: {out: 4 * n}, child_name: "blk{i}"}
          - {block: b, name: s2, repeat: n, args: {out: i + 3}}
          - {op: conv, name: head, out: i, kernel: 1}
        """
    )
    spec = rescompiler.load_spec(path)
    model = rescompiler.build(spec, "torch")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "s1.blk0.conv.weight": (12, 3, 1, 1),
        "s1.blk1.conv.weight": (12, 12, 1, 1),
        "s1.blk2.conv.weight": (12, 12, 1, 1),
        "s2.0.conv.weight": (3, 12, 1, 1),
        "s2.1.conv.weight": (4, 3, 1, 1),
        "head.weight": (5, 4, 1, 1),
    }
    assert sum(p.numel() for p in model.parameters()) == spec.graph.params
