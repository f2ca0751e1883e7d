"""The IR: a flat, named, shape-annotated graph of primitive ops, plus the containers
(block instances, stages, groups) that give the module hierarchy.

Backends read only this (and the validated spec model it was built from, for emitting code
that keeps the spec's expressions). Every node has a shape after inference: see ``check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Location

INPUT = "input"


@dataclass(frozen=True)
class IRNode:
    """One primitive op. ``id`` is its dotted module path (torch ``state_dict`` prefix)."""

    id: str
    op: str
    attrs: Mapping[str, Any]
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    params: int
    stats: int
    macs: int
    names: Mapping[str, str]
    containers: tuple[str, ...]
    location: Location
    spec_path: str
    shares: str | None = None  # id of the node whose layer (and weights) this one applies
    layout: str = "channels_first"  # of a C×H×W output in torch: "channels_last" after permute

    @property
    def local_name(self) -> str:
        """The last component of the node id."""
        return self.id.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Container:
    """A block instance, a stage (``repeat``) or a group; ``id`` is its module path."""

    id: str
    kind: str  # "block" | "stage" | "group"
    template: str | None
    args: Mapping[str, Any]
    names: Mapping[str, str]
    location: Location
    spec_path: str


@dataclass(frozen=True)
class Graph:
    """The expanded model: nodes in topological order, the output node, and containers."""

    name: str
    input_shape: tuple[int, ...]
    nodes: tuple[IRNode, ...]
    output: str
    containers: Mapping[str, Container] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)  # named outputs: name -> node id

    @property
    def output_ids(self) -> list[str]:
        """Ids of the nodes the model returns: its named outputs, or its one output."""
        return list(self.outputs.values()) if self.outputs else [self.output]

    def node(self, node_id: str) -> IRNode:
        """Look a node up by id."""
        return self._index[node_id]

    @property
    def _index(self) -> dict[str, IRNode]:
        cache = self.__dict__.get("_index_cache")
        if cache is None:
            cache = {n.id: n for n in self.nodes}
            object.__setattr__(self, "_index_cache", cache)
        return cache

    def shape_of(self, node_id: str) -> tuple[int, ...]:
        """Output shape of a node or of the model input."""
        return self.input_shape if node_id == INPUT else self.node(node_id).shape

    @property
    def params(self) -> int:
        """Trainable parameters (as torch counts them)."""
        return sum(n.params for n in self.nodes)

    @property
    def stats(self) -> int:
        """BatchNorm running statistics (Keras counts them as parameters)."""
        return sum(n.stats for n in self.nodes)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of conv and linear layers."""
        return sum(n.macs for n in self.nodes)

    def check(self) -> None:
        """Post-condition of shape inference: topological order, every node shaped."""
        seen = {INPUT}
        for node in self.nodes:
            assert node.shape and all(d > 0 for d in node.shape), node.id
            assert all(i in seen for i in node.inputs), node.id
            seen.add(node.id)
        assert all(o in seen for o in self.output_ids)
