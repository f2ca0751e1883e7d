"""specs/efficientnet_*_keras.yaml reproduce keras.applications' EfficientNetB0...B7 and
EfficientNetV2B0...B3/S/M/L (weights=None, include_top=True): the parameter count of every
size (BN statistics and the stored Normalization included) equals keras' count_params(); for
B0 and V2-B0 every weighted layer of the reference is found by name with the same weight
shapes, the outputs are equal once the reference's weights are copied (BN statistics made
non-trivial), and the torch build of the same spec computes the same function; under one
seed their Keras builds draw keras.applications' initial weights exactly. The references
are built once each, on small inputs of odd and even sizes (Keras' strided `same` padding
depends on the size's parity).
tests/test_same_padding_and_chr.py checks the language pieces these specs need."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from library import flat_layers, spec_path

import rescompiler

# keras' count_params() of each reference (weights=None, include_top=True), measured with
# keras 3 (tensorflow-cpu 2.21): the counts do not depend on the input size
KERAS_PARAMS = {
    "efficientnet_b0_keras": ("EfficientNetB0", 5_330_571),
    "efficientnet_b1_keras": ("EfficientNetB1", 7_856_239),
    "efficientnet_b2_keras": ("EfficientNetB2", 9_177_569),
    "efficientnet_b3_keras": ("EfficientNetB3", 12_320_535),
    "efficientnet_b4_keras": ("EfficientNetB4", 19_466_823),
    "efficientnet_b5_keras": ("EfficientNetB5", 30_562_527),
    "efficientnet_b6_keras": ("EfficientNetB6", 43_265_143),
    "efficientnet_b7_keras": ("EfficientNetB7", 66_658_687),
    "efficientnet_v2_b0_keras": ("EfficientNetV2B0", 7_200_312),
    "efficientnet_v2_b1_keras": ("EfficientNetV2B1", 8_212_124),
    "efficientnet_v2_b2_keras": ("EfficientNetV2B2", 10_178_374),
    "efficientnet_v2_b3_keras": ("EfficientNetV2B3", 14_467_622),
    "efficientnet_v2_s_keras": ("EfficientNetV2S", 21_612_360),
    "efficientnet_v2_m_keras": ("EfficientNetV2M", 54_431_388),
    "efficientnet_v2_l_keras": ("EfficientNetV2L", 119_027_848),
}
# (spec, input height, width): odd and even sizes, so strided convs pad both ways
BUILT = [
    ("efficientnet_b0_keras", 65, 62),
    ("efficientnet_v2_b0_keras", 63, 66),
]


def close(ref: np.ndarray, ours: np.ndarray) -> None:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5."""
    assert ref.shape == ours.shape
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    diff = float(np.abs(ref - ours).max())
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"


def preprocessing(model: Any) -> dict[str, Any]:
    """The Rescaling and Normalization layers by class: keras.applications leaves them
    auto-named (``rescaling``, ``normalization_3``, ... as other models came first)."""
    import keras

    kinds = {"Rescaling": keras.layers.Rescaling, "Normalization": keras.layers.Normalization}
    return {
        kind: layer
        for layer in flat_layers(model)
        for kind, cls in kinds.items()
        if isinstance(layer, cls)
    }


@pytest.mark.parametrize("name", sorted(KERAS_PARAMS))
def test_counts_equal_keras_applications(name: str) -> None:
    spec = rescompiler.load_spec(spec_path(name))
    reference, count = KERAS_PARAMS[name]
    assert spec.model.reference == f"keras.applications.{reference}"
    assert spec.graph.params + spec.graph.stats == count


def test_v2_s_m_l_rescale_to_minus_one_one_without_normalization() -> None:
    """keras' EfficientNetV2 normalises by ImageNet's statistics for its B sizes only (its
    name starts with "b"); S, M and L rescale to [-1, 1] (V2-S is too slow to build here)."""
    for name in ("efficientnet_v2_s_keras", "efficientnet_v2_m_keras", "efficientnet_v2_l_keras"):
        spec = rescompiler.load_spec(spec_path(name), overrides={"input_shape": [3, 32, 32]})
        ops = [node.op for node in spec.graph.nodes]
        assert ops[:2] == ["rescale", "conv"]
        first = spec.graph.nodes[0].attrs
        assert (first["scale"], first["offset"]) == (1 / 128, -1.0)


@pytest.fixture(scope="module", params=BUILT, ids=[b[0] for b in BUILT])
def models(request: pytest.FixtureRequest) -> tuple[Any, ...]:
    """The spec at a small size, keras.applications' model with non-trivial weights and BN
    statistics, our Keras build holding its weights, pixels in [0, 255), and the layers whose
    weights differed after both were built under one seed."""
    keras = pytest.importorskip("keras")
    name, height, width = request.param
    spec = rescompiler.load_spec(spec_path(name), overrides={"input_shape": [3, height, width]})
    keras.utils.set_random_seed(0)
    reference = getattr(keras.applications, KERAS_PARAMS[name][0])(
        weights=None, include_top=True, input_shape=(height, width, 3)
    )
    keras.utils.set_random_seed(0)
    ours = rescompiler.build(spec, backend="keras")
    # seeded init first: the same weights drawn in the same order, before any is replaced
    mine = {layer.name: layer for layer in flat_layers(ours)}
    mine.update(
        {layer.name: preprocessing(ours)[kind] for kind, layer in preprocessing(reference).items()}
    )
    unequal = [
        layer.name
        for layer in flat_layers(reference)
        if layer.weights
        and not all(
            a.shape == b.shape and np.array_equal(a, b)
            for a, b in zip(layer.get_weights(), mine[layer.name].get_weights(), strict=True)
        )
    ]
    rng = np.random.default_rng(0)
    for layer in flat_layers(reference):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0.0, 0.2, beta.shape).astype("float32"),
                    rng.normal(0.0, 0.2, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, variance.shape).astype("float32"),
                ]
            )
        elif isinstance(layer, keras.layers.Normalization) and layer.weights:
            layer.set_weights(
                [
                    np.array([0.485, 0.456, 0.406], "float32"),
                    np.array([0.052441, 0.050176, 0.050625], "float32"),
                    np.array(1000, "int64"),
                ]
            )
            layer.finalize_state()  # keras reads mean and variance from the weights only then
    for layer in flat_layers(reference):
        if layer.weights and not isinstance(layer, keras.layers.Normalization):
            mine[layer.name].set_weights(layer.get_weights())
    ref_norm = preprocessing(reference).get("Normalization")
    if ref_norm is not None and ref_norm.weights:
        preprocessing(ours)["Normalization"].set_weights(ref_norm.get_weights())
    pixels = rng.uniform(0, 255, (2, height, width, 3)).astype("float32")
    return spec, reference, ours, pixels, unequal


def test_seeded_init_equals_keras_applications(models: tuple[Any, ...]) -> None:
    """Under one seed our Keras build draws keras.applications' initial weights: the same
    initialisers (VarianceScaling, truncated normal at fan_out; fan_in in torch's terms for the
    depthwise kernels), layers built in the same order."""
    assert models[4] == []


def test_every_weighted_layer_is_found_by_name_with_its_shapes(models: tuple[Any, ...]) -> None:
    _, reference, ours, _, _ = models
    mine = {layer.name: layer for layer in flat_layers(ours)}
    theirs = {layer.name: layer for layer in flat_layers(reference)}
    auto = {layer.name for layer in preprocessing(reference).values()}
    weighted = {name for name, layer in theirs.items() if layer.weights and name not in auto}
    assert len(weighted) > 100
    missing = sorted(weighted - set(mine))
    assert not missing, f"keras layers our model lacks: {missing}"
    wrong = {
        name: (
            [tuple(w.shape) for w in mine[name].weights],
            [tuple(w.shape) for w in theirs[name].weights],
        )
        for name in weighted
        if [tuple(w.shape) for w in mine[name].weights]
        != [tuple(w.shape) for w in theirs[name].weights]
    }
    assert not wrong, f"weight shapes (ours, keras) differ: {wrong}"
    assert {type(mine[name]).__name__ for name in weighted if "dwconv" in name} == {
        "DepthwiseConv2D"
    }
    ours_auto = {layer.name for layer in preprocessing(ours).values()}
    extra = sorted(
        name
        for name, layer in mine.items()
        if layer.weights and name not in weighted and name not in ours_auto
    )
    assert not extra, f"weighted layers keras does not have: {extra}"
    # the preprocessing: the same layers, the same weights (V1 stores the Normalization's)
    ref_pre, our_pre = preprocessing(reference), preprocessing(ours)
    assert sorted(ref_pre) == sorted(our_pre)
    for kind, layer in ref_pre.items():
        assert [tuple(w.shape) for w in layer.weights] == [
            tuple(w.shape) for w in our_pre[kind].weights
        ]
    # the unweighted layers too, but for three kinds that compute nothing of their own here:
    # the SE's Reshape (our squeeze keeps its 1x1), V1's ZeroPadding2D before a strided conv
    # (our conv pads as `same` itself), a Dropout of rate 0 keras leaves out
    unnamed = sorted(
        name
        for name in set(theirs) - set(mine) - auto - {reference.layers[0].name}
        if not name.endswith(("_se_reshape", "_pad"))
    )
    assert not unnamed, f"keras layers without a layer of that name: {unnamed}"
    for name in set(theirs) - set(mine):
        if name.endswith("_pad"):
            assert type(theirs[name]).__name__ == "ZeroPadding2D"


def test_outputs_equal_keras_applications(models: tuple[Any, ...]) -> None:
    keras = pytest.importorskip("keras")
    _, reference, ours, pixels, _ = models
    close(np.asarray(reference(pixels, training=False)), np.asarray(ours(pixels, training=False)))
    # inside too, block by block: with random weights the features of two inputs grow alike
    # with depth, so the output alone would hide a difference in the first blocks
    names = [
        layer.name
        for layer in reference.layers
        if layer.name.endswith(("_project_bn", "_add", "_activation"))
        and not layer.name.endswith(("expand_activation", "project_activation"))
    ]
    assert len(names) > 30
    ref_inner = keras.Model(reference.input, [reference.get_layer(n).output for n in names])
    our_inner = keras.Model(ours.input, [ours.get_layer(n).output for n in names])
    pairs = zip(ref_inner(pixels, training=False), our_inner(pixels, training=False), strict=True)
    for ref, mine in pairs:
        close(np.asarray(ref), np.asarray(mine))


def test_torch_build_computes_the_same_function(models: tuple[Any, ...]) -> None:
    torch = pytest.importorskip("torch")
    spec, reference, ours, pixels, _ = models
    model = rescompiler.build(spec, backend="torch").eval()
    rescompiler.transfer_weights(spec, ours, model)
    with torch.no_grad():
        out = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
    close(np.asarray(reference(pixels, training=False)), out)
