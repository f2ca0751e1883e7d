"""Weights of a torch model keyed by IR node, in torch layout: what ``transfer_weights`` moves.

``export_weights(spec, model)`` returns ``{node_id: {"weight": ..., "bias": ...,
"running_mean": ..., "running_var": ...}}`` as float32 numpy arrays; ``import_weights(spec,
model, weights)`` copies such a dict into a torch model. A node's id is its module path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

TENSORS = ("weight", "bias", "running_mean", "running_var")


def _module(model: torch.nn.Module, node: Any) -> torch.nn.Module:
    """The submodule a node's id names."""
    try:
        return model.get_submodule(node.id)
    except AttributeError:
        raise KeyError(f"the torch model has no module {node.id!r}") from None


def _tensors(model: torch.nn.Module, node: Any) -> dict[str, torch.Tensor]:
    """A node's tensors by role: a module's weight, bias and BN statistics, or the parameter a
    ``layer_scale`` node is (its ``weight``)."""
    import torch

    if node.op == "layer_scale":
        try:
            return {"weight": model.get_parameter(node.id)}
        except AttributeError:
            raise KeyError(f"the torch model has no parameter {node.id!r}") from None
    module = _module(model, node)
    keys = ("mean", "variance") if node.op == "normalize" else TENSORS
    found = {key: getattr(module, key, None) for key in keys}
    return {key: value for key, value in found.items() if isinstance(value, torch.Tensor)}


def export_weights(spec: Any, model: torch.nn.Module) -> dict[str, dict[str, np.ndarray]]:
    """Every parameter and BN statistic of a torch model built from ``spec``."""
    import torch

    out: dict[str, dict[str, np.ndarray]] = {}
    for node in spec.graph.nodes:
        if node.params + node.stats == 0:
            continue
        out[node.id] = {
            key: value.detach().to("cpu", torch.float32).numpy().copy()
            for key, value in _tensors(model, node).items()
        }
    _check_complete(spec, model)
    return out


def _check_complete(spec: Any, model: torch.nn.Module) -> None:
    """The model holds no parameter the spec does not know (it is not a bigger model)."""
    expected = sum(node.params for node in spec.graph.nodes)
    found = sum(p.numel() for p in model.parameters())
    if found != expected:
        raise ValueError(f"the torch model has {found:,} parameters, the spec {expected:,}")


def import_weights(spec: Any, model: torch.nn.Module, weights: dict[str, dict[str, Any]]) -> None:
    """Copy torch-layout ``weights`` (every node with parameters or statistics) into ``model``.

    Every shape is checked before anything is copied: on error the model is unchanged.
    """
    import numpy as np
    import torch

    _check_complete(spec, model)
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    for node in spec.graph.nodes:
        if node.params + node.stats == 0:
            continue
        if node.id not in weights:
            raise KeyError(f"no weights for {node.id}")
        for key, target in _tensors(model, node).items():
            if key not in weights[node.id]:
                raise KeyError(f"no {key} for {node.id}")
            value = torch.as_tensor(np.asarray(weights[node.id][key], dtype=np.float32))
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"{node.id}.{key}: torch expects shape {tuple(target.shape)}, "
                    f"got {tuple(value.shape)}"
                )
            copies.append((target, value))
    with torch.no_grad():
        for target, value in copies:
            target.copy_(value.to(target.device, target.dtype))
