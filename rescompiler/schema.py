"""The spec format as pydantic v2 models: one model per op, discriminated by ``op``.

Numeric fields take a literal or an expression string (``"planes * 4"``); booleans likewise
(``"stride != 1"``). Names are identifiers. ``rescompile schema`` prints the JSON Schema.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    Tag,
)

SPEC_VERSION = 1
RESERVED = frozenset(keyword.kwlist) | {"self", "super", "print", "eval", "exec", "object"}


def _not_reserved(name: str) -> str:
    if name in RESERVED:
        raise ValueError(f"{name!r} is a reserved word and cannot be a name")
    return name


Ident = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64),
    AfterValidator(_not_reserved),
]
# empty only as a group's Keras name (its layers get no prefix of its own): expand checks
NameTemplate = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9_{}()+\-*/% ]*$", max_length=128)
]
# Literals are strict: ``true`` is not the integer 1, ``1`` is not true, ``3.0`` is not 3.
IntExpr = Annotated[StrictInt | str, Field(union_mode="left_to_right")]
BoolExpr = Annotated[StrictBool | str, Field(union_mode="left_to_right")]
FloatExpr = Annotated[StrictFloat | str, Field(union_mode="left_to_right")]  # 1 is 1.0
OutputName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$", max_length=64)]
# a node of the model body, or a child of one of its groups by dotted path (``features.1``)
NodePath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+){0,15}$", max_length=256),
]
Pair = IntExpr | list[IntExpr]
Padding = IntExpr | list[IntExpr]
InitName = Literal[
    "torch_default",
    "kaiming_normal_fan_out",
    "kaiming_normal_fan_in",
    "kaiming_uniform_fan_in",
    "glorot_uniform",
    "glorot_normal",
    "trunc_normal_002",
    "normal_001",
    "uniform_fan_out",
    "kaiming_truncated_normal_fan_out",
    "kaiming_truncated_normal_fan_in",
    "zeros",
    "ones",
]
INIT_NAMES: tuple[str, ...] = InitName.__args__  # type: ignore[attr-defined]
# node fields whose values are names or fixed words, never expressions
NOT_EXPRESSIONS = frozenset(
    {"name", "inputs", "otherwise", "doc", "op", "block", "group", "reuse", "names"}
    | {"mode", "axis", "to"}
)


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeBase(Strict):
    """Fields every node has."""

    name: Ident | None = Field(None, description="node name; the torch attribute name")
    inputs: Ident | Annotated[list[Ident], Field(min_length=1)] | None = Field(
        None, description="producer node(s); default: the previous node (or the block input)"
    )
    when: BoolExpr | None = Field(
        None, description="build this node only when true; otherwise it passes its input on"
    )
    otherwise: Ident | None = Field(
        None, description="when `when` is false, use this node's output instead of the input"
    )
    names: dict[Ident, NameTemplate] = Field(
        default_factory=dict,
        description="backend-specific names, e.g. {keras: 1_conv}; a group's may be empty",
    )
    doc: str = ""


class InitFields(Strict):
    """Initialisers of one op's tensors; each value names an initialiser or is an expression."""

    weight: str | None = None
    bias: str | None = None


class Conv(NodeBase):
    """2-D convolution (NCHW semantics; padding explicit, ``valid``, or ``same``).
    ``depthwise: true`` makes a conv whose groups, output and input channels are equal Keras'
    ``DepthwiseConv2D`` (kernel kh×kw×C×1, as keras.applications' MobileNets hold it) rather
    than a ``Conv2D`` with groups (kh×kw×1×C, as its ConvNeXt does): the same function and the
    same torch module, another Keras weight layout."""

    op: Literal["conv"]
    out: IntExpr
    kernel: Pair
    stride: Pair = 1
    padding: Padding = 0
    dilation: Pair = 1
    groups: IntExpr = 1
    bias: BoolExpr | None = None
    init: InitFields | None = None
    depthwise: StrictBool = Field(
        False,
        description="Keras' DepthwiseConv2D (needs groups = out = the input's channels)",
    )


class ConvTranspose(NodeBase):
    """2-D transposed convolution."""

    op: Literal["conv_transpose"]
    out: IntExpr
    kernel: Pair
    stride: Pair = 1
    padding: Pair = 0
    output_padding: Pair = 0
    dilation: Pair = 1
    groups: IntExpr = 1
    bias: BoolExpr | None = None
    init: InitFields | None = None


class BatchNorm(NodeBase):
    """Batch normalisation over channels. ``momentum`` in torch's convention."""

    op: Literal["bn"]
    eps: FloatExpr | None = None
    momentum: FloatExpr | None = None
    affine: BoolExpr = True
    init: InitFields | None = None


class Linear(NodeBase):
    """Fully connected layer on a flat vector, or on the channels of a channels-last map
    (after ``{op: permute, to: channels_last}``, as torchvision's ConvNeXt block)."""

    op: Literal["linear"]
    out: IntExpr
    bias: BoolExpr | None = None
    init: InitFields | None = None


class LayerNorm(NodeBase):
    """Layer normalisation over the channels, with a learnable per-channel scale and shift:
    of a C×H×W map (torchvision's ``LayerNorm2d``), of a channels-last map or of a vector
    (``nn.LayerNorm``)."""

    op: Literal["layernorm"]
    eps: FloatExpr | None = None


class GroupNorm(NodeBase):
    """Group normalisation: channels in ``groups`` groups, each normalised over its channels
    and space; learnable per-channel scale and shift (``nn.GroupNorm``)."""

    op: Literal["groupnorm"]
    groups: IntExpr
    eps: FloatExpr | None = None


class LayerScale(NodeBase):
    """A learnable per-channel scale, initialised to ``value`` (torchvision's ConvNeXt
    ``layer_scale`` parameter; ``LayerScale`` of keras.applications' ConvNeXt)."""

    op: Literal["layer_scale"]
    value: FloatExpr = 1e-6


class DropPath(NodeBase):
    """Stochastic depth: in training, each sample is zeroed with probability ``p`` and the
    others are scaled by 1/(1 - p) (``torchvision.ops.StochasticDepth(p, "row")``); identity
    in eval. ``p`` may read ``block_index`` and ``block_count``."""

    op: Literal["drop_path"]
    p: FloatExpr


class Permute(NodeBase):
    """Move a C×H×W map's channels last (``to: channels_last``, torch's
    ``x.permute(0, 2, 3, 1)``) or back first (``to: channels_first``). On a channels-last map
    ``linear`` and ``layernorm`` act on the channels. Keras maps are channels-last already:
    there it computes nothing."""

    op: Literal["permute"]
    to: Literal["channels_last", "channels_first"]


class Rescale(NodeBase):
    """``x * scale + offset``, per channel when lists are given (Keras ``Rescaling``, as the
    keras.applications models carry it: ``scale: 1 / 255``)."""

    op: Literal["rescale"]
    scale: FloatExpr | Annotated[list[FloatExpr], Field(min_length=1)]
    offset: FloatExpr | Annotated[list[FloatExpr], Field(min_length=1)] = 0.0


class Normalize(NodeBase):
    """``(x - mean) / sqrt(variance)`` per channel with fixed statistics (Keras
    ``Normalization``). ``stored: true`` keeps them as weights (Keras counts mean, variance and
    a count, as keras.applications' EfficientNet carries them; torch buffers in the
    state_dict); ``false`` as constants (keras.applications' ConvNeXt)."""

    op: Literal["normalize"]
    mean: FloatExpr | Annotated[list[FloatExpr], Field(min_length=1)]
    variance: FloatExpr | Annotated[list[FloatExpr], Field(min_length=1)]
    stored: StrictBool = True


class Activation(NodeBase):
    """Element-wise activation or a shape-only op without parameters."""

    op: Literal[
        "relu",
        "relu6",
        "sigmoid",
        "tanh",
        "gelu",
        "silu",
        "hardswish",
        "hardsigmoid",
        "identity",
        "flatten",
        "softmax",
    ]


class LeakyReLU(NodeBase):
    """Leaky ReLU."""

    op: Literal["leaky_relu"]
    slope: FloatExpr = 0.01


class MaxPool(NodeBase):
    """Max pooling; padding pads with -inf (torch semantics). Put a zeropad first for zeros.
    ``ceil_mode`` rounds the output size up, as torch (a last window may hang over the edge)."""

    op: Literal["maxpool"]
    kernel: Pair
    stride: Pair | None = None
    padding: Pair = 0
    ceil_mode: BoolExpr = False


class AvgPool(NodeBase):
    """Average pooling; ``count_include_pad`` and ``ceil_mode`` as in torch (the part of a last
    window beyond the padded input is never counted)."""

    op: Literal["avgpool"]
    kernel: Pair
    stride: Pair | None = None
    padding: Pair = 0
    count_include_pad: BoolExpr = True
    ceil_mode: BoolExpr = False


class GlobalPool(NodeBase):
    """Global average/max pool; output C×1×1 (keepdims) or a C-vector."""

    op: Literal["global_avgpool", "global_maxpool"]
    keepdims: BoolExpr = True


class Dropout(NodeBase):
    """Dropout (identity in eval mode)."""

    op: Literal["dropout"]
    p: FloatExpr = 0.5


class ZeroPad(NodeBase):
    """Zero padding: int, [h, w] or [top, bottom, left, right]."""

    op: Literal["zeropad"]
    padding: Padding


class Crop(NodeBase):
    """Crop [top, bottom, left, right] pixels."""

    op: Literal["crop"]
    crop: Padding


class MatchSize(NodeBase):
    """Centre-crop or zero-pad the first input to the spatial size of the second."""

    op: Literal["crop_to", "pad_to"]


class Subsample(NodeBase):
    """Strided subsample ``x[:, :, ::s, ::s]`` (CIFAR option-A shortcut)."""

    op: Literal["subsample"]
    stride: IntExpr


class ChannelPad(NodeBase):
    """Zero channels added before and after (CIFAR option-A shortcut)."""

    op: Literal["channel_pad"]
    before: IntExpr
    after: IntExpr


class Upsample(NodeBase):
    """Upsampling by an integer factor: nearest, or bilinear with ``align_corners``."""

    op: Literal["upsample"]
    scale: IntExpr = 2
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: BoolExpr = False


class Merge(NodeBase):
    """``add`` (equal shapes), ``concat`` (channel axis, equal spatial size) or ``mul``
    (element-wise product, broadcasting sizes of 1: a C×1×1 gate times a C×H×W map, or a 1×H×W
    map times a C×H×W one) of 2+ inputs."""

    op: Literal["add", "concat", "mul"]


class Reduce(NodeBase):
    """Mean or max over the channel axis (a C×H×W map becomes 1×H×W, CBAM's spatial attention)
    or over space (C×1×1, the squeeze of squeeze-and-excitation); the axis is kept."""

    op: Literal["mean", "max"]
    axis: Literal["channels", "spatial"]


class Reuse(NodeBase):
    """Apply an earlier op node of the same body again, with the same weights, to another input
    (shared weights: CBAM's channel MLP runs on the average- and on the max-pooled vector)."""

    reuse: Ident = Field(description="name of an earlier op node of this body")


class BlockCall(NodeBase):
    """Use a block template; with ``repeat`` it is a stage of blocks chained one after another."""

    block: Ident
    args: dict[Ident, Any] = Field(
        default_factory=dict, description="block params; may use i (position) and n (count)"
    )
    repeat: IntExpr | None = None
    child_name: NameTemplate = Field("{i}", description="name of the i-th block of a stage")


def _not_empty(body: list[Any]) -> list[Any]:
    if not body:
        raise ValueError("a group needs at least one node")
    return body


class Group(NodeBase):
    """A named sequential container (torch ``nn.Sequential``); children are named 0, 1, ...
    A group inside a group may be named by a number, as torchvision's ``features.1.conv.0``."""

    group: Ident | Annotated[StrictInt, Field(ge=0, le=99_999)]
    body: Annotated[
        list[Node], AfterValidator(_not_empty), Field(json_schema_extra={"minItems": 1})
    ]


def _node_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        if "block" in value:
            return "<block>"
        if "group" in value:
            return "<group>"
        if "reuse" in value:
            return "<reuse>"
        return value.get("op") if isinstance(value.get("op"), str) else None
    for tag, cls in NODE_TAGS.items():
        if isinstance(value, cls):
            return tag
    return None


OP_MODELS: tuple[type[NodeBase], ...] = (
    Conv,
    ConvTranspose,
    BatchNorm,
    Linear,
    Activation,
    LeakyReLU,
    MaxPool,
    AvgPool,
    GlobalPool,
    Dropout,
    ZeroPad,
    Crop,
    MatchSize,
    Subsample,
    ChannelPad,
    Upsample,
    Merge,
    Reduce,
    LayerNorm,
    GroupNorm,
    LayerScale,
    DropPath,
    Permute,
    Rescale,
    Normalize,
)
NODE_TAGS: dict[str, type[NodeBase]] = {
    "<block>": BlockCall,
    "<group>": Group,
    "<reuse>": Reuse,
}
for _model in OP_MODELS:
    for _op in _model.model_fields["op"].annotation.__args__:  # type: ignore[union-attr]
        NODE_TAGS[_op] = _model
OP_NAMES: tuple[str, ...] = tuple(t for t in NODE_TAGS if not t.startswith("<"))

Node = Annotated[
    Annotated[Conv, Tag("conv")]
    | Annotated[ConvTranspose, Tag("conv_transpose")]
    | Annotated[BatchNorm, Tag("bn")]
    | Annotated[Linear, Tag("linear")]
    | Annotated[Activation, Tag("relu")]
    | Annotated[Activation, Tag("relu6")]
    | Annotated[Activation, Tag("sigmoid")]
    | Annotated[Activation, Tag("tanh")]
    | Annotated[Activation, Tag("gelu")]
    | Annotated[Activation, Tag("silu")]
    | Annotated[Activation, Tag("hardswish")]
    | Annotated[Activation, Tag("hardsigmoid")]
    | Annotated[Activation, Tag("identity")]
    | Annotated[Activation, Tag("flatten")]
    | Annotated[Activation, Tag("softmax")]
    | Annotated[LeakyReLU, Tag("leaky_relu")]
    | Annotated[MaxPool, Tag("maxpool")]
    | Annotated[AvgPool, Tag("avgpool")]
    | Annotated[GlobalPool, Tag("global_avgpool")]
    | Annotated[GlobalPool, Tag("global_maxpool")]
    | Annotated[Dropout, Tag("dropout")]
    | Annotated[ZeroPad, Tag("zeropad")]
    | Annotated[Crop, Tag("crop")]
    | Annotated[MatchSize, Tag("crop_to")]
    | Annotated[MatchSize, Tag("pad_to")]
    | Annotated[Subsample, Tag("subsample")]
    | Annotated[ChannelPad, Tag("channel_pad")]
    | Annotated[Upsample, Tag("upsample")]
    | Annotated[Merge, Tag("add")]
    | Annotated[Merge, Tag("concat")]
    | Annotated[Merge, Tag("mul")]
    | Annotated[Reduce, Tag("mean")]
    | Annotated[Reduce, Tag("max")]
    | Annotated[LayerNorm, Tag("layernorm")]
    | Annotated[GroupNorm, Tag("groupnorm")]
    | Annotated[LayerScale, Tag("layer_scale")]
    | Annotated[DropPath, Tag("drop_path")]
    | Annotated[Permute, Tag("permute")]
    | Annotated[Rescale, Tag("rescale")]
    | Annotated[Normalize, Tag("normalize")]
    | Annotated[Reuse, Tag("<reuse>")]
    | Annotated[BlockCall, Tag("<block>")]
    | Annotated[Group, Tag("<group>")],
    Discriminator(_node_tag),
]
Group.model_rebuild()


class BlockTemplate(Strict):
    """A parametrised sub-graph. Its body sees its params, its ``let`` values, the model's
    params and ``in_channels`` (channels of its first input)."""

    doc: str = ""
    inputs: list[Ident] = Field(default_factory=lambda: ["input"])
    params: dict[Ident, Any] = Field(
        default_factory=dict, description="param defaults; null marks a required param"
    )
    let: dict[Ident, Any] = Field(default_factory=dict, description="derived values, in order")
    body: list[Node] = Field(min_length=1)
    output: Ident | None = Field(None, description="output node; default: the last node")


class Check(Strict):
    """A condition the params must meet, with what to say when they do not."""

    that: BoolExpr = Field(description="an expression over the params and let values")
    message: str = Field(min_length=1, description="what is wrong when it is false")

    def failure(self) -> str:
        """The error when the condition is false, as the front end and the generated
        modules both word it."""
        return f"check failed: {self.message} ({self.that})"


class OpDefaults(Strict):
    """Defaults for op attributes, applied where a node leaves them out."""

    bias: BoolExpr | None = None
    eps: FloatExpr | None = None
    momentum: FloatExpr | None = None
    init: InitFields | None = None


class NodeEdit(Strict):
    """An edit of one node of a base spec, addressed by name (see ``edit``). ``replace`` and
    ``delete`` stand alone; ``set``, ``insert_before`` and ``insert_after`` combine."""

    replace: Node | Annotated[list[Node], Field(min_length=1)] | None = Field(
        None, description="node(s) in its place; what read it reads the last one"
    )
    insert_before: Node | Annotated[list[Node], Field(min_length=1)] | None = Field(
        None, description="node(s) that run on its input; it runs on their output"
    )
    insert_after: Node | Annotated[list[Node], Field(min_length=1)] | None = Field(
        None, description="node(s) that run on its output; what read it reads theirs"
    )
    delete: Literal[True] | None = Field(None, description="remove it; it passes its input on")
    set_fields: dict[str, Any] | None = Field(
        None,
        alias="set",
        description="fields to change (mappings merge, null removes a field)",
    )


class SpecModel(Strict):
    """A whole spec file after ``extends`` has been merged."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"title": "rescompiler spec"}
    )

    version: Literal[1] = Field(description="spec format version")
    name: Ident
    description: str = ""
    reference: str = Field("", description="the published model this spec reproduces")
    extends: str | None = Field(None, description="path of a base spec, relative to this file")
    input_shape: list[IntExpr] = Field(min_length=1, max_length=3, description="C, H, W")
    params: dict[Ident, Any] = Field(default_factory=dict, description="overridable params")
    let: dict[Ident, Any] = Field(default_factory=dict, description="derived values, in order")
    checks: list[Check] = Field(
        default_factory=list,
        description=(
            "conditions on the params (after let), each a located error when false: "
            "{that: 'len(stages) == 4', message: ...}; a variant inherits them, stating "
            "checks replaces them"
        ),
    )
    defaults: dict[
        Literal["conv", "conv_transpose", "bn", "linear", "layernorm", "groupnorm"], OpDefaults
    ] = Field(default_factory=dict)
    blocks: dict[Ident, BlockTemplate] = Field(default_factory=dict)
    body: list[Node] = Field(min_length=1)
    outputs: (
        Annotated[list[Ident], Field(min_length=1)]
        | Annotated[dict[OutputName, NodePath], Field(min_length=1)]
        | None
    ) = Field(
        None,
        description=(
            "several named outputs: nodes of the model body, as a list (named as the nodes) "
            "or {output name: node}, where a node may be a group's child by dotted path "
            "(features.1); torch returns a dict, Keras a model with these outputs"
        ),
    )
    edit: dict[str, dict[str, NodeEdit]] | None = Field(
        None,
        description=(
            "with extends: edit nodes of the base by name, per body ('body', "
            "'blocks.NAME.body'), e.g. {conv1: {set: {stride: 1}}}; applied when merging"
        ),
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec format (what ``rescompile schema`` prints)."""
    schema = SpecModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
