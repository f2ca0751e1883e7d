"""specs/convnext_tiny_keras.yaml reproduces keras.applications.ConvNeXtTiny (with its
preprocessing Normalization): same parameter count, every weighted layer of the reference (its
nested Sequential stem and downsampling blocks flattened) found by name with the same weight
shapes, equal outputs once the reference's weights are copied, and the torch build of the same
spec computing the same function. The reference is built once, at 64×64 to stay quick."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from library import flat_layers, spec_path

import rescompiler

NAME = "convnext_tiny_keras"
PARAMS = 28_589_128  # keras' count_params(); the Normalization's mean and variance are constants
SMALL = 64


def close(ref: np.ndarray, ours: np.ndarray) -> None:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5."""
    assert ref.shape == ours.shape
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    diff = float(np.abs(ref - ours).max())
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"


@pytest.fixture(scope="module")
def models() -> tuple[rescompiler.Spec, Any, Any, np.ndarray]:
    """The spec, keras.applications' ConvNeXtTiny, our Keras build holding its weights, and
    a batch of pixels in [0, 255)."""
    keras = pytest.importorskip("keras")
    spec = rescompiler.load_spec(spec_path(NAME), overrides={"input_shape": [3, SMALL, SMALL]})
    assert spec.model.reference == "keras.applications.ConvNeXtTiny"
    reference = keras.applications.ConvNeXtTiny(
        weights=None, include_preprocessing=True, input_shape=(SMALL, SMALL, 3)
    )
    ours = rescompiler.build(spec, backend="keras")
    layers = {layer.name: layer for layer in flat_layers(ours)}
    for layer in flat_layers(reference):
        if layer.weights:
            layers[layer.name].set_weights(layer.get_weights())
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SMALL, SMALL, 3)).astype("float32")
    return spec, reference, ours, pixels


def test_counts_equal_keras_applications(models: tuple[Any, ...]) -> None:
    spec, reference, ours, _ = models
    assert reference.count_params() == PARAMS
    assert ours.count_params() == PARAMS
    assert spec.graph.params + spec.graph.stats == PARAMS


def test_every_weighted_layer_is_found_by_name_with_its_shapes(models: tuple[Any, ...]) -> None:
    _, reference, ours, _ = models
    mine = {layer.name: layer for layer in flat_layers(ours)}
    theirs = {layer.name: layer for layer in flat_layers(reference)}
    weighted = {name for name, layer in theirs.items() if layer.weights}
    assert len(weighted) == 2 + 18 * 5 + 3 * 2 + 2  # stem, blocks, downsampling, head
    missing = sorted(weighted - set(mine))
    assert not missing, f"keras layers our model lacks: {missing}"
    shapes = {
        name: (
            [tuple(w.shape) for w in mine[name].weights],
            [tuple(w.shape) for w in layer.weights],
        )
        for name, layer in theirs.items()
        if name in weighted
    }
    wrong = {name: pair for name, pair in shapes.items() if pair[0] != pair[1]}
    assert not wrong, f"weight shapes (ours, keras) differ: {wrong}"
    extra = sorted(name for name, layer in mine.items() if layer.weights and name not in weighted)
    assert not extra, f"weighted layers keras does not have: {extra}"
    # the unweighted layers too: the preprocessing, the GELUs, the identities, the pool
    unnamed = sorted(set(theirs) - set(mine) - {reference.layers[0].name})
    assert not unnamed, f"keras layers without a layer of that name: {unnamed}"
    assert type(mine["convnext_tiny_prestem_normalization"]).__name__ == "Normalization"


def test_outputs_equal_keras_applications(models: tuple[Any, ...]) -> None:
    keras = pytest.importorskip("keras")
    _, reference, ours, pixels = models
    close(np.asarray(reference(pixels, training=False)), np.asarray(ours(pixels, training=False)))
    # before the softmax too (the head's LayerNorm: the logits are one Dense further)
    head = "convnext_tiny_head_layernorm"
    ref_head = keras.Model(reference.input, reference.get_layer(head).output)
    our_head = keras.Model(ours.input, ours.get_layer(head).output)
    close(
        np.asarray(ref_head(pixels, training=False)), np.asarray(our_head(pixels, training=False))
    )


def test_torch_build_computes_the_same_function(models: tuple[Any, ...]) -> None:
    torch = pytest.importorskip("torch")
    spec, reference, ours, pixels = models
    model = rescompiler.build(spec, backend="torch").eval()
    rescompiler.transfer_weights(spec, ours, model)
    with torch.no_grad():
        out = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
    close(np.asarray(reference(pixels, training=False)), out)
