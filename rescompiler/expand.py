"""Expand a validated spec into the IR: instantiate block templates and stages, evaluate
expressions, infer shapes node by node (block params may depend on input channels), check
merges, and drop nodes that do not reach the output. Errors are collected, not raised."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .attrs import AttrError, resolve_attrs
from .errors import DiagnosticSink, Location, format_path
from .expr import ExprError, evaluate, render_template, suggest
from .infer import InferError, fmt, infer_node
from .ir import INPUT, Container, Graph, IRNode
from .schema import BlockCall, BlockTemplate, Group, NodeBase, SpecModel

PathKey = tuple[str | int, ...]


def _cap(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


MAX_NODES = _cap("RESCOMPILER_MAX_NODES", 250_000)
MAX_PARAMS = _cap("RESCOMPILER_MAX_PARAMS", 20_000_000_000)
MAX_ACTIVATION = _cap("RESCOMPILER_MAX_ACTIVATION", 4_000_000_000)


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

    def child_id(self, local: str) -> str:
        return f"{self.prefix}.{local}" if self.prefix else local

    def keras_name(self, own: str) -> str:
        return f"{self.keras_prefix}_{own}" if self.keras_prefix else own


class Expander:
    """Builds the IR of one spec; ``locate`` maps a spec path to its source position."""

    def __init__(
        self,
        spec: SpecModel,
        env: Mapping[str, Any],
        locate: Callable[[PathKey], Location],
        sink: DiagnosticSink,
    ) -> None:
        self.spec = spec
        self.globals = dict(env)
        self.locate = locate
        self.sink = sink
        self.nodes: list[IRNode] = []
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.containers: dict[str, Container] = {}
        self.params = 0
        self.conditional: set[str] = set()
        self.stack: list[str] = []
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
        scope = Scope("", "", (), self.globals, {INPUT: INPUT})
        try:
            output = self.expand_body(self.spec.body, ("body",), scope, [INPUT])
        except CapExceeded:
            return None
        if self.sink.errors or output is None:
            return None
        return Graph(
            self.spec.name,
            input_shape,
            tuple(self._live_nodes(output)),
            output,
            self.containers,
        )

    def _live_nodes(self, output: str) -> list[IRNode]:
        live = {output}
        for node in reversed(self.nodes):
            if node.id in live:
                live.update(node.inputs)
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
        previous: list[str | None] = first
        scope.declared.update(n.name for n in body if getattr(n, "name", None))
        for index, node in enumerate(body):
            node_path = (*path, index)
            previous = [self.expand_node(node, node_path, scope, previous, index)]
        return previous[0]

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
        name, k = default, 1
        while name in scope.locals or name in scope.used_names:
            name, k = f"{default}_{k}", k + 1
        return name

    def expand_node(
        self, node: Any, path: PathKey, scope: Scope, previous: list[str | None], index: int
    ) -> str | None:
        """Expand one node of a body and register its local name; returns its output id."""
        default = (
            node.block
            if isinstance(node, BlockCall)
            else (node.group if isinstance(node, Group) else node.op)
        )
        local = (
            node.group if isinstance(node, Group) else self._local_name(node, scope, index, default)
        )
        if (local in scope.locals and local != INPUT) or local in scope.used_names:
            self.error((*path, "name"), f"name {local!r} is used twice in this body")
        scope.used_names.add(local)
        inputs = self._inputs(node, path, scope, previous)
        if inputs is None or any(i is None for i in inputs):
            scope.locals[local] = None
            return None
        enabled = self._when(node, path, scope)
        if not enabled:
            target: str | None = inputs[0]
            if getattr(node, "op", None) in ("add", "concat") and node.otherwise is None:
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
        else:
            out = self.expand_op(node, path, scope, refs, local)
            if out is not None and node.when is not None:
                self.conditional.add(out)
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
            self.error((*path, "when"), f"when must be true or false, got {value!r}")
            return True
        return value

    def _render_names(
        self, node: NodeBase, path: PathKey, env: Mapping[str, Any]
    ) -> dict[str, str]:
        names = {}
        for backend, template in node.names.items():
            try:
                names[backend] = render_template(template, env)
            except ExprError as exc:
                self.error((*path, "names", backend), str(exc))
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
        self.nodes.append(
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
            )
        )
        self.shapes[node_id] = result.shape
        return node_id

    def _display(self, ref: str) -> str:
        return "the block input" if ref == INPUT else ref

    def _cap(self, path: PathKey, message: str, variable: str) -> None:
        self.error(path, f"{message}; raise it with the environment variable {variable}")
        raise CapExceeded

    # -- containers --------------------------------------------------------------------
    def expand_group(self, node: Group, path: PathKey, scope: Scope, refs: list[str]) -> str | None:
        """A named sequential container; children are named by position unless named."""
        group_id = scope.child_id(node.group)
        names = self._render_names(node, path, scope.env)
        keras = scope.keras_name(names.get("keras", node.group))
        self.containers[group_id] = Container(
            group_id, "group", None, {}, names, self.locate(path), format_path(path)
        )
        inner = Scope(group_id, keras, (*scope.containers, group_id), scope.env, {}, is_group=True)
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
            self.error((*path, "repeat"), f"repeat must be a positive integer, got {count!r}")
            return None
        if count > MAX_NODES:
            self._cap(
                (*path, "repeat"),
                f"repeat {count:,} exceeds the cap of {MAX_NODES:,} layers",
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
        current = list(refs)
        out: str | None = None
        for i in range(count):
            env = {**scope.env, "i": i, "n": count}
            args = self._args(node, path, template, env)
            try:
                child = render_template(node.child_name, env)
            except ExprError as exc:
                self.error((*path, "child_name"), str(exc))
                return None
            names = self._render_names(node, path, env)
            child_id = f"{call_id}.{child}"
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
