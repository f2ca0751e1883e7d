"""Static name checks, run once per template before expansion, so that a mistake is reported
even in a block that is never instantiated, and once however many times the block is used:

- every expression may only read names that exist where it is written (:func:`check_names`);
- every param is read by some expression (:func:`check_unread_params`): a param that nothing
  reads is almost always a typo (``num_clases: 10`` in a variant silently changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import DiagnosticSink, Location, format_path
from .expr import ExprError, parse_expr, suggest, template_parts
from .schema import INIT_NAMES, NOT_EXPRESSIONS, BlockCall, Group, NodeBase, SpecModel

PathKey = tuple[str | int, ...]
KEYWORD_VALUES = {"padding": {"same", "valid"}}
STAGE_NAMES = frozenset({"i", "n"})
MODEL_STAGE_NAMES = STAGE_NAMES | {"block_index", "block_count"}  # stages of the model body


def unknown_name(name: str, allowed: set[str]) -> str:
    """``unknown name 'x'`` with a did-you-mean, or where the name can be read."""
    if name in MODEL_STAGE_NAMES - STAGE_NAMES:
        return (
            f"unknown name {name!r}: block_index and block_count are read by the args of the "
            "stages of the model body (pass the value on to a block as an arg)"
        )
    return f"unknown name {name!r}{suggest(name, allowed)}"


@dataclass
class Reads:
    """The names a spec's expressions read: at model level (lets, input shape, model body,
    block param defaults, and a block's reads of names that are not its own), and per block
    (every name its lets and body read)."""

    model: set[str] = field(default_factory=set)
    blocks: dict[str, set[str]] = field(default_factory=dict)


class NameChecker:
    """Walks a spec model and records expressions that read unknown names.

    It also collects the names each expression reads into :attr:`frame` (a stage's ``i`` and
    ``n`` excepted where they are the stage's), so that params nothing reads can be found."""

    def __init__(self, locate: Callable[[PathKey], Location], sink: DiagnosticSink) -> None:
        self.locate = locate
        self.sink = sink
        self.frame: set[str] = set()
        self.shadow: frozenset[str] = frozenset()

    def report(self, path: PathKey, field: str, message: str) -> None:
        """Record an error at ``path`` (once per position and field)."""
        self.sink.error(self.locate(path), format_path(path), message, f"attr:{field}")

    def _read(self, names: Iterable[str]) -> None:
        self.frame.update(n for n in names if n not in self.shadow)

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
        self._read(names)
        for name in sorted(names - allowed):
            self.report(path, field, unknown_name(name, allowed))

    def check_template(self, template: str, allowed: set[str], path: PathKey, field: str) -> None:
        """Check the ``{...}`` expressions of a name template."""
        try:
            parts = template_parts(template)
        except ExprError as exc:
            self.report(path, field, str(exc))
            return
        for part in parts:
            if not isinstance(part, str):
                self._read(part.names)
                for name in sorted(part.names - allowed):
                    self.report(path, field, unknown_name(name, allowed))

    def check_body(self, body: Iterable[Any], allowed: set[str], path: PathKey) -> None:
        """Check every node of a body."""
        for index, node in enumerate(body):
            self.check_node(node, allowed, (*path, index))

    def check_node(self, node: NodeBase, allowed: set[str], path: PathKey) -> None:
        """Check one node's expression fields."""
        if node.when is not None:
            self.check_value(node.when, allowed, (*path, "when"), "when")
        stage = isinstance(node, BlockCall) and node.repeat is not None
        own = MODEL_STAGE_NAMES if path[0] == "body" else STAGE_NAMES
        inner = allowed | own if stage else allowed
        outer_shadow = self.shadow
        if stage:  # a stage's i and n are its own, not params of the same name
            self.shadow = outer_shadow | own
        try:
            for backend, template in node.names.items():
                self.check_template(template, inner, (*path, "names", backend), f"names.{backend}")
        finally:
            self.shadow = outer_shadow
        if isinstance(node, Group):
            self.check_body(node.body, allowed, (*path, "body"))
            return
        if isinstance(node, BlockCall):
            if node.repeat is not None:
                self.check_value(node.repeat, allowed, (*path, "repeat"), "repeat")
            self.shadow = outer_shadow | own if stage else outer_shadow
            try:
                if node.repeat is not None:
                    self.check_template(node.child_name, inner, (*path, "child_name"), "child_name")
                for key, value in node.args.items():
                    self.check_value(value, inner, (*path, "args", key), key)
            finally:
                self.shadow = outer_shadow
            return
        for field_name in type(node).model_fields:
            if field_name in NOT_EXPRESSIONS or field_name == "when":
                continue
            value = getattr(node, field_name)
            if field_name == "init" and value is not None:
                for tensor in ("weight", "bias"):
                    raw = getattr(value, tensor)
                    if raw is not None and raw not in INIT_NAMES:
                        allowed_init = allowed | set(INIT_NAMES)
                        self.check_value(raw, allowed_init, (*path, field_name), "init")
                continue
            self.check_value(value, allowed, (*path, field_name), field_name)

    def take_frame(self) -> set[str]:
        """The names read since the last call, and start a new frame."""
        frame, self.frame = self.frame, set()
        return frame


def check_names(
    spec: SpecModel, locate: Callable[[PathKey], Location], sink: DiagnosticSink
) -> Reads:
    """Record an error for every expression that reads a name not defined where it is used.

    Returns the names read (for :func:`check_unread_params`)."""
    checker = NameChecker(locate, sink)
    reads = Reads()
    model_names = set(spec.params)
    for key, value in spec.let.items():
        checker.check_value(value, model_names, ("let", key), key)
        model_names.add(key)
    for k, check in enumerate(spec.checks):
        checker.check_value(check.that, model_names, ("checks", k, "that"), "that")
    checker.check_value(spec.input_shape, model_names, ("input_shape",), "input_shape")
    checker.check_body(spec.body, model_names, ("body",))
    reads.model |= checker.take_frame()
    for name, template in spec.blocks.items():
        allowed = model_names | set(template.params) | {"in_channels"}
        for key, value in template.params.items():
            checker.check_value(value, model_names, ("blocks", name, "params", key), key)
        reads.model |= checker.take_frame()  # defaults are evaluated over the model's names
        for key, value in template.let.items():
            checker.check_value(value, allowed, ("blocks", name, "let", key), key)
            allowed.add(key)
        checker.check_body(template.body, allowed, ("blocks", name, "body"))
        inside = checker.take_frame()
        reads.blocks[name] = inside
        own = set(template.params) | set(template.let) | {"in_channels"}
        reads.model |= inside - own
    return reads


def check_unread_params(
    spec: SpecModel,
    reads: Reads,
    locate: Callable[[PathKey], Location],
    sink: DiagnosticSink,
    own_file: str | None = None,
) -> None:
    """Report every model param and every block param that no expression reads.

    One that is close to a name that is read is a typo (``num_clases`` next to
    ``num_classes``, ``width_per_grup`` in a variant): an error, with the closest name. One
    that is close to nothing is a warning (a param kept for ``build(**params)``, say), unless
    it comes from a base file (``own_file`` is the spec's): a variant that deletes the head
    leaves its base's ``num_classes`` unread, and that is no news."""
    unread: list[tuple[PathKey, str, set[str]]] = [
        (("params", key), f"param {key!r}", reads.model) for key in spec.params
    ]
    for name, template in spec.blocks.items():
        inside = reads.blocks.get(name, set())
        unread += [
            (("blocks", name, "params", key), f"param {key!r} of block {name!r}", inside)
            for key in template.params
        ]
    for path, what, read in unread:
        key = str(path[-1])
        if key in read:
            continue
        hint = suggest(key, sorted(read - {key}))
        if hint:
            message = f"{what} is never read{hint}"
            sink.error(locate(path), format_path(path), message, f"unread:{format_path(path)}")
        else:
            location = locate(path)
            if own_file is None or location.file == own_file:
                sink.warning(location, format_path(path), f"{what} is never read")
