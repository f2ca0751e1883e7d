"""specs/mobilenet_v2_keras.yaml, mobilenet_v3_large_keras.yaml and mobilenet_v3_small_keras.yaml
reproduce keras.applications' MobileNetV2, MobileNetV3Large and MobileNetV3Small: same parameter
count, every weighted layer of the reference found by name with the same type and weight shapes,
equal outputs once the reference's weights (with non-trivial BatchNorm statistics) are copied,
and torch and Keras, built and generated, computing the same function (``rescompile --verify``).

keras.applications pads a strided depthwise conv with a ZeroPadding2D of ``correct_pad`` before
a ``valid`` conv; the specs give the conv TF's ``same`` padding, which pads the same at every
input size, so those ZeroPadding2D layers are the reference's only named layers ours lacks. The
layers keras leaves unnamed (ReLUs, activations, pooling, ...) are named by a per-process
counter; ours have names of their own. Each reference is built once, at 64×64.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from library import REFERENCE_PARAMS, spec_path

import rescompiler

SMALL = 64
APPLICATIONS = {
    "mobilenet_v2_keras": "MobileNetV2",
    "mobilenet_v3_large_keras": "MobileNetV3Large",
    "mobilenet_v3_small_keras": "MobileNetV3Small",
}
# keras.applications' count_params(), BatchNorm statistics included (DESIGN.md's figures)
COUNTS = {
    "mobilenet_v2_keras": 3_538_984,
    "mobilenet_v3_large_keras": 5_507_432,
    "mobilenet_v3_small_keras": 2_554_968,
}
# weighted layers: stem conv and BN; per block 6 (4 without expansion) plus 2 per SE; the last
# conv and BN; the head (V2: one Dense; V3: two 1x1 convs)
WEIGHTED = {
    "mobilenet_v2_keras": 2 + 4 + 16 * 6 + 2 + 1,
    "mobilenet_v3_large_keras": 2 + 4 + 14 * 6 + 8 * 2 + 2 + 2,
    "mobilenet_v3_small_keras": 2 + 4 + 10 * 6 + 9 * 2 + 2 + 2,
}
# keras' names for layers built without a name, from a per-process counter (re_lu_7, ...)
AUTO_NAMES = {
    "InputLayer": "input_layer",
    "ReLU": "re_lu",
    "Activation": "activation",
    "Rescaling": "rescaling",
    "GlobalAveragePooling2D": "global_average_pooling2d",
    "Dropout": "dropout",
    "Flatten": "flatten",
}


def close(ref: np.ndarray, ours: np.ndarray) -> None:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5."""
    assert ref.shape == ours.shape
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    diff = float(np.abs(ref - ours).max())
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"


def auto_named(layer: Any) -> bool:
    """Keras named the layer itself (the reference passed no name)."""
    base = AUTO_NAMES.get(type(layer).__name__)
    return base is not None and re.fullmatch(rf"{base}(_\d+)?", layer.name) is not None


def randomize_bn(model: Any, rng: np.random.Generator) -> None:
    """Non-trivial BN parameters and statistics (fresh ones are 1, 0, 0, 1)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            for variable, low, high in (
                (layer.gamma, 0.5, 1.5),
                (layer.beta, -0.2, 0.2),
                (layer.moving_mean, -0.2, 0.2),
                (layer.moving_variance, 0.5, 1.5),
            ):
                variable.assign(rng.uniform(low, high, n).astype("float32"))


@pytest.fixture(scope="module", params=list(APPLICATIONS))
def case(request: pytest.FixtureRequest) -> tuple[str, rescompiler.Spec, Any, Any, np.ndarray]:
    """A spec, its keras.applications model with random BN parameters and statistics, our
    Keras build holding the reference's weights, and a batch of what the reference takes:
    pixels in [0, 255) (MobileNetV3 rescales them itself), for MobileNetV2 through its
    preprocess_input (to [-1, 1])."""
    keras = pytest.importorskip("keras")
    name = request.param
    spec = rescompiler.load_spec(spec_path(name), overrides={"input_shape": [3, SMALL, SMALL]})
    assert spec.model.reference == f"keras.applications.{APPLICATIONS[name]}"
    reference = getattr(keras.applications, APPLICATIONS[name])(
        weights=None, input_shape=(SMALL, SMALL, 3)
    )
    rng = np.random.default_rng(1)
    randomize_bn(reference, rng)
    ours = rescompiler.build(spec, backend="keras")
    for layer in reference.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    pixels = rng.uniform(0, 255, (2, SMALL, SMALL, 3)).astype("float32")
    if name == "mobilenet_v2_keras":
        pixels = keras.applications.mobilenet_v2.preprocess_input(pixels)
        assert -1 <= pixels.min() < pixels.max() <= 1
    return name, spec, reference, ours, pixels


def test_counts_equal_keras_applications(case: tuple[Any, ...]) -> None:
    name, spec, reference, ours, _ = case
    assert REFERENCE_PARAMS[name] == (COUNTS[name], True)
    assert reference.count_params() == ours.count_params() == COUNTS[name]
    assert spec.graph.params + spec.graph.stats == COUNTS[name]


def test_every_weighted_layer_is_found_by_name_with_its_shapes(case: tuple[Any, ...]) -> None:
    keras = pytest.importorskip("keras")
    name, _, reference, ours, _ = case
    mine = {layer.name: layer for layer in ours.layers}
    theirs = {layer.name: layer for layer in reference.layers}
    weighted = {n for n, layer in theirs.items() if layer.weights}
    assert len(weighted) == WEIGHTED[name]
    missing = sorted(weighted - set(mine))
    assert not missing, f"keras layers our model lacks: {missing}"
    kinds = {
        n: (
            type(mine[n]).__name__,
            type(theirs[n]).__name__,
            [tuple(w.shape) for w in mine[n].weights],
            [tuple(w.shape) for w in theirs[n].weights],
        )
        for n in weighted
    }
    wrong = {n: kind for n, kind in kinds.items() if kind[0] != kind[1] or kind[2] != kind[3]}
    assert not wrong, f"layer types or weight shapes (ours, keras) differ: {wrong}"
    extra = sorted(n for n, layer in mine.items() if layer.weights and n not in weighted)
    assert not extra, f"weighted layers keras does not have: {extra}"
    # every layer keras names, but its ZeroPadding2D before a strided depthwise conv, which
    # our depthwise conv does itself: TF's "same" pads as correct_pad does
    layers = reference.layers
    pads = [layer for layer in layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert len(pads) == 4  # one per stage that strides
    for pad in pads:
        depthwise = layers[layers.index(pad) + 1]
        assert isinstance(depthwise, keras.layers.DepthwiseConv2D)
        assert depthwise.padding == "valid" and depthwise.strides == (2, 2)
        assert mine[depthwise.name].padding == "same" and mine[depthwise.name].strides == (2, 2)
    named = {n for n, layer in theirs.items() if not auto_named(layer)}
    unnamed = sorted(named - set(mine) - {pad.name for pad in pads})
    assert not unnamed, f"keras layers without a layer of that name: {unnamed}"


def test_outputs_equal_keras_applications(case: tuple[Any, ...]) -> None:
    _, _, reference, ours, pixels = case
    ref, got = (np.asarray(model(pixels, training=False)) for model in (reference, ours))
    close(ref, got)
    # a random network's softmax over 1,000 classes is nearly flat (every output near 1e-3),
    # so the bound above is loose; the log-probabilities are the logits up to a shift
    assert float(np.ptp(np.log(ref))) > 0.1
    close(np.log(ref), np.log(got))


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_verify_torch_and_keras_built_and_generated(name: str) -> None:
    """``rescompile --verify`` at 32×32 (keras.applications' smallest), on the logits."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from rescompiler.verifier import verify

    spec = rescompiler.load_spec(
        spec_path(name), overrides={"input_shape": [3, 32, 32], "softmax": False}
    )
    report = verify(spec)
    assert report.ok, report.to_text()
    assert len(report.pairs) == 6 and report.output_shape == [1000]
