"""The keras.applications specs (ResNetV1/V2) name and size every weighted layer as Keras does.

For each spec, build the reference ``keras.applications`` model (random weights, 64×64 input
to stay quick) and check that every Keras layer with weights has exactly one IR node of the
same name and the same parameter count (Keras counts BN moving statistics), that the IR has
no weighted node Keras lacks, and that the total equals DESIGN.md's reference figure.
"""

from __future__ import annotations

from collections import Counter

import pytest
from library import REFERENCE_PARAMS, spec_path

import rescompiler

KERAS_SPECS = {
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
    "resnet50v1": "ResNet50",
    "resnet101v1": "ResNet101",
    "resnet152v1": "ResNet152",
}
SMALL = 64


@pytest.mark.parametrize("name", list(KERAS_SPECS))
def test_keras_names_and_counts_match_keras_applications(name: str) -> None:
    keras = pytest.importorskip("keras")
    spec = rescompiler.load_spec(spec_path(name), overrides={"input_shape": [3, SMALL, SMALL]})
    graph = spec.graph
    expected, with_stats = REFERENCE_PARAMS[name]
    assert with_stats
    assert graph.params + graph.stats == expected

    reference = getattr(keras.applications, KERAS_SPECS[name])(
        weights=None, input_shape=(SMALL, SMALL, 3)
    )
    assert reference.count_params() == expected
    weighted = {layer.name: layer.count_params() for layer in reference.layers if layer.weights}

    ir_names = Counter(node.names.get("keras") for node in graph.nodes)
    duplicated = sorted(str(k) for k, count in ir_names.items() if count > 1)
    assert not duplicated, f"keras names used by several IR nodes: {duplicated}"
    by_keras = {node.names.get("keras"): node for node in graph.nodes}

    missing = sorted(set(weighted) - set(by_keras))
    assert not missing, f"keras layers without an IR node: {missing}"
    wrong = {
        layer: (by_keras[layer].params + by_keras[layer].stats, count)
        for layer, count in weighted.items()
        if by_keras[layer].params + by_keras[layer].stats != count
    }
    assert not wrong, f"parameter counts (IR, keras) differ: {wrong}"

    extra = sorted(
        node.names.get("keras") or node.id
        for node in graph.nodes
        if node.params + node.stats > 0 and node.names.get("keras") not in weighted
    )
    assert not extra, f"weighted IR nodes that keras does not have: {extra}"
