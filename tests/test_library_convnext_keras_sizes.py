"""specs/convnext_{small,base,large,xlarge}_keras.yaml are params of convnext_tiny_keras
(depths, dims and keras_name, Keras' model name that prefixes every layer name) and reproduce
keras.applications.ConvNeXtSmall/Base/Large/XLarge: the depths and widths of keras'
MODEL_CONFIGS, the model name as the layer prefix, keras' parameter count (the analytic count of
each spec against the figures measured from keras.applications, weights=None, include_top and
include_preprocessing on). Small is checked against a real keras.applications build at 64×64:
its count_params(), every weighted layer found by name with equal weight shapes, and equal
outputs once its weights are copied (the rest are too big to build in the suite's budget)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from library import REFERENCE_PARAMS, flat_layers, spec_path

import rescompiler

# spec -> (keras.applications function, its MODEL_CONFIGS key, keras' count_params())
SIZES = {
    "convnext_small_keras": ("ConvNeXtSmall", "small", 50_223_688),
    "convnext_base_keras": ("ConvNeXtBase", "base", 88_591_464),
    "convnext_large_keras": ("ConvNeXtLarge", "large", 197_767_336),
    "convnext_xlarge_keras": ("ConvNeXtXLarge", "xlarge", 350_196_968),
}
SMALL = 64


def load(name: str, size: int = 32) -> rescompiler.Spec:
    return rescompiler.load_spec(spec_path(name), overrides={"input_shape": [3, size, size]})


def close(ref: np.ndarray, ours: np.ndarray) -> float:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5; returns max|a-b|."""
    assert ref.shape == ours.shape
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    diff = float(np.abs(ref - ours).max())
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"
    return diff


@pytest.mark.parametrize("name", list(SIZES))
def test_count_equals_keras_applications(name: str) -> None:
    application, _, count = SIZES[name]
    spec = load(name)
    assert spec.model.reference == f"keras.applications.{application}"
    assert spec.graph.params + spec.graph.stats == count
    assert REFERENCE_PARAMS[name] == (count, True)


@pytest.mark.parametrize("name", list(SIZES))
def test_params_are_keras_config_and_name(name: str) -> None:
    """depths and dims as keras' MODEL_CONFIGS, keras_name as the application's default model
    name, every Keras layer name of the spec prefixed with it, and no other change to tiny's."""
    keras = pytest.importorskip("keras")
    from keras.src.applications.convnext import MODEL_CONFIGS

    application, size, _ = SIZES[name]
    spec = load(name)
    config = MODEL_CONFIGS[size]
    assert spec.params["depths"] == config["depths"]
    assert spec.params["dims"] == config["projection_dims"]
    model_name = inspect.signature(getattr(keras.applications, application)).parameters["name"]
    assert spec.params["keras_name"] == model_name.default
    tiny = load("convnext_tiny_keras")
    changed = {k for k in spec.params if spec.params[k] != tiny.params[k]}
    assert changed <= {"depths", "dims", "keras_name"}
    names = [node.names["keras"] for node in spec.graph.nodes]
    assert all(n.startswith(f"{model_name.default}_") for n in names), names[:3]
    assert len(set(names)) == len(names)
    weighted = [node for node in spec.graph.nodes if node.params]
    # stem conv + layernorm, 5 per block (with the layer scale), 3 downsamplings, head
    assert len(weighted) == 2 + 5 * sum(config["depths"]) + 3 * 2 + 2


@pytest.fixture(scope="module")
def small() -> tuple[Any, Any, np.ndarray]:
    """keras.applications' ConvNeXtSmall, our Keras build holding its weights, and a batch of
    pixels in [0, 255)."""
    keras = pytest.importorskip("keras")
    spec = load("convnext_small_keras", SMALL)
    reference = keras.applications.ConvNeXtSmall(
        weights=None, include_top=True, include_preprocessing=True, input_shape=(SMALL, SMALL, 3)
    )
    ours = rescompiler.build(spec, backend="keras")
    layers = {layer.name: layer for layer in flat_layers(ours)}
    for layer in flat_layers(reference):
        if layer.weights and layer.name in layers:
            layers[layer.name].set_weights(layer.get_weights())
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SMALL, SMALL, 3)).astype("float32")
    return reference, ours, pixels


def test_small_count_params_equal_keras(small: tuple[Any, ...]) -> None:
    reference, ours, _ = small
    assert reference.count_params() == SIZES["convnext_small_keras"][2]
    assert ours.count_params() == reference.count_params()


def test_small_every_weighted_layer_is_found_by_name_with_its_shapes(
    small: tuple[Any, ...],
) -> None:
    reference, ours, _ = small
    mine = {layer.name: layer for layer in flat_layers(ours)}
    theirs = {layer.name: layer for layer in flat_layers(reference)}
    weighted = {name for name, layer in theirs.items() if layer.weights}
    assert len(weighted) == 2 + 36 * 5 + 3 * 2 + 2  # stem, blocks, downsampling, head
    missing = sorted(weighted - set(mine))
    assert not missing, f"keras layers our model lacks: {missing}"
    wrong = {
        name: (
            [tuple(w.shape) for w in mine[name].weights],
            [tuple(w.shape) for w in layer.weights],
        )
        for name, layer in theirs.items()
        if name in weighted
    }
    wrong = {name: pair for name, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, f"weight shapes (ours, keras) differ: {wrong}"
    extra = sorted(name for name, layer in mine.items() if layer.weights and name not in weighted)
    assert not extra, f"weighted layers keras does not have: {extra}"
    unnamed = sorted(set(theirs) - set(mine) - {reference.layers[0].name})
    assert not unnamed, f"keras layers without a layer of that name: {unnamed}"


def test_small_outputs_equal_keras_applications(small: tuple[Any, ...]) -> None:
    """The softmax output and, before it, the head's LayerNorm (one Dense before the logits),
    from one call of each model (an eager call of ~370 layers costs seconds)."""
    keras = pytest.importorskip("keras")
    reference, ours, pixels = small
    head = "convnext_small_head_layernorm"
    outputs = [
        keras.Model(model.input, [model.get_layer(head).output, model.output])(
            pixels, training=False
        )
        for model in (reference, ours)
    ]
    for ref, mine in zip(*outputs, strict=True):
        close(np.asarray(ref), np.asarray(mine))
