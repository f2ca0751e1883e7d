"""Expand a validated spec into the IR: instantiate block templates and stages, evaluate
expressions, infer shapes node by node (block params may depend on input channels), check
merges, and drop nodes that do not reach the output. Errors are collected, not raised."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .attrs import AttrError, resolve_attrs
from .errors import DiagnosticSink, Location, format_path
from .expr import ExprError, evaluate, render_template, short_repr, suggest
from .infer import MERGES, InferError, fmt, infer_node
from .ir import INPUT, Container, Graph, IRNode
from .schema import RESERVED, BlockCall, BlockTemplate, Group, NodeBase, Reuse, SpecModel

PathKey = tuple[str | int, ...]


def _cap(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# Layers, block instances, groups and nodes switched off by `when`: all count.
MAX_NODES = _cap("RESCOMPILER_MAX_NODES", 250_000)
MAX_PARAMS = _cap("RESCOMPILER_MAX_PARAMS", 20_000_000_000)
MAX_ACTIVATION = _cap("RESCOMPILER_MAX_ACTIVATION", 4_000_000_000)
# Block args, param defaults, lets and backend names evaluated over all instances.
MAX_EVALUATIONS = _cap("RESCOMPILER_MAX_EVALUATIONS", 2_000_000)
MAX_NESTING = 32  # blocks inside blocks and groups inside groups, counted together
CHANNELS_FIRST, CHANNELS_LAST = "channels_first", "channels_last"
# ops that act on a channels-last map as on a channels-first one (per position or per channel)
LAYOUT_FREE = frozenset(
    {
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
        "linear",
        "add",
        "mul",
    }
)

CHILD_NAME = re.compile(r"(0|[1-9][0-9]*|[A-Za-z][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*)")
BACKEND_NAME = re.compile(r"[A-Za-z0-9_]+")
MAX_NAME_CHARS = 128


def child_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name the child of a stage, or None when it can: a child is named by
    a non-negative integer (``0``, ``12``) or an identifier that is not a reserved word, which
    may hold inner hyphens (torchvision's RegNet names its blocks ``block1-0``)."""
    if len(name) > 64 or not CHILD_NAME.fullmatch(name):
        return (
            "a child name is a non-negative integer or letters, digits, _ and inner - "
            "starting with a letter"
        )
    if name in RESERVED:
        return "it is a reserved word"
    return None


class CapExceeded(Exception):
    """A size cap was hit; expansion stops at once."""


@dataclass
class Scope:
    """Where nodes are being created: module path prefix, keras prefix, local names."""

    prefix: str
    keras_prefix: str
    containers: tuple[str, ...]
    env: Mapping[str, Any]
    locals: dict[str, str | None] = field(default_factory=dict)
    is_group: bool = False
    used_names: set[str] = field(default_factory=set)
    declared: set[str] = field(default_factory=set)
    ops: dict[str, str] = field(default_factory=dict)  # op nodes built always: local -> id

    def child_id(self, local: str) -> str:
        return f"{self.prefix}.{local}" if self.prefix else local

    def keras_name(self, own: str) -> str:
        if not own:  # a group named "" adds nothing to the names of its layers
            return self.keras_prefix
        return f"{self.keras_prefix}_{own}" if self.keras_prefix else own


class Expander:
    """Builds the IR of one spec; ``locate`` maps a spec path to its source position."""

    def __init__(
        self,
        spec: SpecModel,
        env: Mapping[str, Any],
        locate: Callable[[PathKey], Location],
        sink: DiagnosticSink,
        opaque: Collection[PathKey] = (),
    ) -> None:
        self.spec = spec
        self.opaque = frozenset(opaque)  # nodes that failed validation (placeholders)
        self.globals = dict(env)
        self.locate = locate
        self.sink = sink
        self.nodes: list[IRNode] = []
        self.by_id: dict[str, IRNode] = {}
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.layouts: dict[str, str] = {}  # node id -> layout of its output (default first)
        self.containers: dict[str, Container] = {}
        self.group_scopes: dict[str, tuple[Scope, Group]] = {}  # group id -> children, node
        self.params = 0
        self.conditional: set[str] = set()
        self.stack: list[str] = []
        self.units = 0  # body entries expanded and stage instances created
        self.evaluations = 0  # block values and backend names evaluated
        self.multiplier = 1  # instances of the stage being expanded (product of repeats)
        self.nesting = 0  # bodies being expanded, one inside another
        # merges switched off without ``otherwise``: (path, op, input names, input ids)
        self.off_merges: list[tuple[PathKey, str, list[str], list[str]]] = []

    # -- diagnostics -------------------------------------------------------------------
    def error(self, path: PathKey, message: str, key: str | None = None, where: str = "") -> None:
        context = f" (in {where})" if where else ""
        self.sink.error(self.locate(path), format_path(path), message + context, key or message)

    # -- entry point -------------------------------------------------------------------
    def run(self, input_shape: tuple[int, ...]) -> Graph | None:
        """Expand the model body; returns None when errors were recorded."""
        self.shapes[INPUT] = input_shape
        self.check_block_defaults()
        self.block_index, self.block_count = 0, self._count_stage_blocks(self.spec.body)
        scope = Scope("", "", (), self.globals, {INPUT: INPUT})
        try:
            output = self.expand_body(self.spec.body, ("body",), scope, [INPUT])
        except CapExceeded:
            return None
        except RecursionError:  # a last resort: nesting is bounded by MAX_NESTING
            self.error(("body",), "the spec is nested too deeply to expand")
            return None
        outputs = self._outputs(scope) if self.spec.outputs is not None else {}
        if output is not None and not outputs and self.layouts.get(output) == CHANNELS_LAST:
            self.error(
                ("body", len(self.spec.body) - 1),
                "the model's output is a channels-last map: end with "
                "{op: permute, to: channels_first}",
            )
        if self.sink.errors or output is None or outputs is None:
            return None
        if outputs:
            output = list(outputs.values())[-1]
        return Graph(
            self.spec.name,
            input_shape,
            tuple(self._live_nodes(list(outputs.values()) or [output])),
            output,
            self.containers,
            outputs,
        )

    def _outputs(self, scope: Scope) -> dict[str, str] | None:
        """The named outputs: output name -> node id (None after an error)."""
        raw = self.spec.outputs
        pairs = list(raw.items()) if isinstance(raw, dict) else [(n, n) for n in raw or []]
        found: dict[str, str] = {}
        ok = True
        for key, name in pairs:
            path: PathKey = ("outputs", key) if isinstance(raw, dict) else ("outputs",)
            head, *rest = name.split(".")
            if head not in scope.locals:
                self.error(
                    path, f"unknown node {head!r} of the model body{suggest(head, scope.locals)}"
                )
                ok = False
                continue
            node_id = scope.locals[head] if not rest else self._group_output(name, path)
            if node_id is None:
                ok = False
                continue
            if node_id == INPUT:
                self.error(path, f"output {key!r} is the model input")
                ok = False
            elif self.layouts.get(node_id) == CHANNELS_LAST:
                self.error(path, f"output {key!r} is a channels-last map: permute it back")
                ok = False
            found[key] = node_id
        return found if ok else None

    def _group_output(self, name: str, path: PathKey) -> str | None:
        """The node id of ``name``, a child of a group by its dotted path (``features.1``);
        None after an error. Every group on the way runs its children one by one up to it,
        so the children before it may not be switched by ``when``."""
        head, *rest = name.split(".")
        group_id = head
        for k, child in enumerate(rest):
            entry = self.group_scopes.get(group_id)
            if entry is None:
                self.error(path, f"{group_id} is not a group: {name} names no node")
                return None
            inner, group = entry
            if child not in inner.locals:
                self.error(
                    path,
                    f"unknown child {child!r} of group {group_id}{suggest(child, inner.locals)}",
                )
                return None
            for position, node in enumerate(group.body):
                local = str(node.group) if isinstance(node, Group) else (node.name or str(position))
                if node.when is not None and node.when is not True:
                    self.error(
                        path,
                        f"output {name}: {group_id}.{local} has 'when'; an output inside a group "
                        "needs the children before it built always",
                    )
                    return None
                if local == child:
                    break
            if k == len(rest) - 1:
                return inner.locals[child]
            group_id = f"{group_id}.{child}"
        return None

    def _count_stage_blocks(self, body: list[Any]) -> int:
        """Blocks of the stages (``repeat``) of the model body, groups included, that are
        built: what ``block_count`` is (a mistake in a count is reported where it is)."""
        total = 0
        for node in body:
            try:
                on = node.when is None or evaluate(node.when, self.globals) is True
                if on and isinstance(node, Group):
                    total += self._count_stage_blocks(node.body)
                elif on and isinstance(node, BlockCall) and node.repeat is not None:
                    count = evaluate(node.repeat, self.globals)
                    total += count if isinstance(count, int) and count > 0 else 0
            except ExprError:
                continue
        return total

    def check_block_defaults(self) -> None:
        """Evaluate every block param default against the model's params and lets, so a bad
        default is reported even where every call overrides it or the block is never used."""
        for name, template in self.spec.blocks.items():
            for key, default in template.params.items():
                if default is None:
                    continue
                try:
                    evaluate(default, self.globals)
                except ExprError as exc:
                    self.error(("blocks", name, "params", key), str(exc), key=f"attr:{key}")

    def _spend(self, path: PathKey, count: int) -> None:
        self.evaluations += count
        if self.evaluations > MAX_EVALUATIONS:
            self._cap(
                path,
                f"model needs more than {MAX_EVALUATIONS:,} evaluations of block values "
                "and names to expand",
                "RESCOMPILER_MAX_EVALUATIONS",
            )

    def _count_unit(self, path: PathKey) -> None:
        self.units += 1
        if self.units > MAX_NODES:
            self._cap(
                path,
                f"model exceeds the cap of {MAX_NODES:,} layers "
                "(block instances, groups and switched-off nodes count too)",
                "RESCOMPILER_MAX_NODES",
            )

    def _live_nodes(self, outputs: list[str]) -> list[IRNode]:
        live = set(outputs)
        for node in reversed(self.nodes):
            if node.id in live:
                live.update(node.inputs)
                if node.shares is not None:  # its weights live in the node it reuses
                    live.add(node.shares)
        dead: dict[tuple[Location, str], list[str]] = {}
        for node in self.nodes:
            if node.id not in live and node.id not in self.conditional:
                dead.setdefault((node.location, node.spec_path), []).append(node.id)
        for path, op, names, ids in self.off_merges:
            lost = [name for name, id_ in zip(names[1:], ids[1:], strict=False) if id_ not in live]
            if lost and ids[0] in live:
                self.sink.warning(
                    self.locate(path),
                    format_path(path),
                    f"where 'when' is false this {op} passes its first "
                    f"input {names[0]!r} on and {', '.join(map(repr, lost))} "
                    f"{'goes' if len(lost) == 1 else 'go'} unused: "
                    "list the input to keep first, or name it with 'otherwise'",
                )
        for (location, spec_path), ids in dead.items():  # one warning per spec line
            others = ", ".join(ids[1:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
            also = f" (nor do {others})" if others else ""
            self.sink.warning(location, spec_path, f"{ids[0]} does not reach the output{also}")
        nodes = [n for n in self.nodes if n.id in live]
        seen: dict[str, str] = {}
        for node in nodes:
            if node.shares is not None:
                continue  # the layer of the node it reuses, under its name
            for backend, name in node.names.items():
                other = seen.setdefault(f"{backend}:{name}", node.id)
                if other != node.id:
                    self.sink.error(
                        node.location,
                        node.spec_path,
                        f"{backend} name {name!r} of {node.id} is already used by {other}",
                    )
        return nodes

    # -- bodies ------------------------------------------------------------------------
    def expand_body(
        self, body: list[Any], path: PathKey, scope: Scope, first: list[str | None]
    ) -> str | None:
        """Expand a list of nodes; returns the id of the last output (None after an error)."""
        if self.nesting >= MAX_NESTING:
            shown = (
                self.stack if len(self.stack) <= 6 else [*self.stack[:3], "...", *self.stack[-2:]]
            )
            chain = f" (blocks {' -> '.join(shown)})" if self.stack else ""
            self.error(path, f"blocks and groups nested deeper than {MAX_NESTING} levels{chain}")
            return None
        self.nesting += 1
        try:
            previous: list[str | None] = first
            scope.declared.update(n.name for n in body if getattr(n, "name", None))
            for index, node in enumerate(body):
                node_path = (*path, index)
                previous = [self.expand_node(node, node_path, scope, previous, index)]
            return previous[0]
        finally:
            self.nesting -= 1

    def _inputs(
        self, node: NodeBase, path: PathKey, scope: Scope, previous: list[str | None]
    ) -> list[str | None] | None:
        if node.inputs is None:
            return previous
        if scope.is_group:
            self.error((*path, "inputs"), "nodes inside a group are sequential: remove 'inputs'")
            return None
        names = [node.inputs] if isinstance(node.inputs, str) else list(node.inputs)
        refs: list[str | None] = []
        for name in names:
            if name not in scope.locals:
                later = name in scope.declared
                message = (
                    f"{name!r} is defined later; a node may only use earlier nodes (no cycles)"
                    if later
                    else f"unknown node {name!r}{suggest(name, scope.locals)}"
                )
                self.error((*path, "inputs"), message)
                return None
            refs.append(scope.locals[name])
        return refs

    def _local_name(self, node: NodeBase, scope: Scope, index: int, default: str) -> str:
        if node.name:
            return node.name
        if scope.is_group:
            return str(index)
        name, k = (f"{default}_1", 2) if isinstance(node, Reuse) else (default, 1)
        while name in scope.locals or name in scope.used_names:
            name, k = f"{default}_{k}", k + 1
        return name

    def expand_node(
        self, node: Any, path: PathKey, scope: Scope, previous: list[str | None], index: int
    ) -> str | None:
        """Expand one node of a body and register its local name; returns its output id."""
        self._count_unit(path)
        default = (
            node.block
            if isinstance(node, BlockCall)
            else (
                str(node.group)
                if isinstance(node, Group)
                else (node.reuse if isinstance(node, Reuse) else node.op)
            )
        )
        local = (
            str(node.group)
            if isinstance(node, Group)
            else self._local_name(node, scope, index, default)
        )
        if (local in scope.locals and local != INPUT) or local in scope.used_names:
            self.error((*path, "name"), f"name {local!r} is used twice in this body")
        scope.used_names.add(local)
        inputs = self._inputs(node, path, scope, previous)
        if path in self.opaque or inputs is None or any(i is None for i in inputs):
            scope.locals[local] = None  # unknown: later nodes that read it are not checked
            return None
        enabled = self._when(node, path, scope)
        if not enabled:
            target: str | None = inputs[0]
            if getattr(node, "op", None) in MERGES and node.otherwise is None:
                names = [node.inputs] if isinstance(node.inputs, str) else list(node.inputs or [])
                refs = [i for i in inputs if i is not None]
                self.off_merges.append((path, node.op, names, refs))
            if node.otherwise is not None:
                if node.otherwise not in scope.locals:
                    self.error(
                        (*path, "otherwise"),
                        f"unknown node {node.otherwise!r}{suggest(node.otherwise, scope.locals)}",
                    )
                    target = None
                else:
                    target = scope.locals[node.otherwise]
            scope.locals[local] = target
            return target
        refs = [i for i in inputs if i is not None]
        if isinstance(node, BlockCall):
            out = self.expand_call(node, path, scope, refs, local)
        elif isinstance(node, Group):
            out = self.expand_group(node, path, scope, refs)
        elif isinstance(node, Reuse):
            out = self.expand_reuse(node, path, scope, refs, local)
        else:
            out = self.expand_op(node, path, scope, refs, local)
            if out is not None and node.when is not None:
                self.conditional.add(out)
            elif out is not None and len(refs) == 1 and node.op not in MERGES:
                scope.ops[local] = out
        scope.locals[local] = out
        return out

    def _when(self, node: NodeBase, path: PathKey, scope: Scope) -> bool:
        if node.when is None:
            return True
        try:
            value = evaluate(node.when, scope.env)
        except ExprError as exc:
            self.error((*path, "when"), str(exc), key="attr:when")
            return True
        if not isinstance(value, bool):
            self.error((*path, "when"), f"when must be true or false, got {short_repr(value)}")
            return True
        return value

    def _render_names(
        self, node: NodeBase, path: PathKey, env: Mapping[str, Any]
    ) -> dict[str, str]:
        names = {}
        if node.names:
            self._spend(path, len(node.names))
        for backend, template in node.names.items():
            try:
                name = render_template(template, env)
            except ExprError as exc:
                self.error((*path, "names", backend), str(exc))
                continue
            if name == "" and backend == "keras" and isinstance(node, Group):
                names[backend] = name  # no prefix of its own
                continue
            if len(name) > MAX_NAME_CHARS or not BACKEND_NAME.fullmatch(name):
                empty = " (only a group's Keras name may be empty)" if name == "" else ""
                self.error(
                    (*path, "names", backend),
                    f"{backend} name {short_repr(name)} is not a valid name "
                    f"(1 to {MAX_NAME_CHARS} letters, digits and _){empty}",
                )
                continue
            names[backend] = name
        return names

    # -- primitive ops -----------------------------------------------------------------
    def expand_op(
        self, node: NodeBase, path: PathKey, scope: Scope, refs: list[str], local: str
    ) -> str | None:
        """Evaluate attributes, infer the shape, append an IR node."""
        in_shapes = [self.shapes[r] for r in refs]
        if any(s is None for s in in_shapes):
            return None
        shapes = [s for s in in_shapes if s is not None]
        env = scope.env
        where = scope.prefix
        try:
            attrs = resolve_attrs(node, env, self.spec.defaults)
        except AttrError as exc:
            self.error((*path, exc.field), str(exc), key=f"attr:{exc.field}", where=where)
            return None
        except ExprError as exc:
            self.error(path, str(exc), where=where)
            return None
        node_id = scope.child_id(local)
        op = node.op  # type: ignore[attr-defined]
        ref_names = [self._display(r) for r in refs]
        layout = self._layout(op, attrs, refs, shapes, path, where or node_id)
        if layout is None:
            return None
        if op == "layer_scale" and scope.is_group:
            self.error(
                path,
                "layer_scale inside a group: torch keeps it as a parameter of its block "
                "(torchvision's layer_scale), which an nn.Sequential cannot hold; put it in "
                "a block body or the model body",
            )
            return None
        try:
            result = infer_node(op, attrs, ref_names, shapes)
        except InferError as exc:
            self.error(
                (*path, exc.field) if exc.field else path,
                str(exc),
                key=f"infer:{exc.field}",
                where=where or node_id,
            )
            return None
        size = 1
        for d in result.shape:
            size *= d
        if size > MAX_ACTIVATION:
            self._cap(
                path,
                f"{node_id} output {fmt(result.shape)} exceeds the activation cap "
                f"of {MAX_ACTIVATION:,} elements",
                "RESCOMPILER_MAX_ACTIVATION",
            )
        self.params += result.params + result.stats
        if self.params > MAX_PARAMS:
            self._cap(
                path,
                f"model exceeds the cap of {MAX_PARAMS:,} parameters",
                "RESCOMPILER_MAX_PARAMS",
            )
        if len(self.nodes) >= MAX_NODES:
            self._cap(
                path, f"model exceeds the cap of {MAX_NODES:,} layers", "RESCOMPILER_MAX_NODES"
            )
        names = self._render_names(node, path, scope.env)
        names["keras"] = scope.keras_name(names.get("keras", local))
        self._append(
            IRNode(
                id=node_id,
                op=op,
                attrs=attrs,
                inputs=tuple(refs),
                shape=result.shape,
                params=result.params,
                stats=result.stats,
                macs=result.macs,
                names=names,
                containers=scope.containers,
                location=self.locate(path),
                spec_path=format_path(path),
                layout=layout,
            )
        )
        self.shapes[node_id] = result.shape
        self.layouts[node_id] = layout
        return node_id

    def _layout(
        self,
        op: str,
        attrs: Mapping[str, Any],
        refs: list[str],
        shapes: list[tuple[int, ...]],
        path: PathKey,
        where: str,
    ) -> str | None:
        """Layout of an op's output (torch's memory order of a C×H×W map); None after an
        error: a channels-last map feeds only ops that act on it per position or channel."""
        layouts = {self.layouts.get(r, CHANNELS_FIRST) for r in refs}
        if len(layouts) > 1:
            self.error(
                (*path, "inputs"),
                f"{op} mixes channels-first and channels-last inputs: permute one of them",
                where=where,
            )
            return None
        layout = layouts.pop()
        if op == "permute":
            if attrs["to"] == layout and len(shapes[0]) == 3:
                self.error((*path, "to"), f"the input is {layout.replace('_', '-')} already")
                return None
            return str(attrs["to"])
        if layout == CHANNELS_LAST and op not in LAYOUT_FREE:
            self.error(
                path,
                f"{op} needs a channels-first map: put "
                "{op: permute, to: channels_first} before it",
                key="layout",
                where=where,
            )
            return None
        if op == "linear" and len(shapes[0]) == 3 and layout == CHANNELS_FIRST:
            self.error(
                path,
                "linear needs a flat input or a channels-last map: add a flatten (or a global "
                "pool) first, or {op: permute, to: channels_last} to act on the channels",
                key="layout",
                where=where,
            )
            return None
        return layout

    def _append(self, node: IRNode) -> None:
        self.nodes.append(node)
        self.by_id[node.id] = node

    def expand_reuse(
        self, node: Reuse, path: PathKey, scope: Scope, refs: list[str], local: str
    ) -> str | None:
        """Apply an earlier op node of the same body again: its attributes and weights, a new
        input (whose shape must fit the weights)."""
        name = node.reuse
        if scope.is_group:
            self.error(path, "reuse inside a group is not supported: a group is sequential")
            return None
        for key in ("when", "otherwise"):
            if getattr(node, key) is not None:
                self.error((*path, key), f"a reuse node cannot have '{key}'")
                return None
        if node.names:
            self.error((*path, "names"), "a reuse node has the names of the node it reuses")
            return None
        if len(refs) != 1:
            self.error((*path, "inputs"), "a reuse node takes one input")
            return None
        if name not in scope.ops:
            if name in scope.locals:
                message = (
                    f"{name!r} is not an op node built in every instance: reuse applies a "
                    "single-input op node (conv, bn, linear, an activation, ...) without "
                    "'when' again, not a block call, group or merge"
                )
            elif name in scope.declared:
                message = f"{name!r} is defined later; reuse an earlier node"
            else:
                message = f"unknown node {name!r}{suggest(name, scope.ops)}"
            self.error((*path, "reuse"), message)
            return None
        target = self.by_id[scope.ops[name]]
        if target.shares is not None:  # a reuse of a reuse applies the first node's layer
            target = self.by_id[target.shares]
        shape = self.shapes[refs[0]]
        if shape is None:
            return None
        try:
            result = infer_node(target.op, dict(target.attrs), [self._display(refs[0])], [shape])
        except InferError as exc:
            self.error(path, f"reuse of {name!r}: {exc}", where=scope.prefix)
            return None
        source = self.shapes.get(target.inputs[0])
        if result.params != target.params or result.stats != target.stats:
            self.error(
                (*path, "inputs"),
                f"the weights of {name!r} ({target.op} on {fmt(source or ())}) do not fit "
                f"an input of {fmt(shape)}",
                where=scope.prefix,
            )
            return None
        layout = self._layout(target.op, target.attrs, refs, [shape], path, scope.prefix)
        if layout is None:
            return None
        if layout != target.layout:
            self.error(
                (*path, "inputs"), f"{name!r} ran on a {target.layout} map, this is {layout}"
            )
            return None
        node_id = scope.child_id(local)
        self._append(
            IRNode(
                id=node_id,
                op=target.op,
                attrs=target.attrs,
                inputs=tuple(refs),
                shape=result.shape,
                params=0,
                stats=0,
                macs=result.macs,
                names=dict(target.names),
                containers=scope.containers,
                location=self.locate(path),
                spec_path=format_path(path),
                shares=target.shares or target.id,
                layout=layout,
            )
        )
        self.shapes[node_id] = result.shape
        self.layouts[node_id] = layout
        scope.ops[local] = node_id
        return node_id

    def _display(self, ref: str) -> str:
        return "the block input" if ref == INPUT else ref

    def _cap(self, path: PathKey, message: str, variable: str) -> None:
        self.error(path, f"{message}; raise it with the environment variable {variable}")
        raise CapExceeded

    # -- containers --------------------------------------------------------------------
    def expand_group(self, node: Group, path: PathKey, scope: Scope, refs: list[str]) -> str | None:
        """A named sequential container; children are named by position unless named."""
        if isinstance(node.group, int) and not scope.is_group:
            self.error(
                (*path, "group"),
                "a group is named by a number only inside another group (a child of an "
                "nn.Sequential); give it a name",
            )
            return None
        group_id = scope.child_id(str(node.group))
        names = self._render_names(node, path, scope.env)
        keras = scope.keras_name(names.get("keras", str(node.group)))
        self.containers[group_id] = Container(
            group_id, "group", None, {}, names, self.locate(path), format_path(path)
        )
        inner = Scope(group_id, keras, (*scope.containers, group_id), scope.env, {}, is_group=True)
        self.group_scopes[group_id] = (inner, node)
        return self.expand_body(node.body, (*path, "body"), inner, list(refs))

    def expand_call(
        self, node: BlockCall, path: PathKey, scope: Scope, refs: list[str], local: str
    ) -> str | None:
        """One block instance, or a stage of ``repeat`` instances chained first input to output."""
        template = self.spec.blocks.get(node.block)
        if template is None:
            self.error(
                (*path, "block"),
                f"unknown block {node.block!r}{suggest(node.block, self.spec.blocks)}",
            )
            return None
        call_id = scope.child_id(local)
        if node.repeat is None:
            env = scope.env
            args = self._args(node, path, template, env)
            if args is None:
                return None
            names = self._render_names(node, path, env)
            keras = scope.keras_name(names.get("keras", local))
            return self.instantiate(node, template, path, args, refs, call_id, keras, scope, names)
        try:
            count = evaluate(node.repeat, scope.env)
        except ExprError as exc:
            self.error((*path, "repeat"), str(exc), key="attr:repeat")
            return None
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            self.error(
                (*path, "repeat"), f"repeat must be a positive integer, got {short_repr(count)}"
            )
            return None
        # checked before a single instance is made: each instance counts towards the cap
        if count > MAX_NODES:
            self._cap(
                (*path, "repeat"),
                f"repeat {count:,} exceeds the cap of {MAX_NODES:,} layers",
                "RESCOMPILER_MAX_NODES",
            )
        if count * self.multiplier > MAX_NODES:
            self._cap(
                (*path, "repeat"),
                f"repeat {count:,} inside stages repeated {self.multiplier:,} times makes "
                f"{count * self.multiplier:,} block instances, over the cap of {MAX_NODES:,} "
                "layers",
                "RESCOMPILER_MAX_NODES",
            )
        if self.units + count > MAX_NODES:
            self._cap(
                (*path, "repeat"),
                f"repeat {count:,} after {self.units:,} layers, block instances and groups "
                f"exceeds the cap of {MAX_NODES:,} layers",
                "RESCOMPILER_MAX_NODES",
            )
        self.containers[call_id] = Container(
            call_id,
            "stage",
            node.block,
            {"repeat": count},
            {},
            self.locate(path),
            format_path(path),
        )
        stage_scope = Scope(call_id, scope.keras_prefix, (*scope.containers, call_id), scope.env)
        outer = self.multiplier
        self.multiplier = outer * count
        try:
            return self._expand_stage(node, path, template, scope, stage_scope, refs, local, count)
        finally:
            self.multiplier = outer

    def _expand_stage(
        self,
        node: BlockCall,
        path: PathKey,
        template: BlockTemplate,
        scope: Scope,
        stage_scope: Scope,
        refs: list[str],
        local: str,
        count: int,
    ) -> str | None:
        current = list(refs)
        out: str | None = None
        children: dict[str, int] = {}
        model_level = not self.stack  # its blocks count in block_index and block_count
        for i in range(count):
            self._count_unit(path)
            env = {**scope.env, "i": i, "n": count}
            if model_level:
                env |= {"block_index": self.block_index, "block_count": self.block_count}
                self.block_index += 1
            args = self._args(node, path, template, env)
            try:
                child = render_template(node.child_name, env)
            except ExprError as exc:
                self.error((*path, "child_name"), str(exc))
                return None
            problem = child_name_problem(child)
            if problem is not None:
                self.error(
                    (*path, "child_name"),
                    f"child name {short_repr(child)} of block {i} is not a valid name: {problem}",
                )
                return None
            first = children.setdefault(child, i)
            if first != i:
                self.error(
                    (*path, "child_name"),
                    f"blocks {first} and {i} of this stage are both named {child!r}: "
                    "child names must differ (use i, e.g. 'layer{i}')",
                )
                return None
            names = self._render_names(node, path, env)
            child_id = f"{stage_scope.prefix}.{child}"
            keras = scope.keras_name(names.get("keras", f"{local}_{child}"))
            if args is None:
                return None
            out = self.instantiate(
                node, template, path, args, current, child_id, keras, stage_scope, names
            )
            if out is None:
                return None
            current = [out, *current[1:]]
        return out

    def _args(
        self, node: BlockCall, path: PathKey, template: BlockTemplate, env: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        args = {}
        ok = True
        misspelt: set[str] = set()
        self._spend(path, len(node.args))
        for key, value in node.args.items():
            if key not in template.params:
                hint = suggest(key, template.params)
                misspelt.update(p for p in template.params if hint.endswith(f"{p!r}?)"))
                self.error((*path, "args", key), f"block {node.block!r} has no param {key!r}{hint}")
                ok = False
                continue
            try:
                args[key] = evaluate(value, env)
            except ExprError as exc:
                self.error((*path, "args", key), str(exc), key=f"attr:{key}")
                ok = False
        for key, default in template.params.items():
            if default is None and key not in node.args and key not in misspelt:
                self.error((*path, "args"), f"block {node.block!r} needs param {key!r}")
                ok = False
        return args if ok else None

    def instantiate(
        self,
        node: BlockCall,
        template: BlockTemplate,
        path: PathKey,
        args: dict[str, Any],
        refs: list[str],
        block_id: str,
        keras_prefix: str,
        scope: Scope,
        names: dict[str, str],
    ) -> str | None:
        """Expand one block instance with evaluated args; returns its output id."""
        tpath: PathKey = ("blocks", node.block)
        if node.block in self.stack:
            chain = " -> ".join([*self.stack, node.block])
            self.error((*path, "block"), f"block {node.block!r} uses itself ({chain})")
            return None
        if len(refs) != len(template.inputs):
            self.error(
                (*path, "inputs"),
                f"block {node.block!r} takes {len(template.inputs)} input(s) "
                f"{template.inputs}, got {len(refs)}",
            )
            return None
        first_shape = self.shapes[refs[0]]
        if first_shape is None:
            return None
        self._spend(path, len(template.params) + len(template.let))
        env: dict[str, Any] = dict(self.globals)
        for key, default in template.params.items():  # expressions over the model's names
            if default is not None and key not in args:
                try:
                    env[key] = evaluate(default, self.globals)
                except ExprError as exc:
                    self.error((*tpath, "params", key), str(exc), key=f"attr:{key}", where=block_id)
                    return None
        env.update(args)
        env["in_channels"] = first_shape[0]
        for key, value in template.let.items():
            try:
                env[key] = evaluate(value, env)
            except ExprError as exc:
                self.error((*tpath, "let", key), str(exc), key=f"attr:{key}", where=block_id)
                return None
        self.containers[block_id] = Container(
            block_id, "block", node.block, args, names, self.locate(path), format_path(path)
        )
        local: dict[str, str | None] = dict(zip(template.inputs, refs, strict=True))
        local.setdefault(INPUT, refs[0])
        inner = Scope(block_id, keras_prefix, (*scope.containers, block_id), env, local)
        inner.used_names.update(local)
        self.stack.append(node.block)
        try:
            out = self.expand_body(template.body, (*tpath, "body"), inner, [refs[0]])
        finally:
            self.stack.pop()
        if template.output is not None:
            if template.output not in inner.locals:
                self.error(
                    (*tpath, "output"),
                    f"unknown node {template.output!r}{suggest(template.output, inner.locals)}",
                )
                return None
            out = inner.locals[template.output]
        return out
