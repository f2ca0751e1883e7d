"""BatchNorm folding for Keras inference builds (``optimize="inference"``).

An inference build has no layer for a folded BatchNorm: the conv or dense layer that absorbs it
is a ``FoldedConv2D``/``FoldedDepthwiseConv2D``/``FoldedDense`` (defined in the emitted module)
naming the BN it took in (``folded_bn``). Its weights come from a plain model of the same spec
and params: ``load_plain_weights(folded, plain)`` copies every layer by name and folds each BN
into its layer's kernel and bias (exact in eval mode; ``rescompiler.fold`` decides which BNs
fold).
"""

from __future__ import annotations

from typing import Any


def load_plain_weights(model: Any, plain: Any) -> None:
    """Copy ``plain``'s weights (a plain Keras model of the same spec and params) into the
    inference build ``model`` by layer name, folding each absorbed BatchNorm."""
    for layer in model.layers:
        if hasattr(layer, "fold_from"):
            layer.fold_from(plain)
        elif layer.weights:
            layer.set_weights(plain.get_layer(layer.name).get_weights())


def folded_layers(model: Any) -> dict[str, str]:
    """``{layer that absorbed a BN: that BN's name}`` of an inference build."""
    return {layer.name: layer.folded_bn for layer in model.layers if hasattr(layer, "folded_bn")}
