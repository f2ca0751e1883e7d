"""A small, safe expression language for spec values: ``planes * 4``, ``2 if i == 0 else 1``.

Expressions are parsed with :mod:`ast` and evaluated by walking a whitelist of node kinds:
arithmetic, comparisons, boolean logic, conditional expressions, list literals and indexing,
and calls to a few pure functions. There is no attribute access and Python's ``eval`` is
never used. The same parsed form is translated back to Python for generated code.

Specs are untrusted, so every evaluation is bounded: expressions by length and syntax-tree
depth, values by list size (counted at every level), list nesting, string length and integer
size; ``round``/``int``/``sum`` by their arguments; lists and strings cannot be repeated,
joined or formatted, so no expression builds a value much bigger than its own text.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_EXPR_CHARS = 500
MAX_EXPR_DEPTH = 64  # nesting of an expression's syntax tree (``- - - 1``, ``f(g(1))``)
MAX_INT = 2**62
MAX_ELEMENTS = 10_000  # list elements of one value, counted at every level of nesting
MAX_NESTING = 32  # levels of list nesting in one value
MAX_STRING = 1_000  # characters of one string value
MAX_NDIGITS = 32  # |ndigits| of round(x, ndigits)
MAX_SUGGEST = 300  # candidates compared when suggesting a name


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


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line messages about big values."""
    if isinstance(value, list) and len(value) > limit:
        value = value[:limit]  # no need to render all of a long list
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _int(value: Any, *rest: Any) -> int:
    if rest:
        raise ExprError("int() takes one argument")
    if isinstance(value, str) and len(value) > 40:
        raise ExprError("int() of a string longer than 40 characters")
    return int(value)


def _chr(code: Any, *rest: Any) -> str:
    """The character of a code point: keras.applications names the j-th block of a stage
    ``chr(j + 97)`` (block2a, block2b, ...)."""
    if rest:
        raise ExprError("chr() takes one argument")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0x10FFFF:
        raise ExprError(f"chr() takes an integer code point, got {code!r}")
    return chr(code)


def _round(value: Any, *ndigits: Any) -> Any:
    if len(ndigits) > 1:
        raise ExprError("round() takes one or two arguments")
    if not ndigits:
        return round(value)
    digits = ndigits[0]
    if isinstance(digits, bool) or not isinstance(digits, int):
        raise ExprError(f"round(): ndigits must be an integer, got {short_repr(digits)}")
    if abs(digits) > MAX_NDIGITS:
        raise ExprError(
            f"round(): ndigits must be between {-MAX_NDIGITS} and {MAX_NDIGITS}, got {digits}"
        )
    return round(value, digits)


def _sum(values: Any, *rest: Any) -> Any:
    if rest:
        raise ExprError("sum() takes one argument, a list of numbers")
    if not isinstance(values, list):
        raise ExprError(f"sum() takes a list of numbers, got {short_repr(values)}")
    total: Any = 0
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExprError(f"sum() takes a list of numbers, got an element {short_repr(value)}")
        total = _check_number(total + value)
    return total


def _number(value: Any, function: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExprError(f"{function}() takes a number, got {short_repr(value)}")
    return value


def _ceil(value: Any, *rest: Any) -> int:
    if rest:
        raise ExprError("ceil() takes one argument")
    return math.ceil(_number(value, "ceil"))


def _floor(value: Any, *rest: Any) -> int:
    if rest:
        raise ExprError("floor() takes one argument")
    return math.floor(_number(value, "floor"))


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """The multiple of ``divisor`` nearest ``value``, at least ``min_value`` (default: the
    divisor) and never more than 10% below ``value``: torchvision's ``_make_divisible``, which
    MobileNet, EfficientNet and RegNet round their channel counts with."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _make_divisible(value: Any, divisor: Any, *rest: Any) -> int:
    if len(rest) > 1:
        raise ExprError("make_divisible() takes a value, a divisor and an optional minimum")
    _number(value, "make_divisible")
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise ExprError(f"make_divisible(): the divisor must be a positive integer, got {divisor}")
    minimum = rest[0] if rest else None
    if minimum is not None and (isinstance(minimum, bool) or not isinstance(minimum, int)):
        raise ExprError(f"make_divisible(): the minimum must be an integer, got {minimum}")
    return make_divisible(value, divisor, minimum)


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (ties to even), as a Python float; for the
    normal, finite magnitudes :func:`regnet_stages` meets."""
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(math.ldexp(mantissa, 24)), exponent - 24)


def regnet_stages(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int, bottleneck: float = 1.0
) -> list[list[int]]:
    """RegNet's stages ``[[width, depth, group width], ...]`` from its quantised linear rule,
    as torchvision's ``BlockParams.from_init_params`` and ``_adjust_widths_groups_compatibilty``
    compute them: block ``j`` has the continuous width ``w_0 + j * w_a``, quantised in log
    space with step ``w_m`` and rounded to a multiple of 8; runs of equal widths are stages,
    whose bottleneck width is then made divisible by the group width. torchvision computes
    the block widths in float32 tensors: each step is rounded to float32 here alike."""
    f32 = _float32
    log_w_m = f32(math.log(w_m))
    block_widths = []
    for j in range(depth):
        continuous = f32(f32(f32(j) * f32(w_a)) + f32(w_0))
        capacity = round(f32(f32(math.log(f32(continuous / f32(w_0)))) / log_w_m))
        width = f32(f32(f32(w_0) * f32(f32(w_m) ** capacity)) / 8)
        block_widths.append(round(width) * 8)
    stages: list[list[int]] = []
    for width in block_widths:
        if stages and stages[-1][0] == width:
            stages[-1][1] += 1
        else:
            stages.append([width, 1])
    result = []
    for width, count in stages:
        inner = int(width * bottleneck)
        groups = min(group_width, inner)
        result.append([int(make_divisible(inner, groups) / bottleneck), count, groups])
    return result


def _regnet_stages(*args: Any) -> list[list[int]]:
    if not 5 <= len(args) <= 6:
        raise ExprError(
            "regnet_stages() takes depth, w_0, w_a, w_m, group_width and an optional bottleneck"
        )
    depth, w_0, w_a, w_m, group_width = args[:5]
    bottleneck = args[5] if len(args) == 6 else 1.0
    for name, value in (("depth", depth), ("w_0", w_0), ("group_width", group_width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExprError(f"regnet_stages(): {name} must be a positive integer, got {value}")
    for value in (w_a, w_m, bottleneck):
        _number(value, "regnet_stages")
    most = MAX_ELEMENTS // 4  # a stage per block at most, of 3 numbers each
    if depth > most:
        raise ExprError(f"regnet_stages(): depth must be at most {most:,}, got {depth}")
    if w_0 % 8:
        raise ExprError(f"regnet_stages(): w_0 must be a multiple of 8, got {w_0}")
    if w_a < 0 or not 1 < w_m < 2**31 or bottleneck <= 0:
        raise ExprError(
            "regnet_stages(): needs w_a >= 0, 1 < w_m < 2**31 and bottleneck > 0, got "
            f"w_a={w_a}, w_m={w_m}, bottleneck={bottleneck}"
        )
    if w_0 + (depth - 1) * w_a >= 2**31:
        raise ExprError("regnet_stages(): the block widths w_0 + j * w_a must stay below 2**31")
    if w_0 * bottleneck < 1:
        raise ExprError("regnet_stages(): w_0 * bottleneck must be at least 1")
    try:
        stages = regnet_stages(depth, w_0, w_a, w_m, group_width, bottleneck)
    except OverflowError as exc:  # an absurd bottleneck (1e308)
        raise ExprError(f"regnet_stages(): {exc}") from None
    if any(width >= 2**31 for width, _, _ in stages):
        raise ExprError("regnet_stages(): a stage width reaches 2**31")
    return stages


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "int": _int,
    "round": _round,
    "len": len,
    "chr": _chr,
    "sum": _sum,
    "ceil": _ceil,
    "floor": _floor,
    "make_divisible": _make_divisible,
    "regnet_stages": _regnet_stages,
}


def _check_number(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ExprError("integer result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExprError("result is not a finite number")
    return value


# Sizes of lists already measured, by id (the list itself is kept so the id stays its own).
_MEASURED: dict[int, tuple[list[Any], int, int]] = {}
_MEASURED_MAX = 4_096
_CACHE_FROM = 64  # smaller lists are cheaper to walk again than to remember


def _check_scalar(value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int | float):
        _check_number(value)
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ExprError(f"string longer than {MAX_STRING:,} characters")
    else:
        kind = "a mapping" if isinstance(value, dict) else type(value).__name__
        raise ExprError(f"a value must be a number, true/false, a string or a list, got {kind}")


def _measure(value: list[Any], level: int) -> tuple[int, int]:
    """(elements at every level, nesting depth) of a list; raises ExprError over the caps."""
    hit = _MEASURED.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1], hit[2]
    if level >= MAX_NESTING:
        raise ExprError(f"lists nested deeper than {MAX_NESTING} levels")
    count, depth = len(value), 0
    if count > MAX_ELEMENTS:
        raise ExprError(f"a list value may hold at most {MAX_ELEMENTS:,} elements")
    for item in value:
        if isinstance(item, list):
            inner, inner_depth = _measure(item, level + 1)
            count += inner
            depth = max(depth, inner_depth)
            if count > MAX_ELEMENTS:
                raise ExprError(
                    f"a list value may hold at most {MAX_ELEMENTS:,} elements "
                    "(counting those of nested lists)"
                )
        else:
            _check_scalar(item)
    depth += 1
    if count >= _CACHE_FROM:
        if len(_MEASURED) >= _MEASURED_MAX:
            _MEASURED.clear()
        _MEASURED[id(value)] = (value, count, depth)
    return count, depth


def check_value(value: Any) -> Any:
    """Return ``value`` if it is within the caps on values: finite numbers, integers up to
    2**62, strings up to MAX_STRING characters, lists up to MAX_ELEMENTS elements (at every
    level) and MAX_NESTING levels deep; raise ExprError otherwise."""
    if isinstance(value, list):
        _measure(value, 0)
    else:
        _check_scalar(value)
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
            return check_value(_eval(self.tree.body, env))
        except ExprError:
            raise
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except RecursionError:
            raise ExprError("expression or value nested too deeply") from None
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            raise ExprError(_first_line(str(exc)) or type(exc).__name__) from None

    def to_python(self, rename: Callable[[str], str] = lambda name: name) -> str:
        """Python source for this expression, with every name passed through ``rename``."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


def _first_line(message: str) -> str:
    line = message.splitlines()[0] if message else ""
    return line if len(line) <= 200 else line[:197] + "..."


def _validate(node: ast.AST, names: set[str], depth: int = 0) -> None:
    if depth > MAX_EXPR_DEPTH:
        raise ExprError(f"expression nested deeper than {MAX_EXPR_DEPTH} levels")
    depth += 1
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool) and node.value is not None:
            raise ExprError(f"constant {short_repr(node.value)} is not allowed")
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ExprError(f"number {short_repr(value)} is too large (at most 2**62)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ExprError(f"number {short_repr(node.value)} is not finite")
    elif isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise ExprError(f"name {node.id!r} is not allowed")
        if node.id not in ("True", "False", "None"):
            names.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.left, names, depth)
        _validate(node.right, names, depth)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.operand, names, depth)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _validate(value, names, depth)
    elif isinstance(node, ast.Compare):
        if any(type(op) not in _CMPOPS for op in node.ops):
            raise ExprError("comparison operator is not allowed")
        _validate(node.left, names, depth)
        for comparator in node.comparators:
            _validate(comparator, names, depth)
    elif isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            _validate(part, names, depth)
    elif isinstance(node, ast.List | ast.Tuple):
        for element in node.elts:
            _validate(element, names, depth)
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed")
        _validate(node.value, names, depth)
        _validate(node.slice, names, depth)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ExprError(f"only these functions may be called: {allowed}")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed in calls")
        for arg in node.args:
            _validate(arg, names, depth)
    else:
        raise ExprError(f"{type(node).__name__} is not allowed in an expression")


@lru_cache(maxsize=4096)
def parse_expr(source: str) -> Expr:
    """Parse and check an expression; raises ExprError for syntax or forbidden constructs."""
    if len(source) > MAX_EXPR_CHARS:
        raise ExprError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: not ours
            warnings.simplefilter("ignore")
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
        if isinstance(left, list | str) or isinstance(right, list | str):
            if isinstance(node.op, ast.Mult):
                raise ExprError("repeating lists or strings with * is not allowed")
            if isinstance(node.op, ast.Add):
                raise ExprError("joining lists or strings with + is not allowed")
            raise ExprError("arithmetic on lists or strings is not allowed")
        if isinstance(node.op, ast.Pow) and (
            not isinstance(right, int | float) or abs(right) > 64 or abs(left) > 2**16
        ):
            raise ExprError("power too large")
        result = _BINOPS[type(node.op)](left, right)
        if isinstance(result, complex):
            raise ExprError("result is not a real number")
        return _check_number(result)
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
        return check_value([_eval(element, env) for element in node.elts])
    if isinstance(node, ast.Subscript):
        container, index = _eval(node.value, env), _eval(node.slice, env)
        if not isinstance(container, list) or not isinstance(index, int) or isinstance(index, bool):
            raise ExprError("only lists can be indexed, with an integer")
        if not -len(container) <= index < len(container):
            raise ExprError(f"index {index} out of range for a list of {len(container)}")
        return container[index]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _check_number(FUNCTIONS[node.func.id](*[_eval(a, env) for a in node.args]))
    raise ExprError(f"{type(node).__name__} is not allowed")  # pragma: no cover - validated


def suggest(name: str, candidates: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string.

    Only candidates of about the same length are compared, at most MAX_SUGGEST of them, so a
    spec with very many names cannot make each error slow."""
    import difflib

    near: list[str] = []
    for candidate in candidates:
        text = str(candidate)
        if 5 * min(len(text), len(name)) >= 1.5 * (len(text) + len(name)):  # ratio can be >= 0.6
            near.append(text)
            if len(near) >= MAX_SUGGEST:
                break
    matches = difflib.get_close_matches(name, near, n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def evaluate(value: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate a spec value: strings are expressions, lists element-wise, the rest literal.

    The result is held to the caps of :func:`check_value`; raises ExprError."""
    return check_value(_evaluate(value, env, 0))


def _evaluate(value: Any, env: Mapping[str, Any], level: int) -> Any:
    if isinstance(value, str):
        return parse_expr(value).evaluate(env)
    if isinstance(value, list):
        if level >= MAX_NESTING:
            raise ExprError(f"lists nested deeper than {MAX_NESTING} levels")
        if len(value) > MAX_ELEMENTS:
            raise ExprError(f"a list value may hold at most {MAX_ELEMENTS:,} elements")
        return [_evaluate(v, env, level + 1) for v in value]
    return value


_TEMPLATE_PART = re.compile(r"\{([^{}]*)\}")


def render_template(template: str, env: Mapping[str, Any]) -> str:
    """Fill a name template such as ``denselayer{i + 1}``: each ``{...}`` is an expression
    whose value is a number, true/false or a string (a list is an error)."""

    def fill(match: re.Match[str]) -> str:
        value = parse_expr(match.group(1)).evaluate(env)
        if isinstance(value, list):
            raise ExprError(f"{{{match.group(1)}}} is a list, not part of a name")
        return str(value)

    return _TEMPLATE_PART.sub(fill, template)


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
    names: set[str] = set()
    pending = [value]
    while pending:  # no recursion: nested lists cannot exhaust the stack
        item = pending.pop()
        if isinstance(item, str):
            names.update(parse_expr(item).names)
        elif isinstance(item, list):
            pending.extend(item)
    return names
