"""specs/densenet121_keras.yaml reproduces keras.applications.DenseNet121: same parameter count,
every weighted layer of the reference found by name with the same weight shapes, equal outputs
once the reference's weights (with non-trivial BatchNorm statistics) are copied, and torch and
Keras builds of the spec computing the same function (the torch build against the reference,
and ``rescompile --verify``).

densenet169_keras and densenet201_keras change only ``block_config`` (they are HEAVY: no Keras
build of theirs here); their layer names and per-layer counts are checked against keras'
DenseNet written out layer by layer (:func:`keras_weighted_layers`), which the test on
DenseNet121 checks against the reference itself. The reference is built once, at 64×64.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from library import REFERENCE_PARAMS, spec_path

import rescompiler

NAME = "densenet121_keras"
SMALL = 64
# spec -> (its keras.applications reference, its block_config)
VARIANTS = {
    "densenet121_keras": ("DenseNet121", [6, 12, 24, 16]),
    "densenet169_keras": ("DenseNet169", [6, 12, 32, 32]),
    "densenet201_keras": ("DenseNet201", [6, 12, 48, 32]),
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One thread: on a busy machine torch's thread pool makes a DenseNet far slower."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(ref: np.ndarray, ours: np.ndarray) -> None:
    """DESIGN.md's policy: max|a-b| <= 1e-4 * max|ref| + 1e-5."""
    assert ref.shape == ours.shape
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    diff = float(np.abs(ref - ours).max())
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"


def keras_weighted_layers(blocks: list[int], classes: int = 1000) -> dict[str, int]:
    """keras.applications' DenseNet (keras/src/applications/densenet.py), layer by layer: the
    name of every layer with weights and its count_params() (a BatchNormalization holds gamma,
    beta, moving mean and variance: 4 per channel)."""
    growth, bottleneck = 32, 4 * 32
    layers = {"conv1_conv": 7 * 7 * 3 * 64, "conv1_bn": 4 * 64}
    channels = 64
    for stage, count in enumerate(blocks, start=2):
        for block in range(1, count + 1):
            prefix = f"conv{stage}_block{block}"
            layers[f"{prefix}_0_bn"] = 4 * channels
            layers[f"{prefix}_1_conv"] = channels * bottleneck
            layers[f"{prefix}_1_bn"] = 4 * bottleneck
            layers[f"{prefix}_2_conv"] = 3 * 3 * bottleneck * growth
            channels += growth
        if stage < 5:  # transition_block(x, 0.5)
            layers[f"pool{stage}_bn"] = 4 * channels
            layers[f"pool{stage}_conv"] = channels * int(channels * 0.5)
            channels = int(channels * 0.5)
    layers["bn"] = 4 * channels
    layers["predictions"] = channels * classes + classes
    return layers


@pytest.fixture(scope="module")
def models() -> tuple[rescompiler.Spec, Any, Any, np.ndarray, dict[str, np.ndarray]]:
    """The spec, keras.applications' DenseNet121 with random BatchNorm parameters and
    statistics, our Keras build holding its weights, a batch of pixels in [0, 255), and the
    reference's pooled features (``avg_pool``) and output (the softmax) for it."""
    keras = pytest.importorskip("keras")
    spec = rescompiler.load_spec(spec_path(NAME), overrides={"input_shape": [3, SMALL, SMALL]})
    assert spec.model.reference == "keras.applications.DenseNet121"
    reference = keras.applications.DenseNet121(weights=None, input_shape=(SMALL, SMALL, 3))
    rng = np.random.default_rng(1)
    for layer in reference.layers:  # fresh BatchNorms are 1, 0, 0, 1: almost the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            for variable, low, high in (
                (layer.gamma, 0.5, 1.5),
                (layer.beta, -0.2, 0.2),
                (layer.moving_mean, -0.2, 0.2),
                (layer.moving_variance, 0.5, 1.5),
            ):
                variable.assign(rng.uniform(low, high, n).astype("float32"))
    ours = rescompiler.build(spec, backend="keras")
    for layer in reference.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    pixels = rng.uniform(0, 255, (2, SMALL, SMALL, 3)).astype("float32")
    return spec, reference, ours, pixels, outputs(reference, pixels)


def outputs(model: Any, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """A Keras model's pooled features and output, in one call."""
    import keras

    both = keras.Model(model.input, [model.get_layer("avg_pool").output, model.output])
    pooled, out = both(pixels, training=False)
    return {"avg_pool": np.asarray(pooled), "output": np.asarray(out)}


def test_counts_equal_keras_applications(models: tuple[Any, ...]) -> None:
    spec, reference, ours, *_ = models
    expected = REFERENCE_PARAMS[NAME]
    assert expected == (8_062_504, True)
    assert reference.count_params() == ours.count_params() == expected[0]
    assert spec.graph.params + spec.graph.stats == expected[0]


def test_every_weighted_layer_is_found_by_name_with_its_shapes(models: tuple[Any, ...]) -> None:
    keras = pytest.importorskip("keras")
    _, reference, ours, *_ = models
    mine = {layer.name: layer for layer in ours.layers}
    theirs = {layer.name: layer for layer in reference.layers}
    weighted = {name for name, layer in theirs.items() if layer.weights}
    assert len(weighted) == 2 + 58 * 4 + 3 * 2 + 2  # stem, dense layers, transitions, head
    missing = sorted(weighted - set(mine))
    assert not missing, f"keras layers our model lacks: {missing}"
    shapes = {
        name: (
            [tuple(w.shape) for w in mine[name].weights],
            [tuple(w.shape) for w in theirs[name].weights],
        )
        for name in weighted
    }
    wrong = {name: pair for name, pair in shapes.items() if pair[0] != pair[1]}
    assert not wrong, f"weight shapes (ours, keras) differ: {wrong}"
    extra = sorted(name for name, layer in mine.items() if layer.weights and name not in weighted)
    assert not extra, f"weighted layers keras does not have: {extra}"
    # the unweighted layers too (ReLUs, concatenations, pools), but for keras' unnamed
    # ZeroPadding2D layers: ours are conv1_conv_pad and pool1_pad, with the same paddings
    pads = [layer for layer in reference.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    unnamed = sorted(set(theirs) - set(mine) - {reference.layers[0].name, *(p.name for p in pads)})
    assert not unnamed, f"keras layers without a layer of that name: {unnamed}"
    assert [p.padding for p in pads] == [
        mine["conv1_conv_pad"].padding,
        mine["pool1_pad"].padding,
    ]
    assert [type(layer).__name__ for layer in ours.layers] == [
        type(layer).__name__ for layer in reference.layers
    ] + ["Softmax"]  # keras' softmax is the Dense's activation, ours a layer of its own


@pytest.mark.parametrize("name", list(VARIANTS))
def test_keras_densenet_written_out_equals_the_spec(name: str) -> None:
    """Names and per-layer counts of every weighted layer of keras' DenseNet equal the spec's
    IR (at full size, as the library states it); their sum is the reference count."""
    application, blocks = VARIANTS[name]
    spec = rescompiler.load_spec(spec_path(name))
    assert spec.model.reference == f"keras.applications.{application}"
    expected = keras_weighted_layers(blocks)
    assert sum(expected.values()) == REFERENCE_PARAMS[name][0]
    weighted = {
        node.names["keras"]: node.params + node.stats
        for node in spec.graph.nodes
        if node.params + node.stats
    }
    assert weighted == expected


def test_keras_densenet_written_out_equals_keras_applications(models: tuple[Any, ...]) -> None:
    """:func:`keras_weighted_layers` is keras' DenseNet121, layer for layer, in order."""
    reference = models[1]
    built = [(layer.name, layer.count_params()) for layer in reference.layers if layer.weights]
    assert built == list(keras_weighted_layers(VARIANTS[NAME][1]).items())


def test_outputs_equal_keras_applications(models: tuple[Any, ...]) -> None:
    _, _, ours, pixels, expected = models
    # pixels in [0, 255) set the logits far apart: a peaked softmax, so the bound is a tight one
    assert float(expected["output"].max()) > 0.1
    got = outputs(ours, pixels)
    close(expected["output"], got["output"])
    close(expected["avg_pool"], got["avg_pool"])  # before keras' Dense, which holds the softmax


def test_torch_build_computes_the_same_function(models: tuple[Any, ...]) -> None:
    torch = pytest.importorskip("torch")
    spec, _, ours, pixels, expected = models
    model = rescompiler.build(spec, backend="torch").eval()
    rescompiler.transfer_weights(spec, ours, model)
    with torch.no_grad():
        out = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
    close(expected["output"], out)


def test_verify_torch_and_keras_built_and_generated() -> None:
    """``rescompile --verify`` on the logits (a softmax over 1,000 classes of a random network
    is nearly flat, and 1e-5 would hide a difference), two dense layers a stage: every kind of
    layer at a fifth of the cost; the full depth's torch and Keras builds, built and generated,
    are compared by test_equivalence, test_torch_backend and test_keras_backend."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from rescompiler.verifier import verify

    overrides = {"input_shape": [3, 32, 32], "softmax": False, "block_config": [2, 2, 2, 2]}
    report = verify(rescompiler.load_spec(spec_path(NAME), overrides=overrides))
    assert report.ok, report.to_text()
    assert len(report.pairs) == 6 and report.output_shape == [1000]
