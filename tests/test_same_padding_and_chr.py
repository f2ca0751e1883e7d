"""Pieces of the spec language that keras.applications' EfficientNets need: conv `padding:
same` at a stride (TF's and Keras' `same`, which pads by the input's size), `chr()` in
expressions (keras names the blocks of a stage `block2a`, `block2b`, ...: chr(j + 97)) and the
initialisers `kaiming_truncated_normal_fan_out` / `_fan_in` (Keras' VarianceScaling(2.0, mode,
"truncated_normal"); tests/test_seeded_init.py compares whole Keras models with
keras.applications' under one seed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rescompiler


def close(ref: np.ndarray, ours: np.ndarray) -> None:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5."""
    assert ref.shape == ours.shape
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    diff = float(np.abs(ref - ours).max())
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"


SAME = """
version: 1
name: same_at_a_stride
input_shape: [3, 9, 10]
params: {stride: 2}
body:
  - {op: conv, name: a, out: 4, kernel: 3, stride: stride, padding: same}
  - {op: conv, name: b, out: 4, kernel: [5, 3], stride: [2, 1], padding: same}
  - {op: conv, name: c, out: 4, kernel: 4, stride: 3, padding: same, bias: false}
"""


@pytest.mark.parametrize("size", [(9, 10), (8, 8), (7, 13)])
def test_same_padding_at_a_stride_is_keras_same(tmp_path: Any, size: tuple[int, int]) -> None:
    """`padding: same` at a stride pads by the input's size as TF and Keras do: the spec's
    shapes, the torch build and the Keras build agree with Conv2D(padding="same")."""
    torch = pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    path = tmp_path / "same.yaml"
    path.write_text(SAME)
    spec = rescompiler.load_spec(path, overrides={"input_shape": [3, *size]})
    reference = keras.Sequential(
        [
            keras.Input((*size, 3)),
            keras.layers.Conv2D(4, 3, strides=2, padding="same", name="a"),
            keras.layers.Conv2D(4, (5, 3), strides=(2, 1), padding="same", name="b"),
            keras.layers.Conv2D(4, 4, strides=3, padding="same", use_bias=False, name="c"),
        ]
    )
    shapes = [node.shape for node in spec.graph.nodes]
    assert shapes == [(4, *layer.output.shape[1:3]) for layer in reference.layers]
    ours = rescompiler.build(spec, backend="keras")
    for layer in reference.layers:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    pixels = np.random.default_rng(1).normal(size=(2, *size, 3)).astype("float32")
    expected = np.asarray(reference(pixels))
    close(expected, np.asarray(ours(pixels)))
    model = rescompiler.build(spec, backend="torch").eval()
    rescompiler.transfer_weights(spec, ours, model)
    with torch.no_grad():
        out = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
    close(expected, out.transpose(0, 2, 3, 1))


def test_chr_names_the_blocks_of_a_stage(tmp_path: Any) -> None:
    """``chr()`` in a name template names blocks as keras.applications does; it takes one
    integer code point."""
    path = tmp_path / "letters.yaml"
    path.write_text(
        "version: 1\nname: letters\ninput_shape: [3, 8, 8]\n"
        "blocks:\n  unit:\n    body: [{op: conv, name: conv, out: 4, kernel: 1}]\n"
        "body:\n  - {block: unit, name: block2, repeat: 3,"
        ' names: {keras: "block2{chr(i + 97)}"}}\n'
    )
    spec = rescompiler.load_spec(path)
    assert [node.names["keras"] for node in spec.graph.nodes] == [
        "block2a_conv",
        "block2b_conv",
        "block2c_conv",
    ]
    source = rescompiler.emit(spec, backend="keras")
    assert 'name=f"block2{chr(i + 97)}"' in source
    for bad, message in (("chr(-1)", "code point"), ("chr(1 == 1)", "code point")):
        path.write_text(
            f"version: 1\nname: bad\ninput_shape: [3, 8, 8]\nlet: {{c: '{bad}'}}\n"
            "body: [{op: relu}]\n"
        )
        with pytest.raises(rescompiler.SpecError, match=message):
            rescompiler.load_spec(path)


INITS = """
version: 1
name: inits
input_shape: [96, 8, 8]
body:
  - {op: conv, name: a, out: 128, kernel: 3, padding: 1, bias: false,
     init: {weight: kaiming_truncated_normal_fan_out}}
  - {op: conv, name: b, out: 128, kernel: 5, padding: 2, groups: 128, bias: false,
     init: {weight: kaiming_truncated_normal_fan_in}}
"""


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_truncated_normal_initialisers_scale_by_their_fan(tmp_path: Any, backend: str) -> None:
    """Both backends draw a normal cut at two standard deviations whose variance is 2 / fan:
    fan_out of a conv is out * kh * kw, fan_in of a depthwise conv kh * kw (keras'
    DepthwiseConv2D's fan_out). The cut makes every |w| <= 2 sqrt(2 / fan) / 0.8796."""
    pytest.importorskip(backend)
    path = tmp_path / "inits.yaml"
    path.write_text(INITS)
    spec = rescompiler.load_spec(path)
    model = rescompiler.build(spec, backend=backend)
    if backend == "torch":
        weights = {name: p.detach().numpy() for name, p in model.named_parameters()}
        a, b = weights["a.weight"], weights["b.weight"]
    else:
        a, b = (model.get_layer(n).get_weights()[0] for n in ("a", "b"))
    assert a.size == 128 * 96 * 9 and b.size == 128 * 25
    for w, fan in ((a, 128 * 9), (b, 25)):
        std = (2.0 / fan) ** 0.5
        assert abs(float(w.std()) / std - 1) < 0.05
        assert abs(float(w.mean())) < 0.05 * std
        assert float(np.abs(w).max()) <= 2 * std / 0.87962566103423978 + 1e-6
        assert float(np.abs(w).max()) > 1.8 * std  # a normal's tail, cut near 2.27 std


def test_an_initialiser_named_by_a_param_is_defined(tmp_path: Any) -> None:
    """The generated modules define the truncated-normal initialisers only when the spec names
    one; a param holding the name, which an ``init`` expression reads, counts."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "param_init.yaml"
    path.write_text(
        "version: 1\nname: param_init\ninput_shape: [3, 8, 8]\n"
        "params: {conv_init: kaiming_truncated_normal_fan_out}\n"
        "body: [{op: conv, name: a, out: 64, kernel: 3, init: {weight: conv_init}}]\n"
    )
    spec = rescompiler.load_spec(path)
    assert '"kaiming_truncated_normal_fan_out": lambda t' in rescompiler.emit(spec, "torch")
    torch.manual_seed(0)
    weight = rescompiler.build(spec, backend="torch").a.weight.detach()
    std = (2.0 / (64 * 9)) ** 0.5
    assert float(weight.abs().max()) <= 2 * std / 0.87962566103423978 + 1e-6
