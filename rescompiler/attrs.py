"""Evaluate a node's attributes: expressions → values, defaults filled in, forms normalised
(pairs to (h, w), paddings to (top, bottom, left, right)), ranges checked."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .expr import ExprError, evaluate, short_repr
from .schema import INIT_NAMES, NodeBase, OpDefaults

FieldRule = Callable[[Any, str], Any]

BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "conv": {"bias": True},
    "conv_transpose": {"bias": True},
    "linear": {"bias": True},
    "bn": {"eps": 1e-5, "momentum": 0.1},
    "layernorm": {"eps": 1e-5},
    "groupnorm": {"eps": 1e-5},
}
COMMON_FIELDS = set(NodeBase.model_fields) | {"op"}
LITERAL_FIELDS = {"mode", "axis", "to"}  # words from a fixed list, not expressions


class AttrError(ValueError):
    """An attribute value is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AttrError(field, f"{field} must be an integer, got {short_repr(value)}")
    if value < minimum:
        bound = "positive" if minimum == 1 else "non-negative"
        raise AttrError(field, f"{field} must be {bound}, got {value}")
    return value


def _pair(value: Any, field: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, list):
        if len(value) != 2:
            raise AttrError(field, f"{field} takes one integer or two [h, w], got {len(value)}")
        return _int(value[0], field, minimum), _int(value[1], field, minimum)
    v = _int(value, field, minimum)
    return v, v


def _pad4(value: Any, field: str) -> tuple[int, int, int, int]:
    if isinstance(value, list):
        if len(value) == 2:
            h, w = (_int(v, field, 0) for v in value)
            return h, h, w, w
        if len(value) == 4:
            t, b, left, r = (_int(v, field, 0) for v in value)
            return t, b, left, r
        raise AttrError(field, f"{field} takes 1, 2 [h, w] or 4 [top, bottom, left, right] values")
    v = _int(value, field, 0)
    return v, v, v, v


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise AttrError(field, f"{field} must be true or false, got {short_repr(value)}")
    return value


def _float(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AttrError(field, f"{field} must be a number, got {short_repr(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise AttrError(field, f"{field} must be a finite number, got {short_repr(value)}")
    return number


def _ranged(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> FieldRule:
    """A rule for a finite number in [low, high] (a bound left out of the range when open)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def rule(value: Any, field: str) -> float:
        number = _float(value, field)
        below = number <= low if low_open else number < low
        above = number >= high if high_open else number > high
        if below or above:
            if math.isinf(high) and low == 0:
                wanted = "positive" if low_open else "non-negative"
            else:
                wanted = f"in {left}{low:g}, {high:g}{right}"
            raise AttrError(field, f"{field} must be {wanted}, got {short_repr(value)}")
        return number

    return rule


def _one_expression(raw: Any, value: Any, field: str, pair: bool) -> None:
    """A padding or crop written as one expression gives an int (or, for a conv's padding,
    [h, w]): the emitters write such an expression once per block template, where four amounts
    must be four expressions, ``[top, bottom, left, right]``."""
    if not isinstance(raw, str) or not isinstance(value, list) or (pair and len(value) == 2):
        return
    wanted = "an int or [h, w]" if pair else "an int"
    raise AttrError(
        field,
        f"{field} {raw!r} gives {short_repr(value)}; one expression must give {wanted}: write "
        f"the amounts as a list, [top, bottom, left, right] (each may be an expression)",
    )


def _conv_padding(
    raw: Any, attrs: dict[str, Any], env: Mapping[str, Any], op: str = "conv"
) -> tuple[int, ...]:
    if raw in ("same", "valid"):
        if raw == "valid":
            return 0, 0, 0, 0
        if attrs["stride"] != (1, 1):
            # TF's and Keras' "same": the amounts depend on the input size (infer computes
            # them); a dilated strided conv is a stride-1 conv and a subsample in Keras, whose
            # "same" pads otherwise
            if attrs["dilation"] != (1, 1):
                raise AttrError(
                    "padding",
                    "padding 'same' at a stride > 1 needs dilation 1; give explicit padding",
                )
            return ("same",)
        pads = []
        for k, d in zip(attrs["kernel"], attrs["dilation"], strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads[0], pads[1], pads[2], pads[3]
    value = evaluate(raw, env)
    _one_expression(raw, value, "padding", pair=op == "conv")
    return _pad4(value, "padding")


RULES: dict[str, FieldRule] = {
    "out": lambda v, f: _int(v, f, 1),
    "groups": lambda v, f: _int(v, f, 1),
    "kernel": lambda v, f: _pair(v, f, 1),
    "stride": lambda v, f: _pair(v, f, 1),
    "dilation": lambda v, f: _pair(v, f, 1),
    "output_padding": lambda v, f: _pair(v, f, 0),
    "bias": _bool,
    "affine": _bool,
    "count_include_pad": _bool,
    "ceil_mode": _bool,
    "keepdims": _bool,
    "align_corners": _bool,
    "eps": _ranged(0.0, math.inf, low_open=True, high_open=True),
    "momentum": _ranged(0.0, 1.0),
    "slope": _float,
    "p": _ranged(0.0, 1.0, high_open=True),
    "scale": lambda v, f: _int(v, f, 1),
    "before": lambda v, f: _int(v, f, 0),
    "after": lambda v, f: _int(v, f, 0),
    "crop": _pad4,
    "mode": lambda v, f: v,
    "axis": lambda v, f: v,
    "to": lambda v, f: v,
    "stored": _bool,
    "depthwise": _bool,
    "value": _float,
}
PAIR_PADDING_OPS = {"maxpool", "avgpool", "conv_transpose"}


def _floats(value: Any, field: str) -> float | tuple[float, ...]:
    """A number, or a list of numbers (one per channel)."""
    if isinstance(value, list):
        return tuple(_float(v, field) for v in value)
    return _float(value, field)


def _variances(value: Any, field: str) -> float | tuple[float, ...]:
    numbers = _floats(value, field)
    for v in numbers if isinstance(numbers, tuple) else (numbers,):
        if v <= 0:
            raise AttrError(field, f"{field} must be positive, got {v}")
    return numbers


# fields whose rule depends on the op (``scale`` of upsample is an integer factor)
OP_RULES: dict[tuple[str, str], FieldRule] = {
    ("rescale", "scale"): _floats,
    ("rescale", "offset"): _floats,
    ("normalize", "mean"): _floats,
    ("normalize", "variance"): _variances,
}


def _init(raw: Any, env: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for tensor in ("weight", "bias"):
        value = getattr(raw, tensor, None) if raw is not None else None
        if value is None:
            continue
        if value not in INIT_NAMES:
            init_env = {**env, **{name: name for name in INIT_NAMES}}
            try:
                value = evaluate(value, init_env)
            except ExprError as exc:
                raise AttrError("init", str(exc)) from None
            if value not in INIT_NAMES:
                raise AttrError("init", f"init.{tensor}: unknown initialiser {short_repr(value)}")
        out[tensor] = value
    return out


def resolve_attrs(
    node: NodeBase, env: Mapping[str, Any], defaults: Mapping[str, OpDefaults]
) -> dict[str, Any]:
    """The node's op attributes as plain values. Raises AttrError (with the field) or ExprError."""
    op = node.op  # type: ignore[attr-defined]
    spec_defaults = defaults.get(op)
    raw: dict[str, Any] = {}
    for field in type(node).model_fields:
        if field in COMMON_FIELDS or field == "init":
            continue
        value = getattr(node, field)
        if value is None and spec_defaults is not None:
            value = getattr(spec_defaults, field, None)
        if value is None:
            value = BUILTIN_DEFAULTS.get(op, {}).get(field)
        raw[field] = value
    attrs: dict[str, Any] = {}
    for field, value in raw.items():
        if field == "padding":
            continue
        if field == "stride" and value is None:  # pools: stride defaults to the kernel
            attrs[field] = attrs["kernel"]
            continue
        try:
            evaluated = evaluate(value, env) if field not in LITERAL_FIELDS else value
        except ExprError as exc:
            raise AttrError(field, str(exc)) from None
        if field == "crop":
            _one_expression(value, evaluated, field, pair=False)
        attrs[field] = OP_RULES.get((op, field), RULES.get(field, _float))(evaluated, field)
    if "padding" in raw:
        try:
            if raw["padding"] in ("same", "valid") and op != "conv":
                raise AttrError(
                    "padding", f"padding {raw['padding']!r} is for conv only; give the amounts"
                )
            if op in PAIR_PADDING_OPS:
                attrs["padding"] = _pair(evaluate(raw["padding"], env), "padding", 0)
            else:
                attrs["padding"] = _conv_padding(raw["padding"], attrs, env, op)
        except ExprError as exc:
            raise AttrError("padding", str(exc)) from None
    if op in ("conv", "conv_transpose", "bn", "linear"):
        init = _init(spec_defaults.init if spec_defaults else None, env)
        init.update(_init(getattr(node, "init", None), env))
        attrs["init"] = init
    return attrs
