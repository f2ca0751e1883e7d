"""Diagram export: mermaid or Graphviz dot, one cluster per stage (or top-level block/group),
with distinct styles for ``add`` and ``concat`` merges."""

from __future__ import annotations

from dataclasses import dataclass

from .infer import fmt
from .ir import INPUT, Graph

MERGE_STYLE = {
    "add": ("fill:#ffe0b2,stroke:#e65100", "#ffe0b2", "circle", "+"),
    "concat": ("fill:#c8e6c9,stroke:#1b5e20", "#c8e6c9", "hexagon", "concat"),
    "mul": ("fill:#e1bee7,stroke:#4a148c", "#e1bee7", "circle", "×"),
}


@dataclass(frozen=True)
class _Vertex:
    key: str
    label: str
    op: str
    cluster: str | None


def _vertices(
    graph: Graph, collapse: bool
) -> tuple[list[_Vertex], list[tuple[str, str]], dict[str, str]]:
    """Vertices, edges and cluster titles; ``collapse`` draws each block instance as one box."""
    owner: dict[str, str] = {INPUT: INPUT}
    vertices: dict[str, _Vertex] = {
        INPUT: _Vertex(INPUT, f"input<br/>{fmt(graph.input_shape)}", "input", None)
    }
    titles: dict[str, str] = {}
    for node in graph.nodes:
        cluster = node.containers[0] if node.containers else None
        if cluster is not None and cluster not in titles:
            c = graph.containers[cluster]
            detail = f"{c.kind} {c.template}" if c.template else c.kind
            if c.kind == "stage":
                detail += f" ×{c.args['repeat']}"
            titles[cluster] = f"{cluster}: {detail}"
        block = next((c for c in node.containers if graph.containers[c].kind == "block"), None)
        if collapse and block is not None:
            owner[node.id] = block
            template = graph.containers[block].template
            label = f"{block}<br/>{template} {fmt(node.shape)}"
            vertices[block] = _Vertex(block, label, "block", cluster if cluster != block else None)
            continue
        owner[node.id] = node.id
        symbol = MERGE_STYLE[node.op][3] if node.op in MERGE_STYLE else node.op
        if node.shares is not None:
            symbol += f" (weights of {node.shares})"
        label = f"{node.id}<br/>{symbol} {fmt(node.shape)}"
        vertices[node.id] = _Vertex(node.id, label, node.op, cluster)
    edges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for node in graph.nodes:
        for source in node.inputs:
            edge = (owner[source], owner[node.id])
            if edge[0] != edge[1] and edge not in seen:
                seen.add(edge)
                edges.append(edge)
    for name, node_id in graph.outputs.items():  # named outputs: a vertex each
        key = f"output {name}"
        vertices[key] = _Vertex(
            key, f"output {name}<br/>{fmt(graph.shape_of(node_id))}", "output", None
        )
        edges.append((owner[node_id], key))
    return list(vertices.values()), edges, titles


def _quote(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(graph: Graph, collapse: bool = False) -> str:
    """Mermaid ``flowchart`` source of the graph."""
    vertices, edges, titles = _vertices(graph, collapse)
    ids = {v.key: f"n{i}" for i, v in enumerate(vertices)}
    lines = ["flowchart TD"]
    clusters: dict[str | None, list[_Vertex]] = {}
    for v in vertices:
        clusters.setdefault(v.cluster, []).append(v)

    def shape(v: _Vertex) -> str:
        label = _quote(v.label)
        if v.op in ("add", "mul"):
            return f'{ids[v.key]}(("{label}"))'
        if v.op == "concat":
            return f'{ids[v.key]}{{{{"{label}"}}}}'
        return f'{ids[v.key]}["{label}"]'

    for cluster, members in clusters.items():
        indent = "  "
        if cluster is not None:
            lines.append(f'  subgraph c{len(lines)}["{_quote(titles[cluster])}"]')
            indent = "    "
        lines += [indent + shape(v) for v in members]
        if cluster is not None:
            lines.append("  end")
    lines += [f"  {ids[a]} --> {ids[b]}" for a, b in edges]
    for op, (style, *_rest) in MERGE_STYLE.items():
        members = [ids[v.key] for v in vertices if v.op == op]
        lines.append(f"  classDef {op} {style}")
        if members:
            lines.append(f"  class {','.join(members)} {op}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, collapse: bool = False) -> str:
    """Graphviz ``digraph`` source of the graph."""
    vertices, edges, titles = _vertices(graph, collapse)
    ids = {v.key: f"n{i}" for i, v in enumerate(vertices)}

    def attrs(v: _Vertex) -> str:
        label = v.label.replace("<br/>", "\\n").replace('"', '\\"')
        if v.op in MERGE_STYLE:
            _, fill, node_shape, _symbol = MERGE_STYLE[v.op]
            return f'[label="{label}", shape={node_shape}, style=filled, fillcolor="{fill}"]'
        return f'[label="{label}", shape=box]'

    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [fontname="Helvetica"];']
    clusters: dict[str | None, list[_Vertex]] = {}
    for v in vertices:
        clusters.setdefault(v.cluster, []).append(v)
    for index, (cluster, members) in enumerate(clusters.items()):
        if cluster is None:
            lines += [f"  {ids[v.key]} {attrs(v)};" for v in members]
            continue
        title = titles[cluster].replace('"', '\\"')
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f'    label="{title}"; style=rounded;')
        lines += [f"    {ids[v.key]} {attrs(v)};" for v in members]
        lines.append("  }")
    lines += [f"  {ids[a]} -> {ids[b]};" for a, b in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"
