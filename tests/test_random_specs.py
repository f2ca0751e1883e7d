"""Property-based cross-backend equivalence: random valid specs compute the same function in torch
and Keras, the analytic parameter count equals both frameworks' counts, and the emitted modules
build the same models as the direct builders.

Hypothesis draws block templates (residual add with a projection shortcut, dense concat, parallel
branches merged by add or concat, nodes and merges that exist only where a ``when`` holds,
squeeze-and-excitation and CBAM-like attention: broadcasting ``mul`` of a C×1×1 or a 1×H×W gate
and a C×H×W map, ``mean``/``max`` over channels or space, a conv MLP and a BN shared by
``reuse``, a conv reused on a map of another size), stages with strides and repeats, kernel
sizes, strides, dilations, groups, symmetric and asymmetric paddings, pools (``ceil_mode``
too) and activations (``hardswish``, ``hardsigmoid`` too), groups named by position, params
named like stage counters, stage args reading the block's position and count, param defaults
reading model params, linear and conv layers reused at the top level. Two specs in five are
written as a base file and a child that ``extends`` it and edits it by name (``replace``,
``insert_before``, ``insert_after``, ``delete``, ``set`` on nodes of ``body`` and
``blocks.NAME.body``, group children too; sometimes a chain of two children, see
``random_edits.py``); the checks run on the child. Each spec goes through the real front end
(YAML text → load_spec), both backends build it, the torch weights (with non-trivial BatchNorm
statistics) move to Keras, and one random batch must agree within DESIGN.md's policy; the
emitted torch module (and, for a quarter of the specs, the emitted Keras module) loads the same
weights and computes bit-identical outputs. The run is derandomised so CI sees the same ≥200
specs every time; set ``RESCOMPILER_RANDOM_SPECS=N`` and ``RESCOMPILER_RANDOM_SEED=S`` to
explore further. Failures that hypothesis shrinks become ``REGRESSIONS`` below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from random_edits import auto_names, variant_files

import rescompiler
from rescompiler.verifier import randomize_batchnorm

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """The models are tiny: torch's intra-op threads only contend (with ``pytest -n 2`` on two
    cores a 3x3 conv of a 2×8×10×10 batch takes ~5 ms on two threads, ~0.2 ms on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EXAMPLES = int(os.environ.get("RESCOMPILER_RANDOM_SPECS", "200"))
SEED = os.environ.get("RESCOMPILER_RANDOM_SEED")
ACTIVATIONS = ["relu", "relu6", "tanh", "silu", "leaky_relu", "hardswish", "hardsigmoid"]
CHANNELS = [4, 8, 12, 16]  # multiples of 4, so groups of 1, 2 or 4 always divide


def _activation(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(ACTIVATIONS))
    return {"op": op, "slope": 0.1} if op == "leaky_relu" else {"op": op}


def _padding(draw: st.DrawFn, kernel: int, dilation: int) -> Any:
    """A padding that keeps the size at stride 1: symmetric, [h, w] or [t, b, l, r]."""
    total = dilation * (kernel - 1)
    style = draw(st.sampled_from(["int", "pair", "tblr"] if total % 2 == 0 else ["tblr"]))
    if style == "int":
        return total // 2
    if style == "pair":
        return [total // 2, total // 2]
    top = draw(st.integers(0, total))
    left = draw(st.integers(0, total))
    return [top, total - top, left, total - left]


def _conv(
    draw: st.DrawFn,
    name: str,
    out: Any,
    stride: Any = 1,
    groups: bool = True,
    pad_node: bool = True,
) -> list[dict[str, Any]]:
    """A conv keeping the size at stride 1; asymmetric padding on the conv itself or (unless
    ``pad_node`` is false: a conv that a ``reuse`` applies again) as a zeropad node before it."""
    kernel = draw(st.sampled_from([1, 3, 5]))
    dilation = draw(st.sampled_from([1, 1, 2])) if kernel > 1 else 1
    node: dict[str, Any] = {"op": "conv", "name": name, "out": out, "kernel": kernel}
    if stride != 1:
        node["stride"] = stride
    padding = _padding(draw, kernel, dilation)
    before: list[dict[str, Any]] = []
    uneven = isinstance(padding, list) and len(padding) == 4 and padding[::2] != padding[1::2]
    if uneven and pad_node and draw(st.booleans()):  # as a zeropad node, or on the conv
        before.append({"op": "zeropad", "name": f"{name}_pad", "padding": padding})
    elif padding != 0:
        node["padding"] = padding
    if dilation != 1:
        node["dilation"] = dilation
    if groups:
        g = draw(st.sampled_from([1, 1, 2, 4]))
        if g != 1:
            node["groups"] = g
    if draw(st.booleans()):
        node["bias"] = False
    return [*before, node]


@st.composite
def residual_block(draw: st.DrawFn) -> dict[str, Any]:
    """conv-bn-act-conv-bn + shortcut (projected when the shape changes), add, act."""
    body = [
        *_conv(draw, "conv1", "out", stride="stride"),
        {"op": "bn", "name": "bn1"},
        _activation(draw),
        *_conv(draw, "conv2", "out"),
        {"op": "bn", "name": "bn2"},
    ]
    style = draw(st.sampled_from(["project", "pool", "resnet_d"]))
    if style == "project":
        shortcut = [
            {"op": "conv", "name": "proj", "out": "out", "kernel": 1, "stride": "stride"},
            {"op": "bn", "name": "proj_bn"},
        ]
    elif style == "pool":  # avg-pool then 1x1 conv
        shortcut = [
            {
                "op": "avgpool",
                "name": "pool",
                "kernel": 3,
                "stride": "stride",
                "padding": 1,
                "count_include_pad": False,
            },
            {"op": "conv", "name": "proj", "out": "out", "kernel": 1, "bias": False},
        ]
    else:  # ResNet-D: a 2x2 ceil-mode pool only where the block strides
        shortcut = [
            {
                "op": "avgpool",
                "name": "pool",
                "kernel": 2,
                "stride": 2,
                "ceil_mode": True,
                "count_include_pad": False,
                "when": "stride != 1",
            },
            {"op": "conv", "name": "proj", "out": "out", "kernel": 1, "bias": False},
            {"op": "bn", "name": "proj_bn"},
        ]
    if draw(st.booleans()):  # children named by position (shortcut.0), as nn.Sequential
        for child in shortcut:
            del child["name"]
    body.append(
        {
            "group": "shortcut",
            "inputs": "input",
            "when": "stride != 1 or in_channels != out",
            "body": shortcut,
        }
    )
    body += [{"op": "add", "inputs": ["bn2", "shortcut"]}, _activation(draw)]
    return {"params": {"out": None, "stride": 1}, "body": body}


@st.composite
def dense_block(draw: st.DrawFn) -> dict[str, Any]:
    """bn-act-conv, concatenated to the input (channels grow), then a 1x1 transition."""
    growth = draw(st.sampled_from(CHANNELS))
    body = [
        {"op": "bn", "name": "norm"},
        _activation(draw),
        *_conv(draw, "grow", growth),
        {"op": "concat", "name": "cat", "inputs": ["input", "grow"]},
        {"op": "conv", "name": "trans", "out": "out", "kernel": 1, "stride": "stride"},
    ]
    return {"params": {"out": None, "stride": 1}, "body": body}


@st.composite
def branch_block(draw: st.DrawFn) -> dict[str, Any]:
    """Two or three parallel branches from the input, merged by add or concat, then a 1x1."""
    count = draw(st.integers(2, 3))
    merge = draw(st.sampled_from(["add", "concat"]))
    width = draw(st.sampled_from(CHANNELS))
    body: list[dict[str, Any]] = []
    names = []
    for k in range(count):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool"]))
        name = f"b{k}"
        if kind == "maxpool" and merge == "concat":
            nodes = [{"op": "maxpool", "name": name, "kernel": 3, "stride": 1, "padding": 1}]
        elif kind == "avgpool" and merge == "concat":
            include = draw(st.booleans())
            pool = {"op": "avgpool", "name": name, "kernel": 3, "stride": 1, "padding": 1}
            nodes = [{**pool, "count_include_pad": include}]
        else:  # add needs equal widths: pools keep the input's
            nodes = _conv(draw, name, width)
        nodes[0]["inputs"] = "input"
        body += nodes
        names.append(name)
    body.append({"op": merge, "name": "merge", "inputs": names})
    body += _conv(draw, "mix", "out", stride="stride")
    if draw(st.booleans()):
        body.append({"op": "bn", "name": "bn"})
    body.append(_activation(draw))
    return {"params": {"out": None, "stride": 1}, "body": body}


CONDITIONS = ["stride == 1", "in_channels == out", "out >= 8", True, False]


@st.composite
def gated_block(draw: st.DrawFn) -> dict[str, Any]:
    """Nodes that exist only for some blocks of a stage (``when``/``otherwise``): an activation
    that passes an earlier node on when off, an add (MobileNetV2's "residual only when the
    shape allows"), and a concat with the block input at stride 1, then a 1x1 to ``out``."""
    body = [
        *_conv(draw, "expand", "out", stride="stride"),
        {"op": "bn", "name": "ebn"},
        *_conv(draw, "mid", "out"),
        {
            **_activation(draw),
            "name": "gate",
            "when": draw(st.sampled_from(CONDITIONS)),
            "otherwise": "ebn",
        },
        {"op": "add", "name": "res", "inputs": ["gate", "ebn"]},
        {"op": "concat", "name": "cat", "inputs": ["res", "input"], "when": "stride == 1"},
        {"op": "conv", "name": "mix", "out": "out", "kernel": 1},
    ]
    body[-3]["when"] = draw(st.sampled_from(CONDITIONS))
    return {"params": {"out": None, "stride": 1}, "body": body}


def _squeeze(draw: st.DrawFn, name: str, inputs: str | None = None) -> dict[str, Any]:
    """A C×H×W map to C×1×1: a spatial reduction or a global pool keeping the dims."""
    node = draw(
        st.sampled_from(
            [
                {"op": "mean", "axis": "spatial"},
                {"op": "max", "axis": "spatial"},
                {"op": "global_avgpool"},
                {"op": "global_maxpool", "keepdims": True},
            ]
        )
    )
    node = {**node, "name": name}
    if inputs is not None:
        node["inputs"] = inputs
    return node


def _mul(draw: st.DrawFn, name: str, *inputs: str) -> dict[str, Any]:
    """A broadcasting product, its inputs in any order."""
    return {"op": "mul", "name": name, "inputs": list(draw(st.permutations(inputs)))}


@st.composite
def se_block(draw: st.DrawFn) -> dict[str, Any]:
    """conv-bn-act, then squeeze-and-excitation: a C×1×1 gate (squeeze, 1x1 conv down, act,
    1x1 conv up, sigmoid) times the C×H×W map; a residual add when the shape allows."""
    body = [
        *_conv(draw, "conv1", "out", stride="stride"),
        {"op": "bn", "name": "bn1"},
        {**_activation(draw), "name": "feat"},
        _squeeze(draw, "squeeze"),
        {"op": "conv", "name": "fc1", "out": "rd", "kernel": 1, "bias": draw(st.booleans())},
        _activation(draw),
        {"op": "conv", "name": "fc2", "out": "out", "kernel": 1},
        {"op": draw(st.sampled_from(["sigmoid", "hardsigmoid"])), "name": "gate"},
        _mul(draw, "scale", "feat", "gate"),
    ]
    if draw(st.booleans()):  # MobileNetV3-like: residual only where the shape is kept
        body.append(
            {
                "op": "add",
                "inputs": ["scale", "input"],
                "when": "stride == 1 and in_channels == out",
            }
        )
    reduction = draw(st.sampled_from(["max(1, out // 4)", "make_divisible(out / 4, 2)", "out"]))
    return {"params": {"out": None, "stride": 1}, "let": {"rd": reduction}, "body": body}


@st.composite
def cbam_block(draw: st.DrawFn) -> dict[str, Any]:
    """conv-bn-act, then CBAM-like attention, channel, spatial or both. Channel: one 1x1-conv
    MLP applied (``reuse``) to the spatial mean and max, summed, sigmoid, times the map.
    Spatial: the channel mean and/or max (1×H×W), a conv to one channel, sigmoid, times the
    map (or, with both, all three multiplied at once: C×H×W by C×1×1 by 1×H×W)."""
    parts = draw(st.sampled_from(["channel", "spatial", "both"]))
    body = [
        *_conv(draw, "conv1", "out", stride="stride"),
        {"op": "bn", "name": "bn1"},
        {**_activation(draw), "name": "feat"},
    ]
    together = parts == "both" and draw(st.integers(0, 3)) == 0  # one mul of three inputs
    source = "feat"
    if parts != "spatial":
        act = _activation(draw)
        if draw(st.booleans()):  # else reused by its op's name
            act["name"] = "act"
        body += [
            _squeeze(draw, "avg", inputs="feat"),
            {"op": "conv", "name": "fc1", "out": "max(1, out // 2)", "kernel": 1},
            act,
            {"op": "conv", "name": "fc2", "out": "out", "kernel": 1},
        ]
        shared_bn = draw(st.booleans())  # a BN after the MLP, shared too
        if shared_bn:
            body.append({"op": "bn", "name": "norm"})
        peak = {"op": draw(st.sampled_from(["max", "mean"])), "axis": "spatial", "name": "peak"}
        body += [
            {**peak, "inputs": "feat"},
            {"reuse": "fc1"},
            {"reuse": act.get("name", act["op"])},
            {"reuse": "fc2", "name": "fc2_peak"},
        ]
        if shared_bn:
            body.append({"reuse": "norm", "name": "norm_peak"})
        pooled = ["norm", "norm_peak"] if shared_bn else ["fc2", "fc2_peak"]
        merge = draw(st.sampled_from(["add", "add", "mul"]))
        body += [
            {"op": merge, "name": "mixed", "inputs": pooled},
            {"op": "sigmoid", "name": "cgate"},
        ]
        if not together:
            body.append(_mul(draw, "cmul", "feat", "cgate"))
            source = "cmul"
    if parts != "channel":
        kinds = draw(st.sampled_from([["mean"], ["max"], ["mean", "max"], ["max", "mean"]]))
        maps = [f"c{kind}" for kind in kinds]
        body += [
            {"op": kind, "axis": "channels", "name": name, "inputs": source}
            for kind, name in zip(kinds, maps, strict=True)
        ]
        if len(maps) == 2:
            body.append({"op": "concat", "name": "stacked", "inputs": maps})
        if len(maps) == 1 and draw(st.integers(0, 3)) == 0:  # the 1×H×W map itself gates
            body.append({"op": "sigmoid", "name": "sgate"})
        elif draw(st.booleans()):
            body += [*_conv(draw, "sconv", 1, groups=False), {"op": "sigmoid", "name": "sgate"}]
        else:  # conv and BN in a group, as timm's CBAM
            convolve = [*_conv(draw, "conv", 1, groups=False), {"op": "bn", "name": "bn"}]
            if draw(st.booleans()):  # children named by position (sconv.0), as nn.Sequential
                for child in convolve:
                    del child["name"]
            body += [{"group": "sconv", "body": convolve}, {"op": "sigmoid", "name": "sgate"}]
        gated = ["feat", "cgate", "sgate"] if together else [source, "sgate"]
        body.append(_mul(draw, "attended", *gated))
    return {"params": {"out": None, "stride": 1}, "body": body}


@st.composite
def tied_block(draw: st.DrawFn) -> dict[str, Any]:
    """Shared weights in a recurrence: a size-keeping conv ``c2`` (out→out) applied again by
    ``reuse``: on its own activated output, on another map of its shape, or on a half-size
    pooled map (at least half: upsampled, it is cropped back); optionally the BN ``n1``
    applied again too (an unnamed reuse, named ``n1_1``); a residual add."""
    body = [
        *_conv(draw, "c1", "out", stride="stride"),
        {"op": "bn", "name": "n1"},
        {**_activation(draw), "name": "a1"},
        *_conv(draw, "c2", "out", pad_node=False),
        {**_activation(draw), "name": "a2"},
    ]
    again: dict[str, Any] = {"reuse": "c2", "name": "again"}
    on = draw(st.sampled_from(["chain", "sideways", "pooled"]))
    if on == "sideways":  # on a1, another map of c2's input shape
        again["inputs"] = "a1"
    elif on == "pooled":  # on a map of another size: the weights fit any size
        pool = draw(st.sampled_from(["maxpool", "avgpool"]))
        down = {"op": pool, "name": "down", "kernel": 3, "stride": 2, "padding": 1}
        body.append({**down, "ceil_mode": draw(st.booleans()), "inputs": "a1"})
    body.append(again)
    last = "again"
    if on == "pooled":
        body += [
            {"op": "upsample", "name": "up", "scale": 2},
            {"op": "crop_to", "name": "fit", "inputs": ["up", "a2"]},
        ]
        last = "fit"
    if draw(st.booleans()):
        body.append({"reuse": "n1"})
        last = "n1_1"
    body.append({"op": "add", "inputs": [last, "a1" if on == "chain" else "a2"]})
    return {"params": {"out": None, "stride": 1}, "body": body}


@st.composite
def cn_block(draw: st.DrawFn) -> dict[str, Any]:
    """ConvNeXt-like: a 1x1 entry conv where the shape changes, a depthwise conv, a norm (a
    LayerNorm over the channels of the C×H×W map, a GroupNorm, or, after a ``permute`` to
    channels-last, a LayerNorm there), two ``linear`` layers over the channels of the
    channels-last map (or two 1x1 convs), a ``layer_scale`` on either layout, a ``drop_path``
    whose rate the stage args compute from ``block_index`` and ``block_count``, a residual add."""
    kernel = draw(st.sampled_from([3, 5, 7]))
    body: list[dict[str, Any]] = [
        {
            "op": "conv",
            "name": "entry",
            "out": "out",
            "kernel": 1,
            "stride": "stride",
            "when": "stride != 1 or in_channels != out",
        },
        {
            "op": "conv",
            "name": "dw",
            "out": "out",
            "kernel": kernel,
            "padding": kernel // 2,
            "groups": "out",
        },
    ]
    last = draw(st.booleans())  # the MLP over channels-last maps, else as 1x1 convs
    hidden = draw(st.sampled_from(["2 * out", "4 * out", "out"]))
    scale = {"op": "layer_scale", "name": "gamma", "value": draw(st.sampled_from([0.5, 1.0]))}
    scale_last = last and draw(st.booleans())  # on the channels-last map
    eps = draw(st.sampled_from([None, 1e-6]))
    norm: dict[str, Any]
    if last:
        norm = {"op": "layernorm", "name": "norm"}
        early = draw(st.booleans())  # LayerNorm on the C×H×W map, or after the permute
        mlp = [
            {"op": "linear", "name": "fc1", "out": hidden, "bias": draw(st.booleans())},
            _activation(draw) if draw(st.booleans()) else {"op": "gelu"},
            {"op": "linear", "name": "fc2", "out": "out"},
        ]
        if scale_last:
            mlp.append(scale)
        if early:
            body += [norm, {"op": "permute", "to": "channels_last"}, *mlp]
        else:
            body += [{"op": "permute", "to": "channels_last"}, norm, *mlp]
        body.append({"op": "permute", "name": "back", "to": "channels_first"})
    else:
        norm = draw(
            st.sampled_from(
                [
                    {"op": "layernorm", "name": "norm"},
                    {"op": "groupnorm", "name": "norm", "groups": 1},
                    {"op": "groupnorm", "name": "norm", "groups": 2},
                    {"op": "groupnorm", "name": "norm", "groups": 4},
                ]
            )
        )
        body += [
            norm,
            {"op": "conv", "name": "fc1", "out": hidden, "kernel": 1},
            _activation(draw),
            {"op": "conv", "name": "fc2", "out": "out", "kernel": 1},
        ]
    if eps is not None:
        norm["eps"] = eps
    if not scale_last and draw(st.integers(0, 3)) > 0:
        body.append(scale)
    body.append({"op": "drop_path", "name": "drop", "p": "rate"})
    body.append(
        {
            "op": "add",
            "inputs": [body[-1]["name"], "entry"],
        }
    )
    return {"params": {"out": None, "stride": 1, "rate": 0.0}, "body": body}


LIGHT = {"residual", "dense", "branch", "gated", "tied"}  # the others repeat at most twice
BLOCKS = {
    "residual": residual_block(),
    "dense": dense_block(),
    "branch": branch_block(),
    "gated": gated_block(),
    "se": se_block(),
    "cbam": cbam_block(),
    "tied": tied_block(),
    "cn": cn_block(),
}


@st.composite
def random_model(draw: st.DrawFn) -> dict[str, Any]:
    """A random valid spec as a plain dict (what a YAML file would hold)."""
    channels = draw(st.sampled_from([1, 2, 3, 4]))
    size = draw(st.integers(8, 20)), draw(st.integers(8, 20))
    # each stage's block (drawn one by one: a drawn list's first item is biased to the first
    # name), and sometimes a template that no stage uses
    stages = [draw(st.sampled_from(sorted(BLOCKS))) for _ in range(draw(st.integers(1, 3)))]
    unused = [draw(st.sampled_from(sorted(BLOCKS)))] if draw(st.integers(0, 3)) == 0 else []
    blocks = {kind: draw(BLOCKS[kind]) for kind in dict.fromkeys(stages + unused)}
    stem_out = draw(st.sampled_from(CHANNELS))
    pre = draw(st.sampled_from(["none", "none", "rescale", "normalize", "both"]))
    prep: list[dict[str, Any]] = []  # Keras' preprocessing layers, per channel or not
    if pre in ("rescale", "both"):
        scale = draw(st.sampled_from([0.5, 1 / 255, [0.5 + k / 4 for k in range(channels)]]))
        prep.append({"op": "rescale", "name": "scale", "scale": scale, "offset": -0.25})
    if pre in ("normalize", "both"):
        mean = draw(st.sampled_from([0.25, [k / 8 for k in range(channels)]]))
        variance = draw(st.sampled_from([4.0, [0.5 + k for k in range(channels)]]))
        stored = draw(st.booleans())
        prep.append(
            {
                "op": "normalize",
                "name": "norm",
                "mean": mean,
                "variance": variance,
                "stored": stored,
            }
        )
    body: list[dict[str, Any]] = [
        *_conv(draw, "stem", stem_out, stride=draw(st.sampled_from([1, 2])), groups=False),
        {"op": "bn", "name": "stem_bn", "eps": draw(st.sampled_from([1e-5, 1e-3]))},
        _activation(draw),
    ]
    if draw(st.integers(0, 2)) == 0:  # the stem as a group (an nn.Sequential)
        if draw(st.booleans()):  # children named by position (stem.0)
            for node in body:
                node.pop("name", None)
        body = [{"group": "stem", "body": body}]
    body = [*prep, *body]
    if draw(st.integers(0, 3)) == 0:  # spatial attention on the stem: 1×H×W times C×H×W
        stem = auto_names(body)[-1]
        body += [
            {"op": draw(st.sampled_from(["mean", "max"])), "axis": "channels", "name": "stem_map"},
            {"op": draw(st.sampled_from(["sigmoid", "hardsigmoid"])), "name": "stem_gate"},
            _mul(draw, "stem_attn", stem, "stem_gate"),
        ]
    if draw(st.booleans()):
        pool = draw(st.sampled_from(["maxpool", "avgpool"]))
        node = {"op": pool, "name": "pool", "kernel": 3, "stride": 2, "padding": 1}
        node["ceil_mode"] = draw(st.booleans())  # odd sizes: a last window over the edge
        if pool == "avgpool":
            node["count_include_pad"] = draw(st.booleans())
        body.append(node)
    params: dict[str, Any] = {"num_classes": draw(st.integers(2, 10))}
    if draw(st.booleans()):  # model params named like a stage's counters (i, n) and variables
        params.update({"n": draw(st.integers(1, 2)), "i": draw(st.sampled_from(CHANNELS))})
        params["block"] = 1
    if draw(st.booleans()):  # ``out`` defaults to a model param (defaults are expressions)
        params["width"] = draw(st.sampled_from(CHANNELS))
        for template in blocks.values():
            template["params"]["out"] = "width"
    repeats: list[Any] = [1, 1, 2, 3, *(["n", "n + 1"] if "n" in params else [])]
    for k, kind in enumerate(stages):
        stride = draw(st.sampled_from([1, "2 if i == 0 else 1"]))
        c = draw(st.sampled_from(CHANNELS))
        # inside args, i and n are the block's position and the stage's count
        outs: list[Any] = [c, f"min(16, {c} + 4 * i)", f"{c} + 4 * (n - 1)"]
        stage: dict[str, Any] = {
            "block": kind,
            "name": f"stage{k + 1}",
            "repeat": draw(st.sampled_from(repeats if kind in LIGHT else repeats[:3])),
            "args": {"out": draw(st.sampled_from(outs))},
        }
        if "width" in params and draw(st.booleans()):
            del stage["args"]["out"]
        if stride != 1:
            stage["args"]["stride"] = stride
        if kind == "cn":  # a stochastic-depth rate over the whole body (identity in eval)
            rates = ["0.1 * block_index / block_count", "0.2 * (block_index + 1) / block_count"]
            stage["args"]["rate"] = draw(st.sampled_from([*rates, 0.0, 0.5]))
        body.append(stage)
    if "i" in params:  # the model param i, read after the stages' loops
        body.append({"op": "conv", "name": "post", "out": "i", "kernel": 1})
    if draw(st.integers(0, 3)) == 0:  # a top-level conv applied twice (shared weights)
        tail = draw(st.sampled_from(CHANNELS))
        body += [
            {"op": "conv", "name": "tail", "out": tail, "kernel": 1},
            *_conv(draw, "tail2", tail, pad_node=False),
            _activation(draw),
            {"reuse": "tail2"},
        ]
    head = draw(st.sampled_from(["none", "fc", "vector", "tied"]))
    if head == "vector":  # a global pool straight to a vector
        body += [
            {"op": draw(st.sampled_from(["global_avgpool", "global_maxpool"])), "keepdims": False},
            {"op": "linear", "name": "fc", "out": "num_classes"},
        ]
    elif head != "none":
        body += [{"op": "global_avgpool"}, {"op": "flatten"}]
        if head == "tied":  # a linear layer applied twice (shared weights)
            width = draw(st.sampled_from(CHANNELS))
            body += [
                {"op": "linear", "name": "emb", "out": width},
                _activation(draw),
                {"op": "linear", "name": "emb2", "out": width},
                {"reuse": "emb2", "name": "emb3"},
            ]
        body.append({"op": "linear", "name": "fc", "out": "num_classes"})
    model = {
        "version": 1,
        "name": "random_spec",
        "input_shape": [channels, *size],
        "params": params,
        "blocks": blocks,
        "body": body,
    }
    if draw(st.integers(0, 4)) == 0:  # several named outputs (a backbone's features)
        names = auto_names(body)
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            model["outputs"] = chosen
        else:
            model["outputs"] = {f"out{k}": name for k, name in enumerate(chosen)}
    return model


Files = list[tuple[str, dict[str, Any]]]


@st.composite
def random_spec(draw: st.DrawFn) -> Files:
    """A random valid spec as the YAML files to write: one file, or (two times in five) a base
    file and a child that extends it and edits it by name (sometimes a chain of two). The
    last file is the spec to check."""
    model = draw(random_model())
    if draw(st.integers(0, 4)) < 2:
        return draw(variant_files(model))
    return [("random_spec.yaml", model)]


def load(data: dict[str, Any] | Files, tmp: Path) -> rescompiler.Spec | None:
    files = [("random_spec.yaml", data)] if isinstance(data, dict) else data
    for name, content in files:
        (tmp / name).write_text(yaml.safe_dump(content, sort_keys=False))
    try:
        return rescompiler.load_spec(tmp / files[-1][0])
    except rescompiler.SpecError as exc:
        # only a spatial size driven below 1 by the strides may reject a drawn spec
        text = "\n\n".join(f"# {name}\n{(tmp / name).read_text()}" for name, _ in files)
        assert "size" in str(exc) or "spatial" in str(exc) or "smaller" in str(exc), (
            f"{exc}\n{text}"
        )
        return None


def check_equivalence(spec: rescompiler.Spec, keras_source: bool = True) -> None:
    """Build both backends, transfer, compare outputs and parameter counts; then the emitted
    torch module (and, when ``keras_source``, the emitted Keras module) must build the same
    model: the built model's weights load into it and it computes bit-identical outputs."""
    files = sorted(Path(spec.file).parent.glob("*.yaml"))
    text = "\n".join(f"# {path.name}\n{path.read_text()}" for path in files)
    torch.manual_seed(0)
    source = rescompiler.build(spec, "torch")
    randomize_batchnorm(source, seed=1)
    with torch.no_grad():  # norms' scales and shifts, layer scales, biases away from 1 and 0
        for param in source.parameters():
            if param.dim() <= 1:
                param.mul_(torch.rand_like(param) + 0.5).add_(0.1 * torch.randn_like(param))
    source.eval()
    target = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, target)

    summary = rescompiler.summarize(spec)
    torch_params = sum(p.numel() for p in source.parameters())
    # non-trainable: BN statistics, stored normalization statistics (Keras adds a count to each)
    state = source.state_dict()
    kept = ("running_mean", "running_var", "mean", "variance")
    torch_stats = sum(v.numel() for k, v in state.items() if k.rsplit(".", 1)[-1] in kept)
    torch_stats += sum(1 for k in state if k.endswith(".variance"))
    assert summary.trainable_params == torch_params, text
    assert summary.bn_statistics == torch_stats, text
    assert target.count_params() == summary.total_params, text

    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = torch_outputs(source(torch.from_numpy(x)))
    raw = keras_outputs(target(x.transpose(0, 2, 3, 1), training=False))
    assert raw.keys() == expected.keys(), text
    for key, want in expected.items():
        got = raw[key].transpose(0, 3, 1, 2) if raw[key].ndim == 4 else raw[key]
        assert got.shape == want.shape, f"{key}\n{text}"
        diff = float(np.abs(got - want).max())
        bound = 1e-4 * float(np.abs(want).max()) + 1e-5
        assert diff <= bound, f"{key}: max|a-b| = {diff:.3g} > {bound:.3g}\n{text}"

    generated = run_emitted(spec, "torch")().eval()
    generated.load_state_dict(source.state_dict(), strict=True)
    with torch.no_grad():
        again = torch_outputs(generated(torch.from_numpy(x)))
    for key, want in expected.items():
        assert np.array_equal(again[key], want), f"torch built vs generated differ\n{text}"
    keras_build = run_emitted(spec, "keras")  # every Keras source compiles
    if keras_source:  # a quarter of them is built too: Keras builds are slow
        generated = keras_build()
        rescompiler.transfer_weights(spec, source, generated)
        again = keras_outputs(generated(x.transpose(0, 2, 3, 1), training=False))
        for key, want in raw.items():
            assert np.array_equal(again[key], want), f"Keras built vs generated differ\n{text}"


def torch_outputs(result: Any) -> dict[str, np.ndarray]:
    """A torch model's output(s) by name (one unnamed output: ``""``)."""
    if isinstance(result, dict):
        return {key: value.numpy() for key, value in result.items()}
    return {"": result.numpy()}


def keras_outputs(result: Any) -> dict[str, np.ndarray]:
    """A Keras model's output(s) by name (one unnamed output: ``""``)."""
    if isinstance(result, dict):
        return {key: np.asarray(value) for key, value in result.items()}
    return {"": np.asarray(result)}


def run_emitted(spec: rescompiler.Spec, backend: str) -> Any:
    """The ``build`` function of the module ``emit`` writes, run as a user would."""
    namespace: dict[str, Any] = {"__name__": f"{spec.name}_{backend}"}
    code = compile(rescompiler.emit(spec, backend), f"{spec.name}_{backend}.py", "exec")
    exec(code, namespace)
    return namespace["build"]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(files=random_spec(), keras_source=st.integers(0, 3).map(lambda k: k == 0))
def test_random_specs_compute_the_same_function_in_torch_and_keras(
    files: Files, keras_source: bool, tmp_path: Path
) -> None:
    for path in tmp_path.glob("*.yaml"):  # the directory is shared by the examples
        path.unlink()
    event(["one file", "a variant", "a variant of a variant"][len(files) - 1])
    spec = load(files, tmp_path)
    if spec is None:
        event("invalid: strides drove a spatial size below 1")
    assume(spec is not None)
    assert spec is not None
    check_equivalence(spec, keras_source)


if SEED is not None:
    from hypothesis import seed

    test_random_specs_compute_the_same_function_in_torch_and_keras = seed(int(SEED))(
        test_random_specs_compute_the_same_function_in_torch_and_keras
    )


def _regression(blocks: dict[str, Any], body: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "random_spec",
        "input_shape": [1, 9, 8],
        "params": {"num_classes": 2},
        "blocks": blocks,
        "body": body,
    }


# Specs hypothesis found failing, shrunk, kept after the fix.
REGRESSIONS: dict[str, dict[str, Any]] = {
    # the Keras emitter reused the block param `out` as a tensor variable (KerasTensor as filters)
    "param named like a generic variable": _regression(
        {
            "dense": {
                "params": {"out": None, "stride": 1},
                "body": [
                    {"op": "bn", "name": "norm"},
                    {"op": "relu"},
                    {"op": "conv", "name": "grow", "out": 4, "kernel": 1},
                    {"op": "concat", "name": "cat", "inputs": ["input", "grow"]},
                    {"op": "conv", "name": "trans", "out": "out", "kernel": 1, "stride": "stride"},
                ],
            }
        },
        [
            {"op": "conv", "name": "stem", "out": 4, "kernel": 1},
            {"op": "bn", "name": "stem_bn"},
            {"op": "relu"},
            {"block": "dense", "name": "stage1", "repeat": 1, "args": {"out": 4}},
        ],
    ),
    # the torch backend refused asymmetric conv padding; now a PaddedConv2d pads in forward
    "asymmetric conv padding": _regression(
        {
            "blk": {
                "params": {"out": None},
                "body": [
                    {
                        "op": "conv",
                        "name": "c",
                        "out": "out",
                        "kernel": [3, 2],
                        "padding": [0, 2, 1, 0],
                    },
                    {"op": "bn", "name": "bn"},
                    {
                        "group": "short",
                        "inputs": "input",
                        "body": [
                            {
                                "op": "conv",
                                "name": "proj",
                                "out": "out",
                                "kernel": 3,
                                "padding": [2, 0, 1, 1],
                                "bias": False,
                            },
                        ],
                    },
                    {"op": "add", "inputs": ["bn", "short"]},
                ],
            }
        },
        [
            {
                "op": "conv",
                "name": "stem",
                "out": 4,
                "kernel": 3,
                "stride": 2,
                "padding": [1, 0, 0, 1],
            },
            {"block": "blk", "name": "layer", "repeat": 2, "args": {"out": 8}},
        ],
    ),
    # Keras' Conv2D refuses strides > 1 together with dilation_rate > 1
    "strided dilated conv": _regression(
        {},
        [
            {"op": "conv", "name": "c1", "out": 4, "kernel": 3, "stride": 2, "dilation": 2},
            {"op": "bn", "name": "b1"},
            {
                "op": "conv",
                "name": "c2",
                "out": 4,
                "kernel": 3,
                "stride": [1, 2],
                "padding": 2,
                "dilation": [2, 2],
            },
        ],
    ),
    # a node used only where another node's `when` holds (mid feeds gate, on only when
    # in_channels == out): the front end drops it elsewhere, torch built it everywhere
    "node used only in some blocks": _regression(
        {
            "gated": {
                "params": {"out": None, "stride": 1},
                "body": [
                    {"op": "conv", "name": "expand", "out": "out", "kernel": 1, "stride": "stride"},
                    {"op": "bn", "name": "ebn"},
                    {"op": "conv", "name": "mid", "out": "out", "kernel": 1},
                    {
                        "op": "relu",
                        "name": "gate",
                        "when": "in_channels == out",
                        "otherwise": "ebn",
                    },
                    {"op": "add", "name": "res", "inputs": ["gate", "ebn"], "when": "stride == 1"},
                    {
                        "op": "concat",
                        "name": "cat",
                        "inputs": ["res", "input"],
                        "when": "stride == 1",
                    },
                    {"op": "conv", "name": "mix", "out": "out", "kernel": 1},
                ],
            }
        },
        [
            {"op": "conv", "name": "stem", "out": 4, "kernel": 1},
            {"op": "bn", "name": "stem_bn", "eps": 1e-05},
            {"op": "relu"},
            {"block": "gated", "name": "stage1", "repeat": 1, "args": {"out": 8}},
        ],
    ),
    # block param defaults were used raw ("'relu'" kept its quotes) and torch put a required
    # param after a defaulted one (SyntaxError); they are expressions, like args
    "param defaults are expressions": {
        **_regression(
            {
                "blk": {
                    "params": {"act": "'relu'", "width": "base * 2", "out": None},
                    "body": [
                        {"op": "conv", "name": "c", "out": "width + out", "kernel": 3},
                        {"op": "relu", "name": "r", "when": "act == 'relu'"},
                    ],
                }
            },
            [
                {"block": "blk", "name": "u1", "args": {"out": 1}},
                {"block": "blk", "name": "u2", "args": {"act": "'none'", "out": 2}},
            ],
        ),
        "params": {"base": 3},
    },
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_shrunk_failures_stay_fixed(case: str, tmp_path: Path) -> None:
    spec = load(REGRESSIONS[case], tmp_path)
    assert spec is not None
    check_equivalence(spec)


def test_literal_when_builds_or_skips_without_dead_branches(tmp_path: Path) -> None:
    """``when: true`` is an ordinary node and ``when: false`` no node at all (its value is its
    input's or ``otherwise``'s), in groups too; both backends agree and write no ``if False:``."""
    blocks = {
        "blk": {
            "params": {"out": None},
            "body": [
                {"op": "conv", "name": "a", "out": "out", "kernel": 1},
                {"op": "conv", "name": "b", "out": "out", "kernel": 1},
                {"op": "relu", "name": "r", "when": False, "otherwise": "a"},
                {"op": "bn", "name": "n", "when": True},
                {
                    "group": "g",
                    "body": [
                        {"op": "conv", "out": "out", "kernel": 1},
                        {"op": "relu", "when": False},
                        {"op": "conv", "out": "out", "kernel": 1},
                    ],
                },
                {"group": "h", "body": [{"op": "relu", "when": False}]},
                {"op": "add", "inputs": ["h", "a"]},
            ],
        }
    }
    spec = load(_regression(blocks, [{"block": "blk", "name": "s", "args": {"out": 4}}]), tmp_path)
    assert spec is not None
    assert [node.id for node in spec.graph.nodes] == ["s.a", "s.n", "s.g.0", "s.g.2", "s.add"]
    check_equivalence(spec)
    for backend in ("torch", "keras"):
        source = rescompiler.emit(spec, backend)
        assert "if False" not in source and "if True" not in source, backend
