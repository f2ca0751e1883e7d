"""Static shape inference: one function per op computing output shape, params, BN statistics
and MACs from resolved attributes and input shapes. Shapes are (C, H, W) or (F,)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


class InferError(ValueError):
    """An op cannot be applied to its inputs; ``field`` names the offending attribute."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class OpResult:
    """What inference knows about one node."""

    shape: Shape
    params: int = 0
    stats: int = 0
    macs: int = 0


def fmt(shape: Shape) -> str:
    """``256×56×56``."""
    return "×".join(str(d) for d in shape)


def _feature_map(shapes: Sequence[Shape], op: str) -> Shape:
    if len(shapes[0]) != 3:
        raise InferError(f"{op} needs a C×H×W input, got {fmt(shapes[0])}")
    return shapes[0]


def _window(size: int, kernel: int, stride: int, pad: int, dilation: int, what: str) -> int:
    span = dilation * (kernel - 1) + 1
    if size + pad <= 0 or span > size + pad:
        raise InferError(
            f"{what} {kernel} (span {span}) is larger than its padded input {size + pad}"
        )
    return (size + pad - span) // stride + 1


def same_padding(h: int, w: int, a: dict[str, Any]) -> tuple[int, int, int, int]:
    """TF's and Keras' ``same`` at a stride > 1: the output is ceil(size / stride), the
    padding that needs splits with the odd pixel after (bottom, right)."""
    pads = []
    for size, k, s in zip((h, w), a["kernel"], a["stride"], strict=True):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return pads[0], pads[1], pads[2], pads[3]


def _conv(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "conv")
    (kh, kw), (sh, sw), (dh, dw), g = a["kernel"], a["stride"], a["dilation"], a["groups"]
    t, b, left, r = same_padding(h, w, a) if a["padding"] == ("same",) else a["padding"]
    if c % g or a["out"] % g:
        raise InferError(
            f"groups={g} must divide input channels {c} and output channels {a['out']}", "groups"
        )
    if a.get("depthwise") and not g == c == a["out"]:
        raise InferError(
            "depthwise: true needs groups, out and the input channels equal (Keras' "
            f"DepthwiseConv2D, one output per channel): groups={g}, out={a['out']}, {c} input "
            "channels",
            "depthwise",
        )
    oh = _window(h, kh, sh, t + b, dh, "kernel")
    ow = _window(w, kw, sw, left + r, dw, "kernel")
    weights = a["out"] * (c // g) * kh * kw
    return OpResult(
        (a["out"], oh, ow), weights + (a["out"] if a["bias"] else 0), 0, weights * oh * ow
    )


def _conv_transpose(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "conv_transpose")
    (kh, kw), (sh, sw), (dh, dw), g = a["kernel"], a["stride"], a["dilation"], a["groups"]
    (ph, pw), (oph, opw) = a["padding"], a["output_padding"]
    if c % g or a["out"] % g:
        raise InferError(f"groups={g} must divide channels {c} and {a['out']}", "groups")
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if oh <= 0 or ow <= 0:
        raise InferError(f"output size {oh}×{ow} is not positive", "padding")
    weights = c * (a["out"] // g) * kh * kw
    return OpResult(
        (a["out"], oh, ow), weights + (a["out"] if a["bias"] else 0), 0, weights * h * w
    )


def _bn(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c = shapes[0][0]
    return OpResult(shapes[0], 2 * c if a["affine"] else 0, 2 * c)


def _linear(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    """On a vector, or per position on the channels of a (channels-last) map."""
    f, *space = shapes[0]
    positions = 1
    for d in space:
        positions *= d
    out = a["out"]
    return OpResult((out, *space), f * out + (out if a["bias"] else 0), 0, positions * f * out)


def _norm(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c = shapes[0][0]
    if "groups" in a and c % a["groups"]:
        raise InferError(f"{c} channels do not split into {a['groups']} groups", "groups")
    return OpResult(shapes[0], 2 * c)


def _layer_scale(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    return OpResult(shapes[0], shapes[0][0])


def _per_channel(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    """rescale/normalize: a number, or one per channel; normalize keeps mean, variance and
    a count as weights (Keras counts them)."""
    c = _feature_map(shapes, "rescale" if "scale" in a else "normalize")[0]
    for key in ("scale", "offset", "mean", "variance"):
        value = a.get(key)
        if isinstance(value, tuple) and len(value) not in (1, c):
            raise InferError(f"{key} has {len(value)} values for {c} channels", key)
    return OpResult(shapes[0], 0, 2 * c + 1 if a.get("stored") else 0)


def _permute(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    _feature_map(shapes, "permute")
    return OpResult(shapes[0])


def _same(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    return OpResult(shapes[0])


def _flatten(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    size = 1
    for d in shapes[0]:
        size *= d
    return OpResult((size,))


def pool_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """Output length of a pooling window over ``size`` (``pad`` on each side), as torch: with
    ``ceil_mode`` rounded up, but the last window must start inside the input or its left pad."""
    out = _window(size, kernel, stride, 2 * pad, 1, "kernel")
    if ceil_mode and (size + 2 * pad - kernel) % stride:
        out += 1
        if (out - 1) * stride >= size + pad:
            out -= 1
    return out


def _pool(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "pool")
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    if ph * 2 > kh or pw * 2 > kw:
        raise InferError("pool padding must be at most half the kernel", "padding")
    ceil = a.get("ceil_mode", False)
    return OpResult((c, pool_size(h, kh, sh, ph, ceil), pool_size(w, kw, sw, pw, ceil)))


def _global_pool(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c = _feature_map(shapes, "global pool")[0]
    return OpResult((c, 1, 1) if a["keepdims"] else (c,))


def _reduce(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, f"a reduction over {a['axis']}")
    return OpResult((1, h, w) if a["axis"] == "channels" else (c, 1, 1))


def _zeropad(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "zeropad")
    t, b, left, r = a["padding"]
    return OpResult((c, h + t + b, w + left + r))


def _crop(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "crop")
    t, b, left, r = a["crop"]
    if h - t - b <= 0 or w - left - r <= 0:
        raise InferError(f"crop {a['crop']} removes all of a {h}×{w} input", "crop")
    return OpResult((c, h - t - b, w - left - r))


def _match_size(op: str) -> Callable[[dict[str, Any], Sequence[Shape]], OpResult]:
    def infer(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
        if len(shapes) != 2:
            raise InferError(
                f"{op} takes two inputs (tensor, reference), got {len(shapes)}", "inputs"
            )
        (c, h, w), (_, rh, rw) = _feature_map(shapes, op), _feature_map(shapes[1:], op)
        if op == "crop_to" and (rh > h or rw > w):
            raise InferError(f"cannot crop {h}×{w} to the larger {rh}×{rw}", "inputs")
        if op == "pad_to" and (rh < h or rw < w):
            raise InferError(f"cannot pad {h}×{w} to the smaller {rh}×{rw}", "inputs")
        return OpResult((c, rh, rw))

    return infer


def _subsample(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "subsample")
    sh, sw = a["stride"]
    return OpResult((c, (h - 1) // sh + 1, (w - 1) // sw + 1))


def _channel_pad(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "channel_pad")
    return OpResult((c + a["before"] + a["after"], h, w))


def _upsample(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    c, h, w = _feature_map(shapes, "upsample")
    return OpResult((c, h * a["scale"], w * a["scale"]))


def _add(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    return OpResult(shapes[0])


def _mul(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    shape = tuple(max(dims) for dims in zip(*shapes, strict=True))
    size = 1
    for d in shape:
        size *= d
    return OpResult(shape, macs=size * (len(shapes) - 1))


def _concat(a: dict[str, Any], shapes: Sequence[Shape]) -> OpResult:
    return OpResult((sum(s[0] for s in shapes), *shapes[0][1:]))


SHAPE_RULES: dict[str, Callable[[dict[str, Any], Sequence[Shape]], OpResult]] = {
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "bn": _bn,
    "linear": _linear,
    "relu": _same,
    "relu6": _same,
    "sigmoid": _same,
    "tanh": _same,
    "gelu": _same,
    "silu": _same,
    "hardswish": _same,
    "hardsigmoid": _same,
    "leaky_relu": _same,
    "softmax": _same,
    "identity": _same,
    "dropout": _same,
    "flatten": _flatten,
    "maxpool": _pool,
    "avgpool": _pool,
    "global_avgpool": _global_pool,
    "global_maxpool": _global_pool,
    "layernorm": _norm,
    "groupnorm": _norm,
    "layer_scale": _layer_scale,
    "drop_path": _same,
    "permute": _permute,
    "rescale": _per_channel,
    "normalize": _per_channel,
    "mean": _reduce,
    "max": _reduce,
    "zeropad": _zeropad,
    "crop": _crop,
    "crop_to": _match_size("crop_to"),
    "pad_to": _match_size("pad_to"),
    "subsample": _subsample,
    "channel_pad": _channel_pad,
    "upsample": _upsample,
    "add": _add,
    "concat": _concat,
    "mul": _mul,
}
MULTI_INPUT = {"add", "concat", "mul", "crop_to", "pad_to"}
MERGES = ("add", "concat", "mul")


def check_merge(op: str, names: Sequence[str], shapes: Sequence[Shape]) -> None:
    """``add`` needs equal shapes, ``concat`` equal spatial size, ``mul`` shapes that broadcast.
    The message names both inputs."""
    if len(shapes) < 2:
        raise InferError(f"{op} needs at least two inputs, got {len(shapes)}", "inputs")
    first, first_shape = names[0], shapes[0]
    for name, shape in zip(names[1:], shapes[1:], strict=True):
        if op == "add" and shape != first_shape:
            raise InferError(
                f"add inputs differ in shape: {first} is {fmt(first_shape)}, "
                f"{name} is {fmt(shape)}",
                "inputs",
            )
        if op == "mul" and (
            len(shape) != len(first_shape)
            or any(a != b and 1 not in (a, b) for a, b in zip(shape, first_shape, strict=True))
        ):
            raise InferError(
                f"mul inputs do not broadcast: {first} is {fmt(first_shape)}, "
                f"{name} is {fmt(shape)} (each size must be equal, or 1 in one of them)",
                "inputs",
            )
        if op == "concat" and (len(shape) != len(first_shape) or shape[1:] != first_shape[1:]):
            raise InferError(
                f"concat inputs differ in spatial size: {first} is {fmt(first_shape)}, "
                f"{name} is {fmt(shape)}",
                "inputs",
            )


def infer_node(
    op: str, attrs: dict[str, Any], names: Sequence[str], shapes: Sequence[Shape]
) -> OpResult:
    """Shape, params, statistics and MACs of one node; raises InferError when it cannot apply."""
    if op in MERGES:
        check_merge(op, names, shapes)
    elif op not in MULTI_INPUT and len(shapes) != 1:
        raise InferError(f"{op} takes one input, got {len(shapes)}", "inputs")
    result = SHAPE_RULES[op](attrs, shapes)
    if not result.shape or any(d < 1 for d in result.shape):
        raise InferError(
            f"{op} output {fmt(result.shape) or 'shape'} is empty: every channel and "
            "spatial size must be at least 1"
        )
    return result
