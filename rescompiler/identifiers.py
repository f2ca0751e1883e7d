"""Names a spec may not take, checked at ``--check`` time for every backend at once.

A spec's params and lets become Python variables of the generated modules, and its node
names become torch attributes (state_dict keys) and Keras layer names. A name that collides
with what the generated code itself uses would shadow an import (a param ``nn``), repeat an
argument (a block param ``in_channels``) or clash with an ``nn.Module`` method (a node
``forward``). Node names cannot be renamed (they are the state_dict keys a spec promises), and
params are the keyword arguments of ``build()``, so both are refused here, located, saying why.
Names the emitters invent themselves (classes, local variables) come from one
:class:`~rescompiler.codegen.Namespace` per scope and are never taken from the spec unchecked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import DiagnosticSink, Location, format_path
from .expr import FUNCTIONS
from .ir import Graph
from .schema import Group, SpecModel

PathKey = tuple[str | int, ...]

_TORCH = "the generated torch module"
_KERAS = "the generated Keras module"
# module-level names of the generated modules (imports, globals, helper classes and functions)
MODULE_GLOBALS: dict[str, str] = {
    "torch": f"{_TORCH} imports torch",
    "nn": f"{_TORCH} imports torch.nn as nn",
    "F": f"{_TORCH} imports torch.nn.functional as F",
    "keras": f"{_KERAS} imports keras",
    "layers": f"{_KERAS} imports keras.layers as layers",
    "np": f"{_KERAS} imports numpy as np",
    "sys": f"{_KERAS} imports sys",
    "Any": "the generated modules import typing.Any",
    "Sequence": "the generated modules import collections.abc.Sequence",
    "Mapping": "the generated modules import collections.abc.Mapping",
    "annotations": "the generated modules import annotations from __future__",
    "DEFAULTS": "the generated modules define DEFAULTS",
    "INPUT_SHAPE": "the generated modules define INPUT_SHAPE",
    "INITIALISERS": f"{_TORCH} defines INITIALISERS",
    "build": "the generated modules define build()",
    "fold": f"{_TORCH} defines fold()",
    "fold_batchnorm": "the generated modules define fold_batchnorm()",
    "initializer": f"{_KERAS} defines initializer()",
    "depthwise_initializer": f"{_KERAS} defines depthwise_initializer()",
    "load_plain_weights": f"{_KERAS} defines load_plain_weights()",
    "ceil": "the generated modules import math.ceil for the expression language's ceil()",
    "floor": "the generated modules import math.floor for the expression language's floor()",
    "make_divisible": "the generated modules define make_divisible()",
    "regnet_stages": "the generated modules define regnet_stages()",
}
for _helper in (
    "Crop",
    "CropTo",
    "PadTo",
    "Subsample",
    "ChannelPad",
    "GlobalPool",
    "PaddedConv2d",
    "Reduce",
    "LayerNorm2d",
    "Permute",
    "DropPath",
    "LayerScale",
    "Rescale",
    "Normalize",
    "FixedNormalization",
    "PaddedMaxPooling2D",
    "PaddedAveragePooling2D",
    "DilatedConv2DTranspose",
    "BilinearUpSampling2D",
    "FoldedConv2D",
    "FoldedDepthwiseConv2D",
    "FoldedDense",
):
    MODULE_GLOBALS[_helper] = f"the generated modules define a helper class {_helper}"
# builtins the generated code calls (tests/test_identifiers.py checks every generated module
# against this list) and the functions of the expression language, which become Python calls
GENERATED_BUILTINS = frozenset(
    {
        "AttributeError",
        "RuntimeError",
        "TypeError",
        "ValueError",
        "bool",
        "chr",
        "dict",
        "enumerate",
        "float",
        "getattr",
        "hasattr",
        "int",
        "isinstance",
        "len",
        "list",
        "max",
        "min",
        "range",
        "set",
        "setattr",
        "sorted",
        "str",
        "sum",
        "super",
        "tuple",
        "zip",
    }
)
# attributes of torch.nn.Module (tests/test_identifiers.py compares with dir(nn.Module)), plus
# the attributes the generated classes set themselves
TORCH_MODULE_ATTRIBUTES = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)
GENERATED_ATTRIBUTES = frozenset({"out_channels", "FOLDED_BN"})
TORCH_SEQUENTIAL_ATTRIBUTES = frozenset({"append", "extend", "insert", "pop"})


def variable_conflict(name: str, scope: str) -> str | None:
    """Why ``name`` cannot be a param or let of ``scope`` (``model`` or ``block``), or None."""
    if name in MODULE_GLOBALS:
        return MODULE_GLOBALS[name]
    if name in FUNCTIONS:
        return f"{name}() is a function of the expression language"
    if name in GENERATED_BUILTINS:
        return f"the generated code calls Python's {name}()"
    if name == "in_channels":
        return "in_channels is the channels of the input (of the model, or of a block's first)"
    if scope == "model" and name == "input_shape":
        return "input_shape is the spec's own field (override it as input_shape)"
    if scope == "model" and name == "inputs":
        return f"{_KERAS} names the model's keras.Input 'inputs'"
    return None


def attribute_conflict(name: str, in_sequential: bool) -> str | None:
    """Why ``name`` cannot name a torch submodule, or None."""
    if name in TORCH_MODULE_ATTRIBUTES:
        return f"nn.Module has an attribute {name!r}, so torch cannot name a submodule so"
    if name in GENERATED_ATTRIBUTES:
        return f"the generated torch classes set an attribute {name!r}"
    if in_sequential and name in TORCH_SEQUENTIAL_ATTRIBUTES:
        return f"nn.Sequential has a method {name!r}, so its children cannot be named so"
    return None


class IdentifierChecker:
    """Records a located error for every spec name the generated code cannot use."""

    def __init__(self, locate: Callable[[PathKey], Location], sink: DiagnosticSink) -> None:
        self.locate = locate
        self.sink = sink

    def report(self, path: PathKey, message: str) -> None:
        self.sink.error(self.locate(path), format_path(path), message, f"ident:{message}")

    def variables(self, names: Iterable[str], path: PathKey, scope: str, kind: str) -> None:
        """Check the keys of a params or let mapping."""
        for name in names:
            why = variable_conflict(name, scope)
            if why:
                self.report((*path, name), f"{kind} {name!r} cannot be used: {why}; rename it")

    def body(self, body: Iterable[Any], path: PathKey, in_group: bool) -> None:
        """Check node and group names of a body, recursively."""
        for index, node in enumerate(body):
            node_path = (*path, index)
            if isinstance(node, Group):
                if isinstance(node.group, str):
                    self.attribute(node.group, (*node_path, "group"), in_group)
                self.body(node.body, (*node_path, "body"), True)
                continue
            if node.name:
                self.attribute(node.name, (*node_path, "name"), in_group)

    def attribute(self, name: str, path: PathKey, in_sequential: bool) -> None:
        """Check one submodule name."""
        why = attribute_conflict(name, in_sequential)
        if why:
            self.report(path, f"node name {name!r} cannot be used: {why}; rename it")


def check_identifiers(
    spec: SpecModel, locate: Callable[[PathKey], Location], sink: DiagnosticSink
) -> None:
    """Record an error for every param, let or node name that the generated code of some
    backend cannot carry (see the module docstring)."""
    checker = IdentifierChecker(locate, sink)
    checker.variables(spec.params, ("params",), "model", "param")
    checker.variables(spec.let, ("let",), "model", "let")
    checker.body(spec.body, ("body",), False)
    for name, template in spec.blocks.items():
        checker.variables(template.params, ("blocks", name, "params"), "block", "block param")
        checker.variables(template.let, ("blocks", name, "let"), "block", "block let")
        checker.body(template.body, ("blocks", name, "body"), False)


def check_graph_names(graph: Graph, sink: DiagnosticSink) -> None:
    """Check names that exist only after expansion: stage children (``child_name``) against
    nn.Sequential's attributes. (Backend names are checked where they are rendered.)"""
    for container in graph.containers.values():
        parent_id, _, own = container.id.rpartition(".")
        parent = graph.containers.get(parent_id)
        if parent is not None and parent.kind == "stage":
            why = attribute_conflict(own, True)
            if why:
                sink.error(
                    container.location,
                    container.spec_path,
                    f"child name {own!r} of {parent_id} cannot be used: {why}",
                )
