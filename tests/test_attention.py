"""Attention as spec blocks: channel/spatial reductions (``mean``/``max`` over an axis) and
shared weights (``reuse``), so CBAM is YAML. ``specs/cbam_resnet50.yaml`` equals timm's
``resnet50`` with ``attn_layer="cbam"``: same parameters, timm's state_dict loads strictly into
the built and the generated model, same outputs."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler.graph import to_mermaid
from rescompiler.summary import summarize

ROOT = Path(__file__).resolve().parent.parent
CBAM = ROOT / "specs" / "cbam_resnet50.yaml"

SHARED = """\
version: 1
name: shared
input_shape: [6, 5, 5]
body:
  - {op: mean, axis: spatial, name: avg}
  - {op: conv, name: fc1, out: 2, kernel: 1}
  - {op: relu, name: act}
  - {op: conv, name: fc2, out: 6, kernel: 1}
  - {op: bn, name: norm}
  - {op: max, axis: spatial, name: peak, inputs: input}
  - {reuse: fc1}
  - {reuse: act}
  - {reuse: fc2, name: fc2_peak}
  - {op: add, inputs: [norm, fc2_peak]}
  - {op: sigmoid, name: gate}
  - {op: mul, inputs: [input, gate]}
"""


def load_file(path: Path, name: str) -> object:
    """Import a generated module from its file, as a user would."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_shared_weights_are_counted_once_and_stored_once(write_spec: Callable[..., Path]) -> None:
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(write_spec(SHARED))
    summary = summarize(spec)
    assert summary.trainable_params == (6 * 2 + 2) + (2 * 6 + 6) + 2 * 6
    rows = {row.name: row for row in summary.rows}
    assert rows["fc1_1"].params == 0 and "weights of fc1" in rows["fc1_1"].op
    assert "weights of fc2" in to_mermaid(spec.graph)
    model = rescompiler.build(spec, "torch").eval()
    assert sorted(model.state_dict()) == sorted(
        [
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "norm.weight",
            "norm.bias",
            "norm.running_mean",
            "norm.running_var",
            "norm.num_batches_tracked",
        ]
    )
    x = torch.randn(3, 6, 5, 5)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        fc = lambda v: model.fc2(torch.relu(model.fc1(v)))  # noqa: E731
        avg, peak = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        expected = x * torch.sigmoid(model.norm(fc(avg)) + fc(peak))
        assert torch.equal(model(x), expected)


def test_a_reused_node_keeps_its_bn_and_relu_out_of_place(write_spec: Callable[..., Path]) -> None:
    torch = pytest.importorskip("torch")
    text = SHARED.replace(
        "{reuse: fc2, name: fc2_peak}", "{reuse: fc2}\n  - {reuse: norm, name: fc2_peak}"
    )
    spec = rescompiler.load_spec(write_spec(text))
    source = rescompiler.emit(spec, "torch")
    assert "nn.ReLU(inplace=True)" not in source  # the shared ReLU also runs on another input
    inference = rescompiler.emit(spec, "torch", optimize="inference")
    assert "FOLDED_BN = " not in inference  # norm is reused: not folded
    assert "is reused" in inference
    plain = rescompiler.build(spec, "torch").eval()
    with torch.no_grad():
        for name, tensor in plain.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + (0.5 if "var" in name else 0))
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def timm_cbam() -> object:
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("resnet50", block_args={"attn_layer": "cbam"}).eval()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return reference


def test_cbam_resnet50_equals_timm(timm_cbam: object) -> None:
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(CBAM)
    reference = timm_cbam
    assert spec.model.reference.startswith("timm.create_model")
    assert summarize(spec).trainable_params == sum(
        p.numel()
        for p in reference.parameters()  # type: ignore[attr-defined]
    )
    generated = load_file(ROOT / "generated" / "cbam_resnet50_torch.py", "cbam_resnet50_torch")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)  # type: ignore[operator]
        outputs = []
        for model in (rescompiler.build(spec, "torch"), generated.build()):  # type: ignore[attr-defined]
            model.load_state_dict(reference.state_dict(), strict=True)  # type: ignore[attr-defined]
            outputs.append(model.eval()(x))
    built, from_file = outputs
    assert torch.equal(built, from_file)
    bound = 1e-4 * expected.abs().max().item() + 1e-5
    assert (built - expected).abs().max().item() <= bound


def test_cbam_is_a_yaml_edit_of_resnet50() -> None:
    text = CBAM.read_text()
    assert "extends: resnet50" in text
    assert "insert_after: {block: cbam, name: se}" in text


def test_a_reuse_of_a_reuse_applies_the_first_layer(write_spec: Callable[..., Path]) -> None:
    torch = pytest.importorskip("torch")
    text = """\
    version: 1
    name: chain
    input_shape: [8, 4, 4]
    body:
      - {op: conv, name: a, out: 8, kernel: 1}
      - {op: relu}
      - {reuse: a, name: a2}
      - {reuse: a2}
      - {op: bn}
    """
    spec = rescompiler.load_spec(write_spec(text))
    assert [n.shares for n in spec.graph.nodes] == [None, None, "a", "a", None]
    assert [n.id for n in spec.graph.nodes][3] == "a2_1"  # never the bare name it reuses
    model = rescompiler.build(spec, "torch").eval()
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(model.state_dict())
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        expected = model.bn(model.a(model.a(torch.relu(model.a(x)))))
        assert torch.equal(model(x), expected)
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)


def test_a_reuse_before_its_node_is_one_error(write_spec: Callable[..., Path]) -> None:
    text = "version: 1\nname: r\ninput_shape: [8, 8, 8]\nbody:\n  - {reuse: a}\n"
    text += "  - {op: conv, name: a, out: 8, kernel: 1}\n"
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(write_spec(text))
    assert len(info.value.diagnostics) == 1
    assert "'a' is defined later" in str(info.value)
