"""Static name check: every expression in the spec may only read names that exist where it
is written. Runs once per template, before expansion, so a typo is reported even in a block
that is never instantiated, and once however many times the block is used."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import DiagnosticSink, Location, format_path
from .expr import ExprError, parse_expr, suggest, template_parts
from .schema import INIT_NAMES, BlockCall, Group, NodeBase, SpecModel

PathKey = tuple[str | int, ...]
NOT_EXPRESSIONS = {"name", "inputs", "otherwise", "doc", "op", "block", "group", "mode", "names"}
KEYWORD_VALUES = {"padding": {"same", "valid"}}


class NameChecker:
    """Walks a spec model and records expressions that read unknown names."""

    def __init__(self, locate: Callable[[PathKey], Location], sink: DiagnosticSink) -> None:
        self.locate = locate
        self.sink = sink

    def report(self, path: PathKey, field: str, message: str) -> None:
        self.sink.error(self.locate(path), format_path(path), message, f"attr:{field}")

    def check_value(self, value: Any, allowed: set[str], path: PathKey, field: str) -> None:
        """Check a literal, an expression string, or a list of them."""
        if isinstance(value, list):
            for index, item in enumerate(value):
                self.check_value(item, allowed, (*path, index), field)
            return
        if isinstance(value, dict):
            for key, item in value.items():
                self.check_value(item, allowed, (*path, key), field)
            return
        if not isinstance(value, str) or value in KEYWORD_VALUES.get(field, ()):
            return
        try:
            names = parse_expr(value).names
        except ExprError as exc:
            self.report(path, field, str(exc))
            return
        for name in sorted(names - allowed):
            self.report(path, field, f"unknown name {name!r}{suggest(name, allowed)}")

    def check_template(self, template: str, allowed: set[str], path: PathKey, field: str) -> None:
        """Check the ``{...}`` expressions of a name template."""
        try:
            parts = template_parts(template)
        except ExprError as exc:
            self.report(path, field, str(exc))
            return
        for part in parts:
            if not isinstance(part, str):
                for name in sorted(part.names - allowed):
                    self.report(path, field, f"unknown name {name!r}{suggest(name, allowed)}")

    def check_body(self, body: Iterable[Any], allowed: set[str], path: PathKey) -> None:
        """Check every node of a body."""
        for index, node in enumerate(body):
            self.check_node(node, allowed, (*path, index))

    def check_node(self, node: NodeBase, allowed: set[str], path: PathKey) -> None:
        """Check one node's expression fields."""
        if node.when is not None:
            self.check_value(node.when, allowed, (*path, "when"), "when")
        inner = (
            allowed | {"i", "n"}
            if isinstance(node, BlockCall) and node.repeat is not None
            else allowed
        )
        for backend, template in node.names.items():
            self.check_template(template, inner, (*path, "names", backend), f"names.{backend}")
        if isinstance(node, Group):
            self.check_body(node.body, allowed, (*path, "body"))
            return
        if isinstance(node, BlockCall):
            if node.repeat is not None:
                self.check_value(node.repeat, allowed, (*path, "repeat"), "repeat")
                self.check_template(node.child_name, inner, (*path, "child_name"), "child_name")
            for key, value in node.args.items():
                self.check_value(value, inner, (*path, "args", key), key)
            return
        for field in type(node).model_fields:
            if field in NOT_EXPRESSIONS or field == "when":
                continue
            value = getattr(node, field)
            if field == "init" and value is not None:
                for tensor in ("weight", "bias"):
                    raw = getattr(value, tensor)
                    if raw is not None and raw not in INIT_NAMES:
                        self.check_value(raw, allowed | set(INIT_NAMES), (*path, field), "init")
                continue
            self.check_value(value, allowed, (*path, field), field)


def check_names(
    spec: SpecModel, locate: Callable[[PathKey], Location], sink: DiagnosticSink
) -> None:
    """Record an error for every expression that reads a name not defined where it is used."""
    checker = NameChecker(locate, sink)
    model_names = set(spec.params)
    for key, value in spec.let.items():
        checker.check_value(value, model_names, ("let", key), key)
        model_names.add(key)
    checker.check_value(spec.input_shape, model_names, ("input_shape",), "input_shape")
    checker.check_body(spec.body, model_names, ("body",))
    for name, template in spec.blocks.items():
        allowed = model_names | set(template.params) | {"in_channels"}
        for key, value in template.params.items():
            checker.check_value(value, model_names, ("blocks", name, "params", key), key)
        for key, value in template.let.items():
            checker.check_value(value, allowed, ("blocks", name, "let", key), key)
            allowed.add(key)
        checker.check_body(template.body, allowed, ("blocks", name, "body"))
