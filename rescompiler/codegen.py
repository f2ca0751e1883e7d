"""Framework-free helpers shared by the emitters: one identifier policy, expression and
name-template translation, and the free names of block templates."""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import tokenize
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import Any

from .expr import ExprError, evaluate, parse_expr, template_parts
from .pyformat import Call, layout
from .pytext import docstring, literal, printable, raise_lines
from .schema import (
    NOT_EXPRESSIONS,
    BlockCall,
    BlockTemplate,
    Check,
    Group,
    NodeBase,
    Reuse,
    SpecModel,
)

KEYWORDS = {"same", "valid"}


class Namespace:
    """Hands out unique, valid Python identifiers that never shadow keywords or builtins."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._used: set[str] = set(reserved)

    def create(self, candidate: str) -> str:
        """A fresh identifier based on ``candidate`` (sanitised, suffixed when taken)."""
        base = re.sub(r"\W", "_", candidate) or "v"
        if base[0].isdigit():
            base = f"v{base}"
        if keyword.iskeyword(base) or hasattr(builtins, base):
            base = f"{base}_"
        name, k = base, 1
        while name in self._used:
            name, k = f"{base}_{k}", k + 1
        self._used.add(name)
        return name

    def reserve(self, name: str) -> None:
        """Mark ``name`` as taken."""
        self._used.add(name)


def camel(name: str) -> str:
    """``dense_layer`` → ``DenseLayer``; ``resnet50v2`` → ``Resnet50v2``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Block"


def double_quotes(source: str) -> str:
    """Rewrite simple single-quoted string literals in one-line ``source`` with double quotes."""
    chars = list(source)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        text = token.string
        if token.type != tokenize.STRING or '"' in text or "\\" in text or token.start[0] != 1:
            continue
        first = token.start[1] + (1 if text.startswith("f") else 0)
        last = token.end[1] - 1
        if chars[first] == "'" and chars[last] == "'" and last > first:
            chars[first] = chars[last] = '"'
    return "".join(chars)


def py(value: Any, rename: Any = None) -> str:
    """Python source of a spec value: literals as ``repr``, strings as translated expressions."""
    if isinstance(value, str):
        expr = parse_expr(value)
        return double_quotes(expr.to_python(rename) if rename else expr.to_python())
    if isinstance(value, list):
        return "[" + ", ".join(py(v, rename) for v in value) + "]"
    if isinstance(value, tuple):
        return (
            "(" + ", ".join(py(v, rename) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    return repr(value)


def fstring(template: str, rename: Callable[[str], str] | None = None) -> str:
    """A name template (``denselayer{i + 1}``) as Python source: a literal or an f-string."""
    parts = template_parts(template)
    if all(isinstance(p, str) for p in parts):
        return repr(template)
    body = "".join(
        p.replace("{", "{{").replace("}", "}}")
        if isinstance(p, str)
        else "{" + (p.to_python(rename) if rename else p.to_python()) + "}"
        for p in parts
    )
    return double_quotes("f" + repr(body))


def template_names(template: str) -> set[str]:
    """Names read by a name template's expressions."""
    return set().union(
        *(set(p.names) for p in template_parts(template) if not isinstance(p, str)), set()
    )


def value_names(value: Any) -> set[str]:
    """Names read by a literal/expression/list value."""
    if isinstance(value, str):
        if value in KEYWORDS:
            return set()
        return set(parse_expr(value).names)
    if isinstance(value, list):
        return set().union(*(value_names(v) for v in value)) if value else set()
    if isinstance(value, NodeBase):
        return set()
    return set()


def node_names(node: NodeBase) -> set[str]:
    """Names read by one node's expressions (not its children)."""
    names: set[str] = set()
    if node.when is not None:
        names |= value_names(node.when)
    if isinstance(node, BlockCall):
        if node.repeat is not None:
            names |= value_names(node.repeat)
        for value in node.args.values():
            names |= value_names(value)
        return names - {"i", "n"}
    if isinstance(node, Group):
        return names
    for field in type(node).model_fields:
        if field in NOT_EXPRESSIONS or field == "when":
            continue
        value = getattr(node, field)
        if field == "init":
            if value is not None:
                for raw in (value.weight, value.bias):
                    if raw is not None:
                        names |= value_names(raw)
            continue
        names |= value_names(value)
    return names


TEXT_FIELDS = {"doc", "description", "reference", "name", "op", "block", "group", "extends"}
# not Python builtins: emitted modules define or import them when the spec calls them
LIBRARY_FUNCTIONS = ("ceil", "floor", "make_divisible", "regnet_stages")


def functions_used(model: SpecModel) -> list[str]:
    """Which of :data:`LIBRARY_FUNCTIONS` the spec's expressions and name templates call."""
    found: set[str] = set()

    def calls(source: str) -> None:
        try:
            exprs = [parse_expr(source)]
        except ExprError:
            try:
                exprs = [p for p in template_parts(source) if not isinstance(p, str)]
            except ExprError:
                return
        for expr in exprs:
            for node in ast.walk(expr.tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    found.add(node.func.id)

    def visit(value: Any) -> None:
        if isinstance(value, str):
            calls(value)
        elif isinstance(value, list):
            for item in value:
                visit(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in TEXT_FIELDS:
                    visit(item)

    visit(model.model_dump(exclude_defaults=True))
    return [f for f in LIBRARY_FUNCTIONS if f in found]


# initialisers the generated modules define only when a spec names one (the others are always
# there): Keras' VarianceScaling(2.0, mode, "truncated_normal"), keras.applications'
# EfficientNet conv initialiser at fan_out (its DepthwiseConv2D's fan_out is torch's fan_in)
OPTIONAL_INITS = ("kaiming_truncated_normal_fan_out", "kaiming_truncated_normal_fan_in")


def optional_inits(model: SpecModel) -> list[str]:
    """Which of :data:`OPTIONAL_INITS` the spec names: in an ``init`` field (or expression),
    or as a value anywhere (a param an ``init`` expression reads)."""
    found: set[str] = set()

    def visit(value: Any, in_init: bool) -> None:
        if isinstance(value, str):
            names = value_names(value) if in_init else {value}
            found.update(n for n in OPTIONAL_INITS if n in names)
        elif isinstance(value, list):
            for item in value:
                visit(item, in_init)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in TEXT_FIELDS:
                    visit(item, in_init or key == "init")

    visit(model.model_dump(exclude_defaults=True), False)
    return [n for n in OPTIONAL_INITS if n in found]


def walk(body: Iterable[Any]) -> Iterable[Any]:
    """Every node of a body, groups' children included."""
    for node in body:
        yield node
        if isinstance(node, Group):
            yield from walk(node.body)


def named_outputs(model: SpecModel) -> dict[str, str]:
    """The model's named outputs, output name -> node name; empty for one output."""
    raw = model.outputs
    if raw is None:
        return {}
    return dict(raw) if isinstance(raw, dict) else {name: name for name in raw}


COUNTERS = ("block_index", "block_count")  # what the stages of the model body may read


def model_stages(
    body: Iterable[Any], whens: tuple[Any, ...] = ()
) -> Iterable[tuple[BlockCall, tuple[Any, ...]]]:
    """The stages (``repeat``) of the model body, groups included, each with the ``when``s
    that switch it (its own and its groups')."""
    for node in body:
        own = whens if node.when is None else (*whens, node.when)
        if isinstance(node, Group):
            yield from model_stages(node.body, own)
        elif isinstance(node, BlockCall) and node.repeat is not None:
            yield node, own


def counters_read(model: SpecModel) -> set[str]:
    """Which of ``block_index``/``block_count`` the model body's stages read."""
    found: set[str] = set()
    for node, _whens in model_stages(model.body):
        found |= set().union(*(value_names(v) for v in node.args.values()), set())
        found |= template_names(node.child_name) | (
            set().union(*(template_names(t) for t in node.names.values()), set())
        )
    return found & set(COUNTERS)


def block_count_terms(model: SpecModel, translate: Callable[[Any], str] = py) -> list[str]:
    """Terms of ``block_count``'s sum: the blocks of every stage of the model body that is
    built (``0`` when there is none)."""
    terms = []
    for node, whens in model_stages(model.body):
        if any(w is False for w in whens):
            continue
        term = translate(node.repeat)
        conditions = [translate(w) for w in whens if w is not True]
        if conditions:
            term = f"({term} if {' and '.join(f'({c})' for c in conditions)} else 0)"
        elif not _binds_tighter_than_plus(term):
            term = f"({term})"
        terms.append(term)
    return terms or ["0"]


def _binds_tighter_than_plus(source: str) -> bool:
    tree = ast.parse(source, mode="eval").body
    if isinstance(tree, ast.BinOp):
        return isinstance(tree.op, ast.Mult | ast.Div | ast.FloorDiv | ast.Mod | ast.Pow)
    return isinstance(tree, ast.Call | ast.Name | ast.Subscript | ast.Attribute | ast.Constant)


def global_names(
    spec: SpecModel,
    init_names: Iterable[str] = (),
    reads: Callable[[Any], set[str]] | None = None,
) -> dict[str, list[str]]:
    """For each block template, the model-level names (params, lets) it reads, transitively
    through the blocks it uses, sorted. Emitted blocks take them as keyword arguments.

    ``reads`` gives the names one node reads (default: its expressions); a backend that also
    emits name templates passes a reader that includes them.
    """
    reads = reads or node_names
    model_names = set(spec.params) | set(spec.let)
    ignore = set(init_names)
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name, template in spec.blocks.items():
        local = set(template.params) | set(template.let) | {"in_channels"}
        used: set[str] = set()
        for value in [*template.params.values(), *template.let.values()]:
            used |= value_names(value)
        for node in walk(template.body):
            used |= reads(node)
        direct[name] = (used - local - ignore) & model_names
        calls[name] = {n.block for n in walk(template.body) if isinstance(n, BlockCall)}
    result: dict[str, list[str]] = {}
    for name in spec.blocks:
        seen, stack, names = {name}, [name], set()
        while stack:
            current = stack.pop()
            names |= direct.get(current, set())
            for callee in calls.get(current, ()):
                if callee not in seen and callee in spec.blocks:
                    seen.add(callee)
                    stack.append(callee)
        result[name] = sorted(names)
    return result


def used_blocks(spec: SpecModel) -> list[str]:
    """Block templates reachable from the model body, callees before callers."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order or name in stack or name not in spec.blocks:
            return
        template: BlockTemplate = spec.blocks[name]
        for node in walk(template.body):
            if isinstance(node, BlockCall):
                visit(node.block, (*stack, name))
        order.append(name)

    for node in walk(spec.body):
        if isinstance(node, BlockCall):
            visit(node.block, ())
    return order


def annotation(value: Any) -> str:
    """Type annotation for a param judged by its default value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "Sequence[int]" if all(isinstance(v, int) for v in value) else "Sequence[Any]"
    return "Any"


def clean(text: str) -> str:
    """Spec text for a docstring: control characters replaced, ends stripped. Escaping is
    :func:`rescompiler.pytext.docstring`'s job, after wrapping."""
    return printable(text).strip()


def node_kind(node: Any) -> str:
    """What names an unnamed body node (``conv_1``): its block, the node it reuses, its op."""
    if isinstance(node, BlockCall):
        return node.block
    if isinstance(node, Reuse):
        return node.reuse
    return node.op


def local_name(node: Any, index: int, taken: Container[str], in_group: bool = False) -> str:
    """A body node's local name as the expander gives it: its group or ``name``, its position
    inside a group, else its op (or block) with the first free ``_k`` suffix."""
    if isinstance(node, Group):
        return str(node.group)
    if node.name:
        return node.name
    if in_group:
        return str(index)
    default = node_kind(node)
    name, k = (f"{default}_1", 2) if isinstance(node, Reuse) else (default, 1)
    while name in taken:
        name, k = f"{default}_{k}", k + 1
    return name


def path_key(path: str) -> tuple[str | int, ...]:
    """``blocks.b.body[3].x`` → ``("blocks", "b", "body", 3, "x")`` (the loader's path keys)."""
    key: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        key.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(key)


def template_environment(templates: Path) -> Any:
    """The Jinja2 environment the emitters render with (strict, no autoescape, line-exact)."""
    import jinja2  # only emitting needs it; ``--check`` stays light

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    environment.filters["docstring"] = docstring
    return environment


Condition = bool | str  # True, False, or Python source over a body's params


def _top_level(source: str, word: str) -> list[str]:
    """``source`` split at ``word`` (e.g. `` and ``) outside brackets and strings."""
    parts, depth, start, k, quote = [], 0, 0, 0, ""
    while k < len(source):
        char = source[k]
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and source.startswith(word, k):
            parts.append(source[start:k])
            start = k = k + len(word)
            continue
        k += 1
    return [*parts, source[start:]]


def _conjuncts(source: str) -> list[str]:
    """The operands of a top-level ``and`` chain; one item when ``or``/``if`` binds looser."""
    if len(_top_level(source, " or ")) > 1 or len(_top_level(source, " if ")) > 1:
        return [f"({source})"]
    return _top_level(source, " and ")


def all_of(a: Condition, b: Condition) -> Condition:
    """``a and b``, simplified: constants vanish and repeated operands are written once."""
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return " and ".join(dict.fromkeys([*_conjuncts(str(a)), *_conjuncts(str(b))]))


def any_of(terms: Iterable[Condition]) -> Condition:
    """``t1 or t2 or ...``, simplified (True absorbs, False and repeats vanish)."""
    kept: list[str] = []
    for term in terms:
        if term is True:
            return True
        if term is not False and term not in kept:
            kept.append(str(term))
    if not kept:
        return False
    if any(f"not {t}" in kept or f"not ({t})" in kept for t in kept):
        return True  # x or not x
    return " or ".join(f"({t})" if " if " in t else t for t in kept)


def negation(a: Condition) -> Condition:
    """``not a``."""
    if isinstance(a, bool):
        return not a
    return f"not ({a})" if " " in a else f"not {a}"


def liveness(
    entries: Iterable[tuple[str, list[str], str, Condition | None]], output: str | list[str]
) -> list[Condition]:
    """Where each node of a body reaches the body's ``output``: True, False (never: the front
    end drops it and warns) or a condition over the params. ``entries`` gives, per node in
    order, its local name, input names, the name passed on when it is off, and its ``when``
    (None: always on). The expander decides the same per block instance; an emitter that
    writes one class per template builds a node only where this holds."""
    rows = list(entries)
    outputs = [output] if isinstance(output, str) else output
    reach: dict[str, list[Condition]] = {name: [True] for name in outputs}
    live: list[Condition] = [False] * len(rows)
    for k in range(len(rows) - 1, -1, -1):
        local, inputs, alt, when = rows[k]
        here = live[k] = any_of(reach.get(local, []))
        if here is False:
            continue
        on = True if when is None else when
        for name in dict.fromkeys([*inputs, alt]):
            if name in inputs and (name == alt or on is True):
                term = here
            elif name in inputs:
                term = all_of(here, on)
            elif on is True:
                continue
            else:
                term = all_of(here, negation(on))
            reach.setdefault(name, []).append(term)
    return live


def when_source(node: Any, translate: Callable[[Any], str] = py) -> Condition | None:
    """A node's ``when`` for :func:`liveness`: None (always on), a literal bool, or source."""
    when = node.when
    if when is None or isinstance(when, bool):
        return when
    return translate(when)


def param_default(
    key: str, default: Any, translate: Callable[[Any], str] = py
) -> tuple[str, list[str]]:
    """A block param in a generated signature, and the lines that fill in its default when
    that reads model params (the signature then says ``None``). Defaults are expressions,
    like args: ``"'relu'"`` is the string relu, ``2 * 3`` is 6."""
    if default is None:
        return f"{key}: Any", []
    if value_names(default):
        return f"{key}: Any = None", [f"if {key} is None:", f"    {key} = {translate(default)}"]
    constant = evaluate(default, {})
    return f"{key}: {annotation(constant)} = {literal(constant)}", []


def check_lines(
    checks: list[Check], indent: int, translate: Callable[[Any], str] = py
) -> list[str]:
    """The spec's ``checks`` as statements of a generated ``build``/``__init__``: ``if not
    (that): raise ValueError("check failed: ...")``, the message as the front end words it, so
    ``build(**params)`` refuses the params a spec refuses."""
    lines: list[str] = []
    for check in checks:
        condition = translate(check.that)
        lines += layout(indent, "if not ", Call("", (condition,)), ":")
        lines += raise_lines(indent + 4, "ValueError", check.failure())
    return lines
