"""Per-node table of a spec: name, op, output shape, params, MACs, with totals."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .infer import fmt


@dataclass(frozen=True)
class SummaryRow:
    """One IR node in the summary."""

    name: str
    op: str
    shape: tuple[int, ...]
    params: int
    stats: int
    macs: int


@dataclass(frozen=True)
class Summary:
    """What ``rescompile --summary`` prints; ``total_params`` is trainable + BN statistics."""

    name: str
    input_shape: tuple[int, ...]
    rows: tuple[SummaryRow, ...]
    trainable_params: int
    bn_statistics: int
    macs: int
    outputs: tuple[tuple[str, tuple[int, ...]], ...] = ()  # named outputs: (name, shape)

    @property
    def total_params(self) -> int:
        """Trainable params plus BN running statistics (the Keras ``count_params`` figure)."""
        return self.trainable_params + self.bn_statistics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [
                {
                    "name": r.name,
                    "op": r.op,
                    "output_shape": list(r.shape),
                    "params": r.params,
                    "bn_statistics": r.stats,
                    "macs": r.macs,
                }
                for r in self.rows
            ],
            "outputs": {name: list(shape) for name, shape in self.outputs},
            "totals": {
                "trainable_params": self.trainable_params,
                "bn_statistics": self.bn_statistics,
                "total_params": self.total_params,
                "macs": self.macs,
            },
        }

    def to_text(self) -> str:
        """An aligned table with a totals footer."""
        header = ("name", "op", "output shape", "params", "BN stats", "MACs")
        body = [
            (r.name, r.op, fmt(r.shape), f"{r.params:,}", f"{r.stats:,}", f"{r.macs:,}")
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        right = {3, 4, 5}

        def line(cells: tuple[str, ...]) -> str:
            parts = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        lines = [f"{self.name}  input {fmt(self.input_shape)}", line(header), rule]
        lines += [line(row) for row in body]
        lines += [
            rule,
            f"trainable params: {self.trainable_params:,}",
            f"BN statistics:    {self.bn_statistics:,}",
            f"total params:     {self.total_params:,}",
            f"MACs:             {self.macs:,} ({self.macs / 1e9:.2f} G)",
            *(
                ["outputs: " + ", ".join(f"{name} {fmt(shape)}" for name, shape in self.outputs)]
                if self.outputs
                else []
            ),
        ]
        return "\n".join(lines) + "\n"


def summarize(spec: Any, overrides: dict[str, Any] | None = None) -> Summary:
    """Per-node shapes, params and MACs of a spec (a Spec or a path), with totals."""
    from .api import Spec, load_spec

    if not isinstance(spec, Spec):
        spec = load_spec(os.fspath(spec), overrides)
    graph = spec.graph
    rows = tuple(
        SummaryRow(
            n.id,
            n.op if n.shares is None else f"{n.op} (weights of {n.shares})",
            n.shape,
            n.params,
            n.stats,
            n.macs,
        )
        for n in graph.nodes
    )
    outputs = tuple((name, graph.shape_of(i)) for name, i in graph.outputs.items())
    return Summary(
        spec.name, graph.input_shape, rows, graph.params, graph.stats, graph.macs, outputs
    )
