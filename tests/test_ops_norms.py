"""Language v2 for ConvNeXt and EfficientNet: layernorm/groupnorm, layer_scale, channels-last
maps (permute, linear over channels), drop_path with rates over the model's blocks
(block_index, block_count), numeric group names inside groups. Torch↔Keras agreement of each op
is in test_keras_backend.py (SINGLE_OPS); convnext_tiny against torchvision in
test_torch_backend.py and test_seeded_init.py."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler

ROOT = Path(__file__).resolve().parent.parent

DEPTH = """\
version: 1
name: depth
input_shape: [4, 6, 6]
params: {rate: 0.3, depths: [2, 3]}
blocks:
  res:
    params: {p: 0.0}
    body:
      - {op: conv, out: in_channels, kernel: 3, padding: 1}
      - {op: layer_scale, name: gamma, value: 0.5}
      - {op: drop_path, name: drop, p: p}
      - {op: add, inputs: [drop, input]}
body:
  - group: features
    body:
      - group: 0
        body: [{op: conv, out: 4, kernel: 1}, {op: groupnorm, groups: 2}]
      - {block: res, repeat: "depths[0]", args: {p: rate * block_index / block_count}}
      - group: 2
        body: [{op: layernorm}, {op: conv, out: 4, kernel: 1}]
      - {block: res, repeat: "depths[1]", args: {p: rate * block_index / block_count}}
"""


def load_module(source: str, tmp_path: Path, name: str) -> object:
    """Import emitted source from a file, as a user would."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_block_index_and_count_run_over_all_stages(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    spec = rescompiler.load_spec(write_spec(DEPTH))
    expected = [0.3 * k / 5 for k in range(5)]
    drops = [n.attrs["p"] for n in spec.graph.nodes if n.op == "drop_path"]
    assert drops == expected
    keys = set(rescompiler.build(spec, "torch").state_dict())
    assert {"features.0.0.weight", "features.0.1.weight", "features.2.0.weight"} <= keys
    assert {"features.1.0.gamma", "features.3.2.gamma"} <= keys  # layer_scale is a parameter
    source = rescompiler.emit(spec, "torch")
    generated = load_module(source, tmp_path, "depth_torch").build()  # type: ignore[attr-defined]
    for model in (rescompiler.build(spec, "torch"), generated):
        rates = [m.p for m in model.modules() if type(m).__name__ == "DropPath"]
        assert rates == expected
    # other params: the counters follow the stage sizes in the generated code too
    generated = load_module(source, tmp_path, "depth_torch2").build(depths=[1, 1])  # type: ignore[attr-defined]
    assert [m.p for m in generated.modules() if type(m).__name__ == "DropPath"] == [0.0, 0.15]


def test_keras_drop_path_rates_follow_the_counters(write_spec: Callable[..., Path]) -> None:
    pytest.importorskip("keras")
    spec = rescompiler.load_spec(write_spec(DEPTH))
    model = rescompiler.build(spec, "keras")
    rates = [layer.rate for layer in model.layers if layer.name.endswith("_drop")]
    assert rates == pytest.approx([0.3 * k / 5 for k in range(5)], abs=0)


def test_drop_path_trains_as_torchvision_stochastic_depth(write_spec: Callable[..., Path]) -> None:
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    text = "version: 1\nname: dp\ninput_shape: [3, 2, 2]\nbody:\n  - {op: drop_path, p: 0.3}\n"
    model = rescompiler.build(rescompiler.load_spec(write_spec(text)), "torch")
    reference = ops.StochasticDepth(0.3, "row")
    x = torch.randn(4000, 3, 2, 2)
    model.train()
    torch.manual_seed(5)
    ours = model(x)
    torch.manual_seed(5)
    assert torch.equal(ours, reference(x))  # the same draws, the same scaling
    kept = (ours != 0).flatten(1).all(1)
    dropped = (ours == 0).flatten(1).all(1)
    assert bool((kept | dropped).all())  # whole samples, never parts of one
    assert abs(dropped.float().mean().item() - 0.3) < 0.03  # ~14 sigma of 4000 draws: 0.0072
    assert torch.allclose(ours[kept], x[kept] / 0.7)
    model.eval()
    assert torch.equal(model(x), x)


def test_keras_drop_path_drops_whole_samples(write_spec: Callable[..., Path]) -> None:
    pytest.importorskip("keras")
    import keras
    import numpy as np

    text = "version: 1\nname: dp\ninput_shape: [3, 2, 2]\nbody:\n  - {op: drop_path, p: 0.3}\n"
    model = rescompiler.build(rescompiler.load_spec(write_spec(text)), "keras")
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).standard_normal((4000, 2, 2, 3)).astype("float32") + 5
    out = np.asarray(model(x, training=True))
    kept = (out != 0).reshape(4000, -1).all(1)
    dropped = (out == 0).reshape(4000, -1).all(1)
    assert (kept | dropped).all()
    assert abs(dropped.mean() - 0.3) < 0.03
    np.testing.assert_allclose(out[kept], x[kept] / 0.7, rtol=1e-6)
    assert np.array_equal(np.asarray(model(x, training=False)), x)


def test_layernorm_is_layernorm2d_on_maps_and_nn_layernorm_channels_last(
    write_spec: Callable[..., Path],
) -> None:
    torch = pytest.importorskip("torch")
    text = """\
    version: 1
    name: ln
    input_shape: [6, 3, 5]
    body:
      - {op: layernorm, name: first, eps: 1.0e-6}
      - {op: permute, to: channels_last}
      - {op: layernorm, name: last}
      - {op: linear, name: mlp, out: 6}
      - {op: permute, to: channels_first}
    """
    spec = rescompiler.load_spec(write_spec(text))
    source = rescompiler.emit(spec, "torch")
    assert "LayerNorm2d(in_channels, eps=1e-06)" in source
    assert "nn.LayerNorm(in_channels)" in source
    model = rescompiler.build(spec, "torch").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        x = torch.randn(2, 6, 3, 5)
        y = torch.nn.functional.layer_norm(
            x.permute(0, 2, 3, 1), (6,), model.first.weight, model.first.bias, 1e-6
        )
        y = model.mlp(torch.nn.functional.layer_norm(y, (6,), model.last.weight, model.last.bias))
        assert torch.equal(model(x), y.permute(0, 3, 1, 2))


def test_convnext_tiny_reads_like_torchvision() -> None:
    source = (ROOT / "generated" / "convnext_tiny_torch.py").read_text()
    assert "self.layer_scale = nn.Parameter(torch.full((in_channels, 1, 1), layer_scale))" in (
        source
    )
    assert "Permute((0, 2, 3, 1))" in source and "out = self.layer_scale * out" in source
    assert "block_count = depths[0] + depths[1] + depths[2] + depths[3]" in source


PREPROCESS = """\
version: 1
name: pre
input_shape: [3, 8, 8]
body:
  - {op: rescale, name: rescaling, scale: 0.00392156862745098}
  - {op: normalize, name: normalization, mean: [0.485, 0.456, 0.406], variance: [0.05, 0.06, 0.07]}
  - {op: conv, out: 4, kernel: 3}
"""


def test_preprocessing_layers_are_keras_s_and_torch_computes_the_same(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    import numpy as np

    spec = rescompiler.load_spec(write_spec(PREPROCESS))
    assert spec.graph.stats == 2 * 3 + 1  # Keras' Normalization: mean, variance and count
    model = rescompiler.build(spec, "keras")
    layer = model.get_layer("normalization")
    assert isinstance(layer, keras.layers.Normalization)
    assert [w.shape for w in layer.weights] == [(3,), (3,), ()]  # keras.applications' layout
    assert model.count_params() == spec.graph.params + spec.graph.stats
    torch_model = rescompiler.build(spec, "torch").eval()
    assert set(torch_model.state_dict()) >= {"normalization.mean", "normalization.variance"}
    rescompiler.transfer_weights(spec, torch_model, model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    got = np.asarray(model(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected)) + 1e-5
    path = tmp_path / "pre.keras"
    model.save(path)
    again = keras.models.load_model(path)
    assert np.array_equal(
        np.asarray(again(x.transpose(0, 2, 3, 1))), np.asarray(got.transpose(0, 2, 3, 1))
    )


def test_normalize_with_constants_holds_no_weights(write_spec: Callable[..., Path]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    text = PREPROCESS.replace(
        "variance: [0.05, 0.06, 0.07]}", "variance: [0.05, 0.06, 0.07], stored: false}"
    )
    spec = rescompiler.load_spec(write_spec(text))
    assert spec.graph.stats == 0  # keras.applications' ConvNeXt: Normalization(mean=, variance=)
    assert "normalization.mean" not in rescompiler.build(spec, "torch").state_dict()
    model = rescompiler.build(spec, "keras")
    assert model.get_layer("normalization").weights == []
    assert model.count_params() == spec.graph.params
