"""Keras backend: built vs generated, parameter counts, the keras.applications references,
``.keras`` round trips, op semantics and weight transfer against the torch backend, and the
committed generated sources.

The module imports no torch itself (tests that compare with torch import it on use; conftest
loads the torch stack before tensorflow).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from library import ROOT, every_spec, library, small_input, spec_path

import rescompiler

keras = pytest.importorskip("keras")
# Keras 3.15 converts variables with np.array(x, copy=False), which numpy 2 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PRESENT = [name for name in library() if spec_path(name).exists()]
KERAS_REFERENCES = {
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
    "resnet50v1": "ResNet50",
    "resnet101v1": "ResNet101",
    "resnet152v1": "ResNet152",
}
ROUND_TRIP = ["unet", "cifar_resnet20", "resnet50"]


def present(names: list[str]) -> list[str]:
    return [name for name in names if spec_path(name).exists()]


def load(name: str, **overrides: object) -> rescompiler.Spec:
    return rescompiler.load_spec(spec_path(name), overrides or None)


def generated_module(name: str) -> Any:
    return importlib.import_module(f"generated.{name}_keras")


def nhwc(shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A (C, H, W) shape in Keras order; flat shapes unchanged."""
    return (*shape[1:], shape[0]) if len(shape) == 3 else tuple(shape)


def random_input(shape: list[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, *nhwc(shape))).astype(np.float32)


def randomize_bn(model: Any, seed: int = 1) -> None:
    """Non-trivial BN parameters and statistics (fresh ones are 1, 0, 0, 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            for variable, low, high in (
                (layer.gamma, 0.5, 1.5),
                (layer.beta, -0.2, 0.2),
                (layer.moving_mean, -0.2, 0.2),
                (layer.moving_variance, 0.5, 1.5),
            ):
                if variable is not None:
                    variable.assign(rng.uniform(low, high, n).astype(np.float32))


def run(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def assert_close(ours: np.ndarray, ref: np.ndarray) -> float:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5; returns the difference."""
    assert ours.shape == ref.shape
    diff = float(np.abs(ours - ref).max())
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"
    return diff


# -- built vs generated ------------------------------------------------------------------------
@pytest.mark.parametrize("name", PRESENT)
def test_built_and_generated_agree(name: str) -> None:
    shape = small_input(name)
    spec = load(name, input_shape=shape)
    built = rescompiler.build(spec, "keras")
    generated = generated_module(name).build(input_shape=tuple(shape))

    names = [layer.name for layer in built.layers]
    assert names == [layer.name for layer in generated.layers]
    assert len(set(names)) == len(names)
    by_name = {layer.name: layer for layer in built.layers}
    for node in spec.graph.nodes:  # every IR node is the layer of its Keras name, so shaped
        layer = by_name[node.names["keras"]]
        if node.op == "conv":  # a strided conv that may dilate subsamples after it (TF's limit)
            layer = by_name.get(node.names["keras"] + "_stride", layer)
        assert tuple(layer.output.shape[1:]) == nhwc(node.shape), node.id

    total = rescompiler.summarize(spec).total_params
    assert built.count_params() == total == spec.graph.params + spec.graph.stats
    assert generated.count_params() == total

    randomize_bn(built)
    for layer in built.layers:
        generated.get_layer(layer.name).set_weights(layer.get_weights())
    x = random_input(shape)
    a, b = run(built, x), run(generated, x)
    assert np.array_equal(a, b)
    assert a.shape[1:] == nhwc(spec.graph.shape_of(spec.graph.output))
    assert np.isfinite(a).all()


# -- the keras.applications references ---------------------------------------------------------
@pytest.mark.parametrize("name", present(list(KERAS_REFERENCES)))
def test_keras_applications_weights_load_by_name_and_outputs_match(name: str) -> None:
    reference = getattr(keras.applications, KERAS_REFERENCES[name])(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )
    randomize_bn(reference)
    spec = load(name, input_shape=[3, 64, 64], softmax=False)  # logits, as the reference
    ours = rescompiler.build(spec, "keras")
    assert ours.count_params() == reference.count_params()
    weighted = [layer for layer in reference.layers if layer.weights]
    for layer in weighted:
        ours.get_layer(layer.name).set_weights(layer.get_weights())
    assert {layer.name for layer in ours.layers if layer.weights} == {w.name for w in weighted}
    x = random_input([3, 64, 64])
    assert_close(run(ours, x), run(reference, x))  # measured: 0.0, the same layers in order


# -- saving ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", present(ROUND_TRIP))
def test_keras_file_round_trip(name: str, tmp_path: Path) -> None:
    shape = small_input(name)
    model = generated_module(name).build(input_shape=tuple(shape))
    randomize_bn(model)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = random_input(shape)
    assert np.array_equal(run(loaded, x), run(model, x))


def test_generated_module_depends_on_keras_only_and_loads_saved_models(tmp_path: Path) -> None:
    if not spec_path("unet").exists():
        pytest.skip("specs/unet.yaml is not in the library yet")
    out = tmp_path / "generated"
    result = subprocess.run(
        [sys.executable, "-m", "rescompiler", "specs/unet.yaml", "--backend", "keras",
         "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "unet_keras.py")
    model = generated_module("unet").build(n_classes=3, input_shape=(3, 32, 32))
    randomize_bn(model)
    model.save(tmp_path / "unet.keras")
    x = random_input([3, 32, 32])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", run(model, x))
    code = textwrap.dedent(
        """
        import importlib.abc
        import sys

        class Block(importlib.abc.MetaPathFinder):  # importing either must fail
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rescompiler", "torch"):
                    raise ImportError(f"{name} is blocked")
                return None

        sys.meta_path.insert(0, Block())
        import numpy as np
        import keras
        from generated import unet_keras  # registers the custom layers
        model = keras.models.load_model("unet.keras")
        y = np.asarray(model(np.load("x.npy"), training=False))
        assert np.array_equal(y, np.load("y.npy"))
        fresh = unet_keras.build(n_classes=5, input_shape=(3, 24, 24))
        assert fresh.output.shape == (None, 24, 24, 5), fresh.output.shape
        loaded = [m.split(".")[0] for m, v in sys.modules.items() if v is not None]
        assert "rescompiler" not in loaded and "torch" not in loaded
        """
    )
    (tmp_path / "generated" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]


# -- generated sources -------------------------------------------------------------------------
def test_generated_sources_are_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    stale = []
    for name in every_spec():
        source = rescompiler.emit(rescompiler.load_spec(f"specs/{name}.yaml"), "keras")
        target = ROOT / "generated" / f"{name}_keras.py"
        if not target.exists() or target.read_bytes() != source.encode():
            stale.append(target.name)
    assert not stale, f"regenerate with rescompile SPEC --backend keras: {stale}"


def test_emit_is_byte_identical_across_processes() -> None:
    if not spec_path("densenet121").exists():
        pytest.skip("specs/densenet121.yaml is not in the library yet")
    code = (
        "import sys, rescompiler\n"
        "sys.stdout.write(rescompiler.emit(rescompiler.load_spec('specs/densenet121.yaml'),"
        " 'keras'))\n"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1
    assert "import torch" not in outputs.pop()


def test_generated_source_reads_like_keras_applications() -> None:
    if not spec_path("resnet50v2").exists():
        pytest.skip("specs/resnet50v2.yaml is not in the library yet")
    source = (ROOT / "generated" / "resnet50v2_keras.py").read_text()
    assert "def preact_bottleneck(\n    x: keras.KerasTensor," in source
    assert 'name=f"{name}_2_conv"' in source
    assert "for i in range(depths[3]):" in source
    assert "specs/resnet50v2.yaml" in source.split('"""')[1]
    code = source.split('"""\n', 1)[1]  # after the module docstring
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert imports == [
        "from __future__ import annotations",
        "from collections.abc import Sequence",
        "from typing import Any",
        "import keras",
        "from keras import layers",
    ]


# -- against the torch backend -----------------------------------------------------------------
def torch_model(spec: rescompiler.Spec, seed: int = 0) -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    model = rescompiler.build(spec, "torch").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    return model


def torch_output(model: Any, x_nhwc: np.ndarray) -> np.ndarray:
    """Run a torch model on a channels-last array; the output in Keras order."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy() if x_nhwc.ndim == 4 else x_nhwc)
    with torch.no_grad():
        y = model(x).numpy()
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


# every library spec, torch vs keras: tests/test_equivalence.py


OPS_VECTOR = """
version: 1
name: ops_vector
input_shape: [4, 23, 19]
params: {classes: 7}
defaults:
  conv: {init: {weight: glorot_normal, bias: torch_default}}
blocks:
  mixed:
    inputs: [a, b]
    params: {out: null}
    body:
      - {op: crop_to, name: crop, inputs: [a, b]}
      - {op: pad_to, name: pad, inputs: [b, a]}
      - {op: crop_to, name: crop_back, inputs: [pad, crop]}
      - {op: concat, name: cat, inputs: [crop, crop_back]}
      - {op: conv, name: mix, out: out, kernel: [3, 1], padding: [1, 0]}
      - {op: add, inputs: [mix, crop]}
body:
  - {op: conv, name: c1, out: 6, kernel: [3, 5], stride: [2, 1], padding: [1, 2]}
  - {op: bn, name: b1, eps: 0.001, momentum: 0.3}
  - {op: maxpool, name: mp, kernel: 3, stride: 2, padding: 1}  # a signed input: -inf padding
  - {op: conv_transpose, name: ct, out: 5, kernel: 3, stride: 2, padding: 1, output_padding: 1}
  - {op: leaky_relu, slope: 0.2}
  - {op: avgpool, name: ap, kernel: 3, stride: 1, padding: 1, count_include_pad: false}
  - {op: conv, name: dil, out: 6, kernel: 3, padding: 2, dilation: 2}
  - {op: upsample, name: up1, scale: 2, mode: bilinear, align_corners: true}
  - {op: gelu}
  - {op: avgpool, name: ap2, kernel: 2, padding: 1}
  - {op: crop, name: crop, crop: [1, 0, 2, 1]}
  - {op: zeropad, name: zp, padding: [0, 1, 1, 0]}
  - {op: conv, name: grp, out: 6, kernel: 3, padding: 1, groups: 2}
  - {op: silu}
  - {op: maxpool, name: mp2, kernel: [3, 2], stride: [2, 1], padding: [1, 0]}
  - {op: upsample, name: up2, scale: 2, mode: bilinear}
  - {op: relu6}
  - {op: upsample, name: up3, scale: 3}
  - {op: subsample, stride: 3}
  - {op: channel_pad, before: 1, after: 2}
  - {op: conv, name: same, out: 6, kernel: 2, padding: same}
  - {op: conv, name: side, inputs: c1, out: 6, kernel: 1, stride: 2}
  - {block: mixed, name: m, inputs: [same, side], args: {out: 6}}
  - {op: tanh}
  - {op: global_avgpool, name: gap}
  - {op: flatten, name: flat}
  - {op: bn, name: bn1d}
  - {op: softmax, name: sm}
  - {op: dropout, p: 0.3}
  - {op: linear, name: fc1, out: 12}
  - {op: sigmoid}
  - {op: identity}
  - {op: linear, name: fc2, out: classes, init: {weight: kaiming_uniform_fan_in}}
"""
OPS_MAP = """
version: 1
name: ops_map
input_shape: [3, 17, 17]
body:
  - {op: conv, name: c1, out: 8, kernel: 3, stride: 2, padding: 1, bias: false}
  - {op: bn, name: b1, affine: false}
  - {op: conv_transpose, name: ct, out: 4, kernel: 2, stride: 3, bias: false}
  - {op: global_maxpool, name: gmax, keepdims: true}
  - {op: upsample, name: up, scale: 4}
  - {op: conv_transpose, name: ct2, out: 3, kernel: 4, stride: 2, padding: 1}
  - {op: softmax}
"""


# one op (or a few) whose output is the model's output, so each semantic trap shows
SINGLE_OPS: dict[str, list[str]] = {
    "conv_stride2_pad1": ["{op: conv, out: 5, kernel: 3, stride: 2, padding: 1}"],
    "conv_asymmetric_kernel": [
        "{op: conv, out: 5, kernel: [3, 5], stride: [2, 1], padding: [1, 2], bias: false}"
    ],
    "conv_dilated_same": ["{op: conv, out: 5, kernel: 3, padding: 2, dilation: 2}"],
    "conv_grouped": ["{op: conv, out: 6, kernel: 3, padding: 1, groups: 2}"],
    "conv_same_even_kernel": ["{op: conv, out: 5, kernel: 2, padding: same}"],
    "conv_transpose_pad_output_pad": [
        "{op: conv_transpose, out: 5, kernel: 3, stride: 2, padding: 1, output_padding: 1}"
    ],
    "conv_transpose_kernel_below_stride": [
        "{op: conv_transpose, out: 5, kernel: 2, stride: 3, bias: false}"
    ],
    "conv_transpose_dilated": ["{op: conv_transpose, out: 3, kernel: 3, dilation: 2}"],
    "bn": ["{op: bn, eps: 0.01, momentum: 0.3}"],
    "bn_not_affine": ["{op: bn, affine: false}"],
    "maxpool_padding_is_minus_inf": ["{op: maxpool, kernel: 3, stride: 2, padding: 1}"],
    "maxpool_rectangular": ["{op: maxpool, kernel: [3, 2], stride: [2, 1], padding: [1, 0]}"],
    "avgpool_count_include_pad": ["{op: avgpool, kernel: 3, stride: 2, padding: 1}"],
    "avgpool_exclude_pad": [
        "{op: avgpool, kernel: 3, stride: 2, padding: 1, count_include_pad: false}"
    ],
    "avgpool_plain": ["{op: avgpool, kernel: 2}"],
    "upsample_nearest": ["{op: upsample, scale: 2}"],
    "upsample_bilinear": ["{op: upsample, scale: 3, mode: bilinear}"],
    "upsample_bilinear_align_corners": [
        "{op: upsample, scale: 2, mode: bilinear, align_corners: true}"
    ],
    "zeropad_crop": [
        "{op: zeropad, padding: [0, 1, 2, 3]}",
        "{op: crop, crop: [1, 0, 2, 1]}",
    ],
    "subsample_channel_pad": [
        "{op: subsample, stride: 2}",
        "{op: channel_pad, before: 1, after: 2}",
    ],
    "crop_to_pad_to": [
        "{op: conv, name: a, out: 4, kernel: [2, 4]}",
        "{op: pad_to, name: p, inputs: [a, input]}",
        "{op: crop_to, name: c, inputs: [input, a]}",
        "{op: zeropad, name: z, inputs: c, padding: [1, 0, 1, 2]}",
        "{op: concat, inputs: [p, z]}",
    ],
    "activations": [
        "{op: leaky_relu, slope: 0.2}",
        "{op: gelu}",
        "{op: silu}",
        "{op: relu6}",
        "{op: sigmoid}",
        "{op: tanh}",
        "{op: identity}",
        "{op: dropout, p: 0.5}",
    ],
    "hard_activations": ["{op: hardswish}", "{op: hardsigmoid}"],
    "depthwise_conv2d": [
        "{op: conv, out: 4, kernel: 3, stride: 2, padding: same, groups: 4, depthwise: true}",
        "{op: conv, out: 4, kernel: [3, 5], padding: [1, 2], groups: 4, depthwise: true}",
    ],
    "mul_channel_gate_and_spatial_map": [
        "{op: global_avgpool, name: pooled}",
        "{op: conv, name: gate, out: 4, kernel: 1}",
        "{op: sigmoid, name: g}",
        "{op: mul, name: scaled, inputs: [g, input]}",
        "{op: conv, name: spatial, out: 1, kernel: 3, padding: 1}",
        "{op: mul, inputs: [scaled, spatial]}",
    ],
    "maxpool_ceil_mode": ["{op: maxpool, kernel: 3, stride: 2, ceil_mode: true}"],
    "maxpool_ceil_mode_padded": [
        "{op: maxpool, kernel: 3, stride: 2, padding: 1, ceil_mode: true}"
    ],
    "avgpool_ceil_mode": ["{op: avgpool, kernel: 2, stride: 2, ceil_mode: true}"],
    "pools_ceil_mode_last_window_starts_in_pad": [  # 11 + 2 pad: a 7th window would start past
        "{op: maxpool, kernel: 2, stride: 2, padding: 1, ceil_mode: true}",
        "{op: avgpool, kernel: 2, stride: 2, padding: 1, ceil_mode: true}",
    ],
    "avgpool_ceil_mode_padded": [
        "{op: avgpool, kernel: 3, stride: 2, padding: 1, ceil_mode: true}"
    ],
    "avgpool_ceil_mode_exclude_pad": [
        "{op: avgpool, kernel: 3, stride: 2, padding: 1, count_include_pad: false, ceil_mode: true}"
    ],
    "channel_and_spatial_reductions": [
        "{op: mean, axis: channels, name: cm}",
        "{op: max, axis: channels, name: cx, inputs: input}",
        "{op: mean, axis: spatial, name: sm, inputs: input}",
        "{op: max, axis: spatial, name: sx, inputs: input}",
        "{op: mul, name: gated, inputs: [input, cm]}",
        "{op: mul, name: gated2, inputs: [gated, cx]}",
        "{op: mul, name: gated3, inputs: [gated2, sm]}",
        "{op: mul, inputs: [gated3, sx]}",
    ],
    "reuse_shared_conv_and_bn": [
        "{op: conv, name: c, out: 4, kernel: 3, padding: 1}",
        "{op: bn, name: b}",
        "{op: relu, name: r}",
        "{reuse: c}",
        "{reuse: b}",
        "{reuse: r, name: again}",
        "{op: add, inputs: [r, again]}",
    ],
    "norms_and_layer_scale": [
        "{op: conv, out: 6, kernel: 3, padding: 1}",
        "{op: layernorm, eps: 1.0e-6}",
        "{op: groupnorm, groups: 3}",
        "{op: layer_scale, value: 0.5}",
        "{op: drop_path, p: 0.3}",
    ],
    "channels_last_mlp": [
        "{op: permute, to: channels_last}",
        "{op: layernorm}",
        "{op: linear, out: 8}",
        "{op: gelu}",
        "{op: linear, out: 4}",
        "{op: layer_scale, value: 2.0}",
        "{op: permute, to: channels_first}",
        "{op: add, inputs: [permute_1, input]}",
    ],
    "vector_norms": [
        "{op: global_avgpool, keepdims: false}",
        "{op: layernorm}",
        "{op: layer_scale, value: 3.0}",
        "{op: drop_path, p: 0.5}",
        "{op: linear, out: 3}",
    ],
    "preprocessing": [
        "{op: rescale, scale: 0.00392156862745098}",
        "{op: normalize, mean: [0.4, 0.5, 0.6, 0.1], variance: [0.05, 0.06, 0.07, 2.0]}",
        "{op: rescale, scale: [2.0, 1.0, 0.5, 3.0], offset: -1.0}",
        "{op: normalize, mean: 0.5, variance: 4.0}",
    ],
    "softmax_over_channels": ["{op: softmax}"],
    "global_max_keepdims": ["{op: global_maxpool, keepdims: true}"],
    "global_avg_linear": [
        "{op: global_avgpool, keepdims: false}",
        "{op: bn}",
        "{op: linear, out: 3}",
    ],
}


@pytest.mark.parametrize("case", list(SINGLE_OPS))
def test_op_computes_what_torch_computes(case: str, write_spec: Callable[..., Path]) -> None:
    body = "\n".join(f"  - {node}" for node in SINGLE_OPS[case])
    text = f"version: 1\nname: single\ninput_shape: [4, 10, 11]\nbody:\n{body}\n"
    spec = rescompiler.load_spec(write_spec(text))
    source = torch_model(spec)
    model = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, model)
    x = random_input(list(spec.input_shape))
    expected = torch_output(source, x)
    assert expected.shape[1:] == nhwc(spec.graph.shape_of(spec.graph.output))  # as inferred
    assert_close(run(model, x), expected)


@pytest.mark.parametrize("text", [OPS_VECTOR, OPS_MAP], ids=["vector", "map"])
def test_every_op_computes_what_torch_computes(
    text: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = rescompiler.load_spec(write_spec(text))
    source = torch_model(spec)
    generated = rescompiler.emit(spec, "keras")
    model = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, model)
    x = random_input(list(spec.input_shape))
    assert_close(run(model, x), torch_output(source, x))
    path = tmp_path / "ops.keras"
    model.save(path)
    assert np.array_equal(run(keras.models.load_model(path), x), run(model, x))
    for helper in ("PaddedMaxPooling2D", "PaddedAveragePooling2D", "BilinearUpSampling2D"):
        assert (helper in generated) == (text is OPS_VECTOR), helper


def test_spatial_flatten_permutes_the_next_layers_weights(
    write_spec: Callable[..., Path],
) -> None:
    torch = pytest.importorskip("torch")
    spec = rescompiler.load_spec(
        write_spec(
            """
            version: 1
            name: flat
            input_shape: [3, 5, 4]
            body:
              - {op: conv, name: conv, out: 4, kernel: 3, padding: 1}
              - {op: flatten, name: flatten}
              - {op: bn, name: bn}
              - {op: relu, name: relu}
              - {op: linear, name: fc, out: 6}
            """
        )
    )

    def reference() -> Any:  # the torch backend sizes layers after a spatial flatten wrongly
        nn = torch.nn
        layers = [nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.BatchNorm1d(80), nn.ReLU()]
        names = ["conv", "flatten", "bn", "relu", "fc"]
        modules = zip(names, [*layers, nn.Linear(80, 6)], strict=True)
        return nn.Sequential(OrderedDict(modules)).eval()

    torch.manual_seed(0)
    source = reference()
    with torch.no_grad():
        source.bn.running_mean.uniform_(-0.5, 0.5)
        source.bn.weight.uniform_(0.5, 1.5)
    model = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, model)
    x = random_input([3, 5, 4])
    expected = torch_output(source, x)
    assert_close(run(model, x), expected)
    back = reference()
    rescompiler.transfer_weights(spec, model, back)
    assert np.array_equal(torch_output(back, x), expected)


UNUSUAL = """
version: 1
name: unusual
input_shape: [3, 16, 16]
params:
  n: 2
  width: 8
  use_extra: true
  depths: [2, 3]
  pair: 0  # the block function pair becomes pair_1
let:
  double: width * 2
defaults:
  bn: {momentum: 0.05}
blocks:
  unit:
    params: {stride: 1, out: null, tag: 0, name: 0}  # required after defaulted; name taken
    let:
      mid: out // 2
    body:
      - group: main
        names: {keras: "m{tag}"}
        body:
          - {op: conv, out: mid, kernel: 3, stride: stride, padding: 1}
          - {op: bn, when: use_extra}
          - {op: relu}
          - group: inner
            body:
              - {op: conv, out: out, kernel: 1}
      - {op: conv, name: proj, inputs: input, out: out, kernel: 1, stride: stride,
         when: stride != 1 or in_channels != out, names: {keras: "proj{tag}"}}
      - {op: add, inputs: [main, proj]}
      - {op: relu, name: act, otherwise: proj,
         when: "tag >= 0 or (out > 100000 and mid > 1000000) or (stride > 5 and tag < -1000)
                or (in_channels > 123456789 and out < -123456789)"}
  pair:
    inputs: [a, b]
    params: {k: 1}
    body:
      - {op: conv, name: c, inputs: b, out: double, kernel: k}
      - {op: add, inputs: [a, c]}
  wrapper:
    params: {out: null}
    body:
      - {block: unit, name: u, repeat: n + 1, child_name: "x{i}", args: {out: out, tag: i + n}}
      - group: post
        when: out > 4
        body:
          - {block: unit, args: {out: out}}
          - {op: identity}
body:
  - {op: conv, name: stem, out: double, kernel: 3, padding: 1}
  - {block: unit, name: s1, repeat: "depths[0]",
     args: {out: double, stride: "2 if i == 0 else 1", tag: i}}
  - {block: pair, name: p, repeat: "depths[1]", inputs: [s1, s1], names: {keras: "pp{i}_{n}"}}
  - {block: wrapper, name: w, args: {out: double}}
  - {op: add, name: merged, inputs: [w, s1, p]}
  - {op: global_avgpool, keepdims: false}
  - {op: linear, out: n}
"""


@pytest.mark.parametrize("name", ["unusual", "u" * 64])
def test_unusual_specs_emit_ruff_clean_code_with_the_ir_names(
    name: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """Stages reading ``n`` beside a model param ``n``, multi-input stages whose input lives on,
    conditional groups and nodes, ``otherwise``, name templates, blocks calling blocks, long
    conditions and names, params named like a block or ``name``."""
    path = write_spec(UNUSUAL.replace("name: unusual", f"name: {name}"))
    source = rescompiler.emit(rescompiler.load_spec(path), "keras")
    target = tmp_path / "unusual_keras.py"
    target.write_text(source)
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--config", config, str(target)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert "def pair_1(" in source
    assert "    prefix: str,\n" in source
    module: Any = type(sys)(f"{name}_keras")
    exec(compile(source, str(target), "exec"), module.__dict__)
    for overrides in ({}, {"n": 3, "use_extra": False}, {"width": 2, "depths": [1, 1]}):
        spec = rescompiler.load_spec(path, overrides)
        built = rescompiler.build(spec, "keras")
        generated = module.build(**overrides)
        names = [layer.name for layer in built.layers]
        assert names == [layer.name for layer in generated.layers]
        layers = {layer.name: layer for layer in built.layers}
        for node in spec.graph.nodes:
            assert tuple(layers[node.names["keras"]].output.shape[1:]) == nhwc(node.shape)
        assert built.count_params() == spec.graph.params + spec.graph.stats


# -- initialisers ------------------------------------------------------------------------------
def test_initialisers_draw_from_torch_distributions() -> None:
    if not spec_path("resnet50").exists():
        pytest.skip("specs/resnet50.yaml is not in the library yet")
    keras.utils.set_random_seed(0)
    model = rescompiler.build(load("resnet50", input_shape=[3, 32, 32]), "keras")
    kernel = keras.ops.convert_to_numpy(
        model.get_layer("layer1_0_conv2").kernel
    )  # kaiming_normal, fan_out
    expected = (2 / (3 * 3 * 64)) ** 0.5
    assert abs(kernel.std() - expected) <= 0.05 * expected
    assert np.abs(kernel).max() > 2.5 * expected  # untruncated, as torch's normal_
    fc = model.get_layer("fc")  # torch's Linear default: U(±1/sqrt(fan_in)) for both
    bound = 1 / 2048**0.5
    for weights in map(keras.ops.convert_to_numpy, (fc.kernel, fc.bias)):
        assert np.abs(weights).max() <= bound
        assert abs(weights.std() - bound / 3**0.5) <= 0.1 * bound
    assert np.all(keras.ops.convert_to_numpy(model.get_layer("layer1_0_bn3").gamma) == 1)
    zero = rescompiler.build(
        load("resnet50", input_shape=[3, 32, 32], zero_init_residual=True), "keras"
    )
    assert np.all(keras.ops.convert_to_numpy(zero.get_layer("layer1_0_bn3").gamma) == 0)
    bn = zero.get_layer("layer1_0_bn1")
    assert bn.epsilon == 1e-5 and bn.momentum == pytest.approx(0.9)


def test_depthwise_conv_is_a_depthwise_conv2d_drawing_as_torch(
    write_spec: Callable[..., Path],
) -> None:
    """``depthwise: true``: Keras' DepthwiseConv2D (kernel kh×kw×C×1, keras.applications'
    MobileNet layout) whose initialisers draw as torch's (C, 1, kh, kw) weight does, inside a
    group named "" (no prefix of its own); a conv that is not depthwise is refused."""
    text = """
        version: 1
        name: depthwise
        input_shape: [64, 16, 16]
        blocks:
          unit:
            body:
              - group: inner
                names: {keras: ""}
                body:
                  - {op: conv, name: dw, out: 64, kernel: 3, padding: 1, groups: 64,
                     depthwise: true, init: {weight: kaiming_normal_fan_out}}
                  - {op: bn, name: bn}
              - {op: conv, name: dw2, out: 64, kernel: 3, stride: 2, padding: same, groups: 64,
                 depthwise: true, init: {weight: torch_default, bias: torch_default}}
        body:
          - {block: unit, name: block_1}
        """
    spec = rescompiler.load_spec(write_spec(text))
    assert [node.names["keras"] for node in spec.graph.nodes] == [
        "block_1_dw",
        "block_1_bn",
        "block_1_dw2",
    ]
    keras.utils.set_random_seed(0)
    model = rescompiler.build(spec, "keras")
    dw, dw2 = model.get_layer("block_1_dw"), model.get_layer("block_1_dw2")
    assert type(dw).__name__ == type(dw2).__name__ == "DepthwiseConv2D"
    assert tuple(dw.kernel.shape) == (3, 3, 64, 1) and dw2.padding == "same"
    kernel = keras.ops.convert_to_numpy(dw.kernel)  # torch: fan-out C·kh·kw, not kh·kw
    expected = (2 / (64 * 3 * 3)) ** 0.5
    assert abs(kernel.std() - expected) <= 0.1 * expected
    bound = 1 / 3  # torch's default: U(±1/sqrt(fan_in)), fan-in kh·kw, for weight and bias
    for weights in map(keras.ops.convert_to_numpy, (dw2.kernel, dw2.bias)):
        assert np.abs(weights).max() <= bound and weights.std() > 0.4 * bound
    source = rescompiler.emit(spec, "keras")
    assert 'depthwise_initializer=depthwise_initializer("kaiming_normal_fan_out")' in source
    # the inference build folds the BN into a DepthwiseConv2D, and saves its config
    from rescompiler.backends.keras.fold import load_plain_weights

    randomize_bn(model)
    fast = rescompiler.build(spec, "keras", optimize="inference")
    assert type(fast.get_layer("block_1_dw")).__name__ == "FoldedDepthwiseConv2D"
    load_plain_weights(fast, model)
    x = random_input(list(spec.input_shape))
    assert_close(run(fast, x), run(model, x))
    clone = keras.Model.from_config(fast.get_config())
    assert clone.get_layer("block_1_dw").folded_bn == "block_1_bn"
    bad = write_spec(text.replace("groups: 64,\n                 depthwise", "depthwise"))
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(bad)
    assert info.value.path == "blocks.unit.body[1].depthwise"
    assert "groups, out and the input channels equal" in info.value.message
    empty = write_spec(text.replace("name: bn}", "name: bn, names: {keras: ''}}"))
    with pytest.raises(rescompiler.SpecError, match="only a group's Keras name may be empty"):
        rescompiler.load_spec(empty)


# -- errors ------------------------------------------------------------------------------------
def test_grouped_transposed_conv_is_reported(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        """
        version: 1
        name: bad
        input_shape: [4, 8, 8]
        body:
          - {op: conv_transpose, out: 4, kernel: 2, stride: 2, groups: 2}
        """
    )
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.emit(rescompiler.load_spec(path), "keras")
    assert info.value.path == "body[0].groups"
    assert "Conv2DTranspose" in info.value.message


def test_params_may_not_hide_module_names(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        """
        version: 1
        name: hiding
        input_shape: [3, 8, 8]
        params: {layers: 2}
        body:
          - {op: conv, out: layers, kernel: 1}
        """
    )
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.emit(rescompiler.load_spec(path), "keras")
    assert info.value.path == "params.layers"


def test_helper_layer_names_may_not_take_a_node_name(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        """
        version: 1
        name: clash
        input_shape: [3, 8, 8]
        body:
          - {op: conv, name: conv, out: 4, kernel: 3, stride: 2, padding: 1}
          - {op: relu, name: conv_pad}
        """
    )
    with pytest.raises(rescompiler.SpecError, match="conv_pad"):
        rescompiler.emit(rescompiler.load_spec(path), "keras")
