"""A small, safe expression language for spec values: ``planes * 4``, ``2 if i == 0 else 1``.

Expressions are parsed with :mod:`ast` and evaluated by walking a whitelist of node kinds:
arithmetic, comparisons, boolean logic, conditional expressions, list literals and indexing,
and calls to a few pure functions. There is no attribute access and Python's ``eval`` is
never used. The same parsed form is translated back to Python for generated code.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_EXPR_CHARS = 500
MAX_INT = 2**62


class ExprError(ValueError):
    """An expression could not be parsed or evaluated; the message says why."""


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "int": int,
    "round": round,
    "len": len,
    "sum": sum,
}


def _check_number(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ExprError("integer result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("result is not a finite number")
    return value


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its source text, its syntax tree and the names it reads."""

    source: str
    tree: ast.expression = field(compare=False, repr=False)
    names: frozenset[str] = field(compare=False)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Evaluate against ``env`` (name → value); raises ExprError with a readable reason."""
        try:
            return _eval(self.tree.body, env)
        except ExprError:
            raise
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except (TypeError, ValueError, IndexError, OverflowError, RecursionError) as exc:
            raise ExprError(str(exc) or type(exc).__name__) from None

    def to_python(self, rename: Callable[[str], str] = lambda name: name) -> str:
        """Python source for this expression, with every name passed through ``rename``."""
        tree = _Renamer(rename).visit(ast.parse(self.source, mode="eval"))
        return ast.unparse(tree)


class _Renamer(ast.NodeTransformer):
    def __init__(self, rename: Callable[[str], str]) -> None:
        self.rename = rename

    def visit_Call(self, node: ast.Call) -> ast.AST:
        node.args = [self.visit(a) for a in node.args]
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(id=self.rename(node.id), ctx=node.ctx), node)


def _validate(node: ast.AST, names: set[str]) -> None:
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool) and node.value is not None:
            raise ExprError(f"constant {node.value!r} is not allowed")
    elif isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise ExprError(f"name {node.id!r} is not allowed")
        if node.id not in ("True", "False", "None"):
            names.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.left, names)
        _validate(node.right, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.operand, names)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _validate(value, names)
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _CMPOPS for op in node.ops):
            raise ExprError("comparison operator is not allowed")
        _validate(node.left, names)
        for comparator in node.comparators:
            _validate(comparator, names)
    elif isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            _validate(part, names)
    elif isinstance(node, ast.List | ast.Tuple):
        for element in node.elts:
            _validate(element, names)
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed")
        _validate(node.value, names)
        _validate(node.slice, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ExprError(f"only these functions may be called: {allowed}")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed in calls")
        for arg in node.args:
            _validate(arg, names)
    else:
        raise ExprError(f"{type(node).__name__} is not allowed in an expression")


@lru_cache(maxsize=4096)
def parse_expr(source: str) -> Expr:
    """Parse and check an expression; raises ExprError for syntax or forbidden constructs."""
    if len(source) > MAX_EXPR_CHARS:
        raise ExprError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression {source!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExprError(f"invalid expression {source!r}") from None
    names: set[str] = set()
    try:
        _validate(tree.body, names)
    except RecursionError:
        raise ExprError("expression nested too deeply") from None
    return Expr(source.strip(), tree, frozenset(names))


_CONSTANTS = {"True": True, "False": False, "None": None}


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id not in env:
            raise ExprError(f"unknown name {node.id!r}{suggest(node.id, env)}")
        return env[node.id]
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow) and (
            not isinstance(right, int | float) or abs(right) > 64 or abs(left) > 2**16
        ):
            raise ExprError("power too large")
        if isinstance(node.op, ast.Mult) and (
            isinstance(left, list | str) or isinstance(right, list | str)
        ):
            raise ExprError("repeating lists or strings with * is not allowed")
        return _check_number(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not value
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value_node in node.values:
                result = _eval(value_node, env)
                if not result:
                    return result
            return result
        result = False
        for value_node in node.values:
            result = _eval(value_node, env)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env) else node.orelse, env)
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(element, env) for element in node.elts]
    if isinstance(node, ast.Subscript):
        container, index = _eval(node.value, env), _eval(node.slice, env)
        if not isinstance(container, list) or not isinstance(index, int):
            raise ExprError("only lists can be indexed, with an integer")
        if not -len(container) <= index < len(container):
            raise ExprError(f"index {index} out of range for a list of {len(container)}")
        return container[index]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _check_number(FUNCTIONS[node.func.id](*[_eval(a, env) for a in node.args]))
    raise ExprError(f"{type(node).__name__} is not allowed")  # pragma: no cover - validated


def suggest(name: str, candidates: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    import difflib

    matches = difflib.get_close_matches(name, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def evaluate(value: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate a spec value: strings are expressions, lists element-wise, the rest literal."""
    if isinstance(value, str):
        return parse_expr(value).evaluate(env)
    if isinstance(value, list):
        return [evaluate(v, env) for v in value]
    return value


_TEMPLATE_PART = re.compile(r"\{([^{}]*)\}")


def render_template(template: str, env: Mapping[str, Any]) -> str:
    """Fill a name template such as ``denselayer{i + 1}``: each ``{...}`` is an expression."""
    return _TEMPLATE_PART.sub(lambda m: str(parse_expr(m.group(1)).evaluate(env)), template)


def template_parts(template: str) -> list[str | Expr]:
    """Split a name template into literal strings and expressions (for code generation)."""
    parts: list[str | Expr] = []
    last = 0
    for match in _TEMPLATE_PART.finditer(template):
        if match.start() > last:
            parts.append(template[last : match.start()])
        parts.append(parse_expr(match.group(1)))
        last = match.end()
    if last < len(template):
        parts.append(template[last:])
    return parts


def expression_names(value: Any) -> set[str]:
    """Names read by a spec value (string expressions, lists of them, name templates)."""
    if isinstance(value, str):
        return set(parse_expr(value).names)
    if isinstance(value, list):
        return set().union(*(expression_names(v) for v in value)) if value else set()
    return set()
