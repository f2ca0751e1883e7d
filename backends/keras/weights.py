"""Weights of a Keras model in torch layout, keyed by IR node: what ``transfer_weights`` moves.

``export_weights(spec, model)`` returns ``{node_id: {"weight": ..., "bias": ...,
"running_mean": ..., "running_var": ...}}`` as numpy arrays shaped as torch shapes them;
``import_weights(spec, model, weights)`` sets a Keras model from such a dict. Layers are found
by their Keras name (``node.names["keras"]``).

Layouts: conv kernels HWIO ↔ torch OIHW (``permute(2, 3, 1, 0)``), a ``DepthwiseConv2D``'s
(kh, kw, C, 1) ↔ torch (C, 1, kh, kw) (``permute(2, 3, 0, 1)``); transposed-conv kernels
(kh, kw, out, in) ↔ torch (in, out, kh, kw), the same permutation, no flip; dense kernels
(in, out) ↔ torch (out, in); BN gamma/beta/moving_mean/moving_variance ↔
weight/bias/running_mean/running_var. A spatial flatten orders features (h, w, c) in Keras and
(c, h, w) in torch: the features of the layers after it (dense inputs, 1-D BN) are permuted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ELEMENTWISE_1D = {
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "gelu",
    "silu",
    "hardswish",
    "hardsigmoid",
    "leaky_relu",
    "identity",
    "dropout",
    "drop_path",
    "layernorm",
    "layer_scale",
    "softmax",
    "bn",
}


def feature_orders(graph: Any) -> dict[str, np.ndarray]:
    """For each 1-D node whose Keras feature order differs from torch's: ``perm`` with
    ``keras_features == torch_features[perm]``."""
    import numpy as np

    orders: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        shapes = [graph.shape_of(i) for i in node.inputs]
        if node.op == "flatten" and len(shapes[0]) == 3:
            c, h, w = shapes[0]
            if h * w > 1 and c > 1:
                orders[node.id] = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
        elif node.op == "groupnorm" and node.inputs[0] in orders:
            raise ValueError(f"{node.id}: groupnorm of a vector flattened channels-last")
        elif len(node.shape) == 1 and node.op in ELEMENTWISE_1D and node.inputs[0] in orders:
            orders[node.id] = orders[node.inputs[0]]
        elif len(node.shape) == 1 and node.op in ("add", "mul"):
            found = [orders.get(i) for i in node.inputs]
            if any(p is not None for p in found):
                first = next(p for p in found if p is not None)
                if not all(p is not None and np.array_equal(p, first) for p in found):
                    raise ValueError(f"{node.id}: adds vectors flattened in different orders")
                orders[node.id] = first
        elif len(node.shape) == 1 and node.op == "concat" and any(i in orders for i in node.inputs):
            parts, offset = [], 0
            for i, shape in zip(node.inputs, shapes, strict=True):
                parts.append(orders.get(i, np.arange(shape[0])) + offset)
                offset += shape[0]
            orders[node.id] = np.concatenate(parts)
    return orders


def _layer(model: Any, node: Any) -> Any:
    name = node.names["keras"]
    try:
        return model.get_layer(name)
    except ValueError:
        raise KeyError(f"{node.id}: the Keras model has no layer {name!r}") from None


def _kernel_axes(node: Any, to_torch: bool) -> tuple[int, int, int, int]:
    """The permutation from a Keras kernel to a torch weight (``to_torch``) or back: HWIO ↔
    OIHW, or a DepthwiseConv2D's (kh, kw, C, 1) ↔ (C, 1, kh, kw), its own inverse."""
    if node.attrs.get("depthwise"):
        return (2, 3, 0, 1)
    return (3, 2, 0, 1) if to_torch else (2, 3, 1, 0)


def _numpy(variable: Any) -> np.ndarray:
    import numpy as np

    return np.array(variable.numpy(), dtype=np.float32)


def export_weights(spec: Any, model: Any) -> dict[str, dict[str, np.ndarray]]:
    """Every parameter and BN statistic of a Keras model built from ``spec``, in torch layout."""
    import numpy as np

    graph = spec.graph
    orders = feature_orders(graph)
    out: dict[str, dict[str, np.ndarray]] = {}
    for node in graph.nodes:
        if node.params + node.stats == 0:
            continue
        layer = _layer(model, node)
        tensors: dict[str, np.ndarray] = {}
        perm = orders.get(node.inputs[0])
        if node.op in ("conv", "conv_transpose"):
            tensors["weight"] = _numpy(layer.kernel).transpose(*_kernel_axes(node, True))
        elif node.op == "linear":
            kernel = _numpy(layer.kernel)  # (in, out), inputs in Keras order
            weight = np.empty_like(kernel.T)
            if perm is None:
                weight[...] = kernel.T
            else:
                weight[:, perm] = kernel.T
            tensors["weight"] = weight
        if node.op in ("conv", "conv_transpose", "linear") and layer.use_bias:
            tensors["bias"] = _numpy(layer.bias)
        if node.op == "normalize":  # torch keeps them as (C, 1, 1) buffers
            for key, variable in (("mean", layer.adapt_mean), ("variance", layer.adapt_variance)):
                tensors[key] = _numpy(variable).reshape(-1, 1, 1)
        if node.op in ("layernorm", "groupnorm", "layer_scale"):
            pairs = [("weight", layer.gamma)]
            if node.op != "layer_scale":
                pairs.append(("bias", layer.beta))
            for key, variable in pairs:
                value = _numpy(variable)
                if perm is not None:
                    restored = np.empty_like(value)
                    restored[perm] = value
                    value = restored
                tensors[key] = value
            if node.op == "layer_scale" and len(node.shape) == 3 and node.layout != "channels_last":
                tensors["weight"] = tensors["weight"].reshape(-1, 1, 1)  # torch's (C, 1, 1)
        if node.op == "bn":
            pairs = [("running_mean", layer.moving_mean), ("running_var", layer.moving_variance)]
            if layer.scale:
                pairs.append(("weight", layer.gamma))
            if layer.center:
                pairs.append(("bias", layer.beta))
            for key, variable in pairs:
                value = _numpy(variable)
                if perm is not None:
                    restored = np.empty_like(value)
                    restored[perm] = value
                    value = restored
                tensors[key] = value
        out[node.id] = tensors
    _check_complete(spec, model)
    return out


def _check_complete(spec: Any, model: Any) -> None:
    """The model holds no weight the spec does not know (it is not a bigger model)."""
    expected = sum(node.params + node.stats for node in spec.graph.nodes)
    found = model.count_params()
    if found != expected:
        raise ValueError(f"the Keras model has {found:,} weights, the spec {expected:,}")


def _checked(node: Any, key: str, variable: Any, value: np.ndarray) -> tuple[Any, np.ndarray]:
    import numpy as np

    shape = tuple(variable.shape)
    if tuple(value.shape) != shape:
        raise ValueError(f"{node.id}.{key}: Keras expects shape {shape}, got {value.shape}")
    return variable, np.ascontiguousarray(value, dtype=np.float32)


def import_weights(spec: Any, model: Any, weights: dict[str, dict[str, Any]]) -> None:
    """Set a Keras model built from ``spec`` from torch-layout ``weights`` (every node).

    Every shape is checked before anything is assigned: on error the model is unchanged.
    """
    import numpy as np

    _check_complete(spec, model)
    graph = spec.graph
    orders = feature_orders(graph)
    plan: list[tuple[Any, np.ndarray]] = []
    for node in graph.nodes:
        if node.params + node.stats == 0:
            continue
        if node.id not in weights:
            raise KeyError(f"no weights for {node.id}")
        tensors = {k: np.asarray(v, dtype=np.float32) for k, v in weights[node.id].items()}
        layer = _layer(model, node)
        perm = orders.get(node.inputs[0])
        try:
            if node.op in ("conv", "conv_transpose"):
                kernel = tensors["weight"].transpose(*_kernel_axes(node, False))
                plan.append(_checked(node, "weight", layer.kernel, kernel))
            elif node.op == "linear":
                weight = tensors["weight"]
                kernel = (weight if perm is None else weight[:, perm]).T
                plan.append(_checked(node, "weight", layer.kernel, kernel))
            if node.op in ("conv", "conv_transpose", "linear") and layer.use_bias:
                plan.append(_checked(node, "bias", layer.bias, tensors["bias"]))
            if node.op == "normalize":
                for key, variable in (
                    ("mean", layer.adapt_mean),
                    ("variance", layer.adapt_variance),
                ):
                    plan.append(_checked(node, key, variable, tensors[key].reshape(-1)))
            if node.op in ("layernorm", "groupnorm", "layer_scale"):
                pairs = [("weight", layer.gamma)]
                if node.op != "layer_scale":
                    pairs.append(("bias", layer.beta))
                for key, variable in pairs:
                    value = tensors[key].reshape(-1)
                    plan.append(
                        _checked(node, key, variable, value if perm is None else value[perm])
                    )
            if node.op == "bn":
                pairs = [
                    ("running_mean", layer.moving_mean),
                    ("running_var", layer.moving_variance),
                ]
                if layer.scale:
                    pairs.append(("weight", layer.gamma))
                if layer.center:
                    pairs.append(("bias", layer.beta))
                for key, variable in pairs:
                    value = tensors[key] if perm is None else tensors[key][perm]
                    plan.append(_checked(node, key, variable, value))
        except KeyError as exc:
            raise KeyError(f"no {exc.args[0]} for {node.id}") from None
    for variable, value in plan:
        variable.assign(value)
    for node in graph.nodes:  # a Normalization computes with copies of its weights
        if node.op == "normalize":
            _layer(model, node).finalize_state()


def flat_layers(model: Any) -> list[Any]:
    """A Keras model's layers with nested models (keras.applications' ConvNeXt stages are
    Sequentials) replaced by their own layers, recursively: every layer that holds weights is
    reached, as copying weights by layer name needs."""
    import keras

    return [
        inner
        for layer in model.layers
        for inner in (flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    ]
