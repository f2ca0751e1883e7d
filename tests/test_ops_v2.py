"""Language v2 ops on the torch side and in the front end: ``mul`` (squeeze-and-excitation as a
block equals torchvision's ``SqueezeExcitation``), broadcasting errors, ``ceil_mode`` sizes, the
hard activations. Torch↔Keras agreement of each op is in test_keras_backend.py."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler.graph import to_mermaid
from rescompiler.summary import summarize

SE_SPEC = """\
version: 1
name: se_net
input_shape: [16, 6, 7]
params: {squeeze: 4}
blocks:
  squeeze_excitation:
    doc: torchvision.ops.SqueezeExcitation as a spec block.
    params: {squeeze_channels: null}
    body:
      - {op: global_avgpool, name: avgpool}
      - {op: conv, name: fc1, out: squeeze_channels, kernel: 1}
      - {op: relu, name: activation}
      - {op: conv, name: fc2, out: in_channels, kernel: 1}
      - {op: sigmoid, name: scale_activation}
      - {op: mul, inputs: [scale_activation, input]}
body:
  - {block: squeeze_excitation, name: se, args: {squeeze_channels: squeeze}}
"""


def load_generated(source: str, tmp_path: Path, name: str) -> object:
    """Import emitted source from a file, as a user would."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_squeeze_excitation_block_equals_torchvision(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    spec = rescompiler.load_spec(write_spec(SE_SPEC))
    reference = ops.SqueezeExcitation(16, 4).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    x = torch.randn(2, 16, 6, 7)
    expected = reference(x)
    source = rescompiler.emit(spec, "torch")
    assert "scale_activation * x" in source or "* x" in source  # reads like torchvision
    built = rescompiler.build(spec, "torch").eval()
    generated = load_generated(source, tmp_path, "se_net_torch").build().eval()  # type: ignore[attr-defined]
    for model in (built, generated):
        model.se.load_state_dict(reference.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(model(x), expected)
    assert summarize(spec).trainable_params == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize(
    ("shapes", "ok"),
    [
        (("c: 8, kernel: 1", "c: 1, kernel: 1"), True),  # 8×H×W times 1×H×W
        (("c: 8, kernel: 1", "c: 8, kernel: 7"), True),  # 8×H×W times 8×1×1
        (("c: 8, kernel: 1", "c: 4, kernel: 1"), False),  # 8 vs 4 channels
        (("c: 8, kernel: 1", "c: 8, kernel: 3"), False),  # 7×7 vs 5×5
    ],
)
def test_mul_broadcasts_sizes_of_one_only(
    shapes: tuple[str, str], ok: bool, write_spec: Callable[..., Path]
) -> None:
    a, b = (s.replace("c:", "out:") for s in shapes)
    text = (
        "version: 1\nname: m\ninput_shape: [3, 7, 7]\nbody:\n"
        f"  - {{op: conv, name: a, inputs: input, {a}}}\n"
        f"  - {{op: conv, name: b, inputs: input, {b}}}\n"
        "  - {op: mul, inputs: [a, b]}\n"
    )
    path = write_spec(text)
    if ok:
        spec = rescompiler.load_spec(path)
        assert spec.graph.nodes[-1].shape == (8, 7, 7)
        assert "×" in to_mermaid(spec.graph)
        return
    with pytest.raises(rescompiler.SpecError, match="mul inputs do not broadcast") as info:
        rescompiler.load_spec(path)
    assert info.value.line == 7 and "each size must be equal, or 1" in str(info.value)


@pytest.mark.parametrize(
    ("pool", "size", "expected"),
    [
        ("{op: maxpool, kernel: 3, stride: 2, ceil_mode: true}", 10, 5),
        ("{op: maxpool, kernel: 3, stride: 2}", 10, 4),
        ("{op: avgpool, kernel: 2, stride: 2, padding: 1, ceil_mode: true}", 11, 6),
        ("{op: avgpool, kernel: 2, stride: 2, ceil_mode: true, count_include_pad: false}", 7, 4),
    ],
)
def test_ceil_mode_sizes_equal_torch(
    pool: str, size: int, expected: int, write_spec: Callable[..., Path]
) -> None:
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(
        write_spec(f"version: 1\nname: p\ninput_shape: [2, {size}, {size}]\nbody:\n  - {pool}\n")
    )
    assert spec.graph.nodes[-1].shape == (2, expected, expected)
    model = rescompiler.build(spec, "torch")
    assert tuple(model(torch.randn(1, 2, size, size)).shape[1:]) == (2, expected, expected)


def test_hard_activations_are_torchs(write_spec: Callable[..., Path]) -> None:
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(
        write_spec(
            "version: 1\nname: h\ninput_shape: [2, 4, 4]\nbody:\n"
            "  - {op: hardswish, name: hs}\n  - {op: hardsigmoid, name: hsig}\n"
        )
    )
    model = rescompiler.build(spec, "torch")
    assert isinstance(model.hs, torch.nn.Hardswish)
    assert isinstance(model.hsig, torch.nn.Hardsigmoid)
    x = torch.linspace(-5, 5, 32).reshape(1, 2, 4, 4)
    expected = torch.nn.functional.hardsigmoid(torch.nn.functional.hardswish(x))
    assert torch.equal(model(x), expected)


GROUP_WHEN_INDEX = """\
version: 1
name: group_when_index
input_shape: [3, 8, 8]
params: {pool: false}
defaults:
  conv: {bias: false, init: {weight: kaiming_normal_fan_out}}
body:
  - group: g
    body:
      - {op: avgpool, kernel: 2, when: pool}
      - {op: conv, out: 4, kernel: 1}
"""


@pytest.mark.parametrize("pool", [False, True])
def test_group_child_after_a_skipped_child_keeps_its_name(
    pool: bool, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """The issue's repro: torch indexed ``self.g[1]`` when child 0 was not built."""
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(write_spec(GROUP_WHEN_INDEX), overrides={"pool": pool})
    size = 4 if pool else 8
    built = rescompiler.build(spec, "torch")
    module = load_generated(rescompiler.emit(spec, "torch"), tmp_path, f"gwi_{pool}")
    generated = module.build(pool=pool)  # type: ignore[attr-defined]
    assert list(built.state_dict()) == list(generated.state_dict()) == ["g.1.weight"]
    x = torch.randn(1, 3, 8, 8)
    assert tuple(built(x).shape) == tuple(generated(x).shape) == (1, 4, size, size)
    keras = pytest.importorskip("keras")
    model = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, built, model)
    y = keras.ops.convert_to_numpy(model(x.permute(0, 2, 3, 1).numpy(), training=False))
    expected = built.eval()(x).detach().permute(0, 2, 3, 1).numpy()
    assert abs(y - expected).max() <= 1e-4 * abs(expected).max() + 1e-5


SCALING = """\
version: 1
name: scaling
input_shape: [3, 9, 9]
params: {width_mult: 1.1, depth_mult: 1.4}
let:
  stem: make_divisible(32 * width_mult, 8)
blocks:
  b:
    params: {out: null}
    body:
      - {op: conv, name: c, out: "make_divisible(out * width_mult, 8, 16)", kernel: 3, padding: 1}
      - {op: relu}
body:
  - {op: conv, name: stem, out: stem, kernel: 3, padding: 1}
  - {block: b, name: layer, repeat: "ceil(2 * depth_mult)", args: {out: "floor(24.9)"}}
"""


@pytest.mark.parametrize("divisor", [1, 4, 8, 16])
def test_make_divisible_is_torchvisions(divisor: int) -> None:
    utils = pytest.importorskip("torchvision.models._utils")
    from rescompiler.expr import evaluate

    for value in [0.5, 1, 3.3, 7.9, 8, 12, 15.9, 16, 31.5, 32 * 1.1, 40 * 0.35, 1280 * 1.4, 999]:
        assert evaluate(f"make_divisible({value}, {divisor})", {}) == utils._make_divisible(
            value, divisor
        )
        assert evaluate(f"make_divisible({value}, {divisor}, 24)", {}) == utils._make_divisible(
            value, divisor, 24
        )


@pytest.mark.parametrize("overrides", [{}, {"width_mult": 0.5, "depth_mult": 2.0}])
def test_scaling_functions_in_both_backends_and_generated_params(
    overrides: dict[str, float], write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """ceil, floor and make_divisible evaluate alike in the front end, the built and the
    generated torch module (with other params passed to its build()) and Keras."""
    torch = pytest.importorskip("torch")
    path = write_spec(SCALING)
    spec = rescompiler.load_spec(path, overrides=overrides)
    layers = [n.id for n in spec.graph.nodes if n.op == "conv"]
    assert len(layers) == 1 + -(-2 * spec.params["depth_mult"] // 1)
    generated = load_generated(
        rescompiler.emit(rescompiler.load_spec(path), "torch"), tmp_path, "s"
    )
    model = generated.build(**overrides)  # type: ignore[attr-defined]
    count = sum(p.numel() for p in model.parameters())
    assert count == summarize(spec).trainable_params
    built = rescompiler.build(spec, "torch")
    assert sum(p.numel() for p in built.parameters()) == count
    keras_model = rescompiler.build(spec, "keras")
    assert keras_model.count_params() == count
    assert tuple(model(torch.randn(1, 3, 9, 9)).shape) == (1, *spec.graph.nodes[-1].shape)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("batchnorm", "unknown op 'batchnorm' (did you mean 'bn'?)"),
        ("Dense", "unknown op 'Dense' (did you mean 'linear'?)"),
        ("rleu", "unknown op 'rleu' (did you mean 'relu'?)"),
        ("stochastic_depth", "unknown op 'stochastic_depth' (did you mean 'drop_path'?)"),
        ("dropblock", "unknown op 'dropblock'; the ops are: add, avgpool, bn,"),  # not dropout
        ("xyz", "unknown op 'xyz'; the ops are: add, avgpool, bn,"),
    ],
)
def test_unknown_ops_suggest_what_they_mean(
    op: str, expected: str, write_spec: Callable[..., Path]
) -> None:
    path = write_spec(f"version: 1\nname: u\ninput_shape: [3, 8, 8]\nbody:\n  - {{op: {op}}}\n")
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(path)
    assert expected in str(info.value) and info.value.line == 5
