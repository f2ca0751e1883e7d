"""Emit a standalone PyTorch module from a spec: one ``nn.Module`` class per block template
with an explicit ``forward``, stages built in loops, the spec's expressions kept as Python so
``build(**params)`` honours every overridable param. The output depends on torch only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rescompiler.codegen import (
    Namespace,
    all_of,
    annotation,
    block_count_terms,
    camel,
    check_lines,
    clean,
    counters_read,
    fstring,
    functions_used,
    global_names,
    literal,
    liveness,
    local_name,
    named_outputs,
    negation,
    optional_inits,
    param_default,
    path_key,
    py,
    template_environment,
    template_names,
    used_blocks,
    value_names,
    when_source,
)
from rescompiler.errors import Location, SpecError
from rescompiler.fold import Fold, FoldPlan, fold_notes, plan_folds
from rescompiler.identifiers import (
    GENERATED_ATTRIBUTES,
    MODULE_GLOBALS,
    TORCH_MODULE_ATTRIBUTES,
)
from rescompiler.infer import MERGES
from rescompiler.ir import IRNode
from rescompiler.pyformat import LINE_LENGTH, Call, layout, layout_sum
from rescompiler.schema import INIT_NAMES, BlockCall, BlockTemplate, Group, NodeBase, Reuse

TEMPLATES = Path(__file__).parent / "templates"
# activations written in place where the value they overwrite has no other reader, as
# torchvision's ReLU / ReLU6 / Hardswish(inplace=True): a fresh activation-sized tensor costs
# page faults (torchvision's mobilenet_v2 with ReLU6 out of place: 1.18x slower at b8);
# autograd keeps what their backward needs (tests/test_optimize.py: gradients bit for bit)
IN_PLACE = frozenset({"relu", "relu6", "hardswish"})
ACTIVATIONS = {
    "relu": "nn.ReLU",
    "relu6": "nn.ReLU6",
    "sigmoid": "nn.Sigmoid",
    "tanh": "nn.Tanh",
    "gelu": "nn.GELU",
    "silu": "nn.SiLU",
    "hardswish": "nn.Hardswish",
    "hardsigmoid": "nn.Hardsigmoid",
    "identity": "nn.Identity",
    "flatten": "nn.Flatten",
}
# ops whose module acts on each row (all but the last dim) alone, so a block of rows gives the
# same rows of the output: Linear, elementwise activations, dropout (nn.LayerNorm is checked
# by its constructor: a LayerNorm2d normalises over dim 1)
ROWWISE = frozenset({"linear", "leaky_relu", "dropout", *ACTIVATIONS} - {"flatten", "softmax"})
HELPERS = (
    "ChunkedSequential",
    "Crop",
    "CropTo",
    "PadTo",
    "Subsample",
    "ChannelPad",
    "GlobalPool",
    "PaddedConv2d",
    "Reduce",
    "LayerNorm2d",
    "Permute",
    "DropPath",
    "Rescale",
    "Normalize",
)
TORCH_DEFAULT_INIT = {("bn", "weight"): "ones", ("bn", "bias"): "zeros"}
BUILTIN_DEFAULTS = {"bias": True, "eps": 1e-5, "momentum": 0.1}
# ops whose output is a new tensor that no backward pass reads: the only reader of such a value
# may overwrite it (in-place ReLU, ``+=``), as torchvision's ReLU(inplace=True) and ``out +=``
OWNED_OUTPUT = {"conv", "conv_transpose", "bn", "linear", "concat", "maxpool", "avgpool"}
OPTIMIZE = (None, "inference")


def _pair(value: Any) -> str:
    return py(tuple(value)) if isinstance(value, list) else py(value)


@dataclass
class Scope:
    """Code being generated for one class: its ``__init__`` and ``forward`` lines."""

    spec: Any
    instances: dict[str, list[IRNode]]
    globals_of: dict[str, list[str]]
    class_of: dict[str, str]
    helpers: set[str]
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    init_ns: Namespace = field(default_factory=lambda: Namespace(MODULE_GLOBALS))
    var_ns: Namespace = field(default_factory=lambda: Namespace(MODULE_GLOBALS))
    plan: FoldPlan | None = None  # the fold plan of an inference build; None for the plain one
    folded: list[tuple[str, str, float, str]] = field(default_factory=list)  # FOLDED_BN rows
    loop_names: dict[str, str] = field(default_factory=dict)
    counter: str | None = None  # variable of block_index (model class, when a stage reads it)
    count_var: str | None = None  # variable of block_count (likewise)
    # named outputs inside groups (``features.1``): their forward runs child by child
    dotted: frozenset[str] = frozenset()
    positions: dict[str, dict[int, int | None]] = field(default_factory=dict)  # nn.Sequential
    captured: dict[str, str] = field(default_factory=dict)  # dotted output -> its variable

    def targets(self, group: str) -> set[str]:
        """The children of group ``group`` (its dotted path) that hold or are named outputs."""
        return {d[len(group) + 1 :].split(".")[0] for d in self.dotted if d.startswith(group + ".")}

    def loop_name(self, name: str) -> str:
        """The ``__init__`` variable for a stage's ``i``, ``n`` or ``block``: the name itself
        unless a param, let or global of the class has it (stages never nest in one class)."""
        if name not in self.loop_names:
            self.loop_names[name] = self.init_ns.create(name)
        return self.loop_names[name]


def owned_by_reader(node: Any, inputs: int = 1) -> bool:
    """A node makes a new tensor that its backward does not read (see OWNED_OUTPUT); a group
    does when its last child does (its output is that child's)."""
    if isinstance(node, Group) and node.when is None and node.body:
        return owned_by_reader(node.body[-1])
    if isinstance(node, BlockCall | Group | Reuse) or node.when is not None:
        return False
    return node.op in OWNED_OUTPUT or (node.op in ("add", "mul") and inputs > 1)


def exclusive(first: Any, second: Any) -> bool:
    """The ``when`` of two nodes never hold together: one is ``not`` the other (MobileNetV3's
    ``hardswish when: use_hs`` and ``relu when: not use_hs``)."""
    a, b = when_source(first), when_source(second)
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == negation(b) or b == negation(a)


class BodyEmitter:
    """Walks a body of nodes, mirroring the expander's naming, and writes Python lines."""

    def __init__(
        self,
        scope: Scope,
        path: str,
        owner: str = "self",
        in_group: bool = False,
        module_path: str = "",
    ) -> None:
        self.s = scope
        self.path = path
        self.module_path = module_path  # dotted path of ``owner`` in the class (FOLDED_BN)
        self.owner = owner
        self.in_group = in_group
        self.channels: dict[str, str] = {}
        self.vars: dict[str, str] = {}
        self.taken: set[str] = set()

    # -- helpers -----------------------------------------------------------------------
    def fail(self, index: int, message: str) -> SpecError:
        path = f"{self.path}[{index}]"
        document = self.s.spec.document
        location = (
            document.locate(path_key(path)) if document is not None else Location(self.s.spec.file)
        )
        return SpecError.single(location, path, message)

    def default(self, node: NodeBase, name: str) -> Any:
        value = getattr(node, name, None)
        if value is None:
            defaults = self.s.spec.model.defaults.get(node.op)  # type: ignore[attr-defined]
            value = getattr(defaults, name, None) if defaults else None
        return BUILTIN_DEFAULTS.get(name) if value is None else value

    def attr_ref(self, local: str) -> str:
        if self.owner == "self":
            return f"self.{local}"
        if not local.isdigit():
            return f"{self.owner}.{local}"
        earlier = [entry[0] for entry in getattr(self, "entries", [])[: int(local)]]
        if any(node.when is not None and node.when is not True for node in earlier):
            return f'getattr({self.owner}, "{local}")'  # a child before it may not exist
        return f"{self.owner}[{local}]"

    def assign(self, indent: int, local: str, value: Call | str) -> list[str]:
        if self.owner == "self":
            return layout(indent, f"self.{local} = ", value)
        return layout(indent, "", Call(f"{self.owner}.add_module", (json.dumps(local), value)))

    def local_name(self, node: Any, index: int) -> str:
        return local_name(node, index, self.taken, self.in_group)

    def new_var(self, local: str) -> str:
        return self.s.var_ns.create(local if not local.isdigit() else f"out{local}")

    # -- module constructors -----------------------------------------------------------
    def constructor(
        self,
        node: NodeBase,
        index: int,
        cin: str,
        path: str | None = None,
        inplace: bool = False,
    ) -> tuple[Call | str, str]:
        """(constructor call, output-channel expression) of an op node; ``path`` is its spec
        path (default: node ``index`` of this body); ``inplace`` makes a ReLU in place."""
        op = node.op  # type: ignore[attr-defined]
        path = path or f"{self.path}[{index}]"
        absorbs = self.s.plan is not None and path in self.s.plan.targets
        if op in ("conv", "conv_transpose"):
            cls = "nn.Conv2d" if op == "conv" else "nn.ConvTranspose2d"
            out = py(node.out)  # type: ignore[attr-defined]
            args: list[str] = [unwrap(cin), out, f"kernel_size={_pair(node.kernel)}"]  # type: ignore[attr-defined]
            pad = getattr(node, "padding", 0)
            uneven = (
                isinstance(pad, list) and len(pad) == 4 and (pad[0], pad[2]) != (pad[1], pad[3])
            )
            if op == "conv" and uneven:  # nn.Conv2d pads symmetrically
                cls = "PaddedConv2d"
                self.s.helpers.add(cls)
                t, b, left, r = (py(v) for v in pad)
                args.append(f"pad=({left}, {r}, {t}, {b})")
            # nn.Conv2d takes "same" at stride 1 only; TF's "same" at a stride pads by the size
            strided_same = op == "conv" and pad == "same" and node.stride != 1  # type: ignore[attr-defined]
            if strided_same:
                cls = "PaddedConv2d"
                self.s.helpers.add(cls)
                args.append('pad="same"')
            for name, neutral in (
                ("stride", 1),
                ("padding", 0),
                ("output_padding", 0),
                ("dilation", 1),
                ("groups", 1),
            ):
                value = getattr(node, name, neutral)
                if value != neutral:
                    if name == "padding" and op == "conv":
                        value = None if strided_same else self.conv_padding(node, index)
                        if value is None:
                            continue
                        args.append(f"padding={value}")
                    else:
                        args.append(f"{name}={_pair(value)}")
            if self.default(node, "bias") is not True and not absorbs:
                args.append(f"bias={py(self.default(node, 'bias'))}")
            return Call(cls, tuple(args)), out if re.fullmatch(r"[\w.]+", out) else f"({out})"
        if op == "bn":
            rank = {len(n.shape) for n in self.s.instances.get(path, [])}
            cls = "nn.BatchNorm1d" if rank == {1} else "nn.BatchNorm2d"
            args = [unwrap(cin)]
            if self.default(node, "eps") != 1e-5:
                args.append(f"eps={py(self.default(node, 'eps'))}")
            if self.default(node, "momentum") != 0.1:
                args.append(f"momentum={py(self.default(node, 'momentum'))}")
            if node.affine is not True:  # type: ignore[attr-defined]
                args.append(f"affine={py(node.affine)}")  # type: ignore[attr-defined]
            return Call(cls, tuple(args)), cin
        if op == "linear":
            out = py(node.out)  # type: ignore[attr-defined]
            args = [unwrap(cin), out]
            if self.default(node, "bias") is not True and not absorbs:
                args.append(f"bias={py(self.default(node, 'bias'))}")
            return Call("nn.Linear", tuple(args)), out
        if op == "flatten":
            sizes = {n.shape for n in self.s.instances.get(path, [])}
            inputs = {
                self.s.spec.graph.shape_of(n.inputs[0]) for n in self.s.instances.get(path, [])
            }
            if any(len(shape) == 3 and shape[1:] != (1, 1) for shape in inputs) and len(sizes) == 1:
                # a spatial flatten: its width depends on the input size, known for this spec's
                # input_shape only, so it is written as a number
                return "nn.Flatten()", str(next(iter(sizes))[0])
            return "nn.Flatten()", cin
        if op in IN_PLACE and inplace:
            return f"{ACTIVATIONS[op]}(inplace=True)", cin
        if op in ACTIVATIONS:
            return f"{ACTIVATIONS[op]}()", cin
        if op == "leaky_relu":
            return Call("nn.LeakyReLU", (py(node.slope),)), cin  # type: ignore[attr-defined]
        if op == "softmax":
            return "nn.Softmax(dim=1)", cin
        if op == "dropout":
            return Call("nn.Dropout", (py(node.p),)), cin  # type: ignore[attr-defined]
        if op in ("maxpool", "avgpool"):
            cls = "nn.MaxPool2d" if op == "maxpool" else "nn.AvgPool2d"
            args = [_pair(node.kernel)]  # type: ignore[attr-defined]
            stride = node.stride if node.stride is not None else node.kernel  # type: ignore[attr-defined]
            args.append(f"stride={_pair(stride)}")
            if node.padding != 0:  # type: ignore[attr-defined]
                args.append(f"padding={_pair(node.padding)}")  # type: ignore[attr-defined]
            if node.ceil_mode is not False:  # type: ignore[attr-defined]
                args.append(f"ceil_mode={py(node.ceil_mode)}")  # type: ignore[attr-defined]
            if op == "avgpool" and node.count_include_pad is not True:  # type: ignore[attr-defined]
                args.append(f"count_include_pad={py(node.count_include_pad)}")  # type: ignore[attr-defined]
            return Call(cls, tuple(args)), cin
        if op in ("global_avgpool", "global_maxpool"):
            kind = "avg" if op == "global_avgpool" else "max"
            if node.keepdims is True and kind == "avg":  # type: ignore[attr-defined]
                return "nn.AdaptiveAvgPool2d(1)", cin
            self.s.helpers.add("GlobalPool")
            return Call("GlobalPool", (json.dumps(kind), f"keepdims={py(node.keepdims)}")), cin  # type: ignore[attr-defined]
        if op in ("layernorm", "groupnorm"):
            eps = self.default(node, "eps")
            extra = () if eps == 1e-5 else (f"eps={py(eps)}",)
            if op == "groupnorm":
                return Call("nn.GroupNorm", (py(node.groups), unwrap(cin), *extra)), cin  # type: ignore[attr-defined]
            kinds = {
                "map" if len(n.shape) == 3 and n.layout == "channels_first" else "last"
                for n in self.s.instances.get(path, [])
            }
            if kinds == {"map"}:
                self.s.helpers.add("LayerNorm2d")
                return Call("LayerNorm2d", (unwrap(cin), *extra)), cin
            if len(kinds) > 1:
                raise self.fail(index, "torch: this layernorm sees maps and vectors in turn")
            return Call("nn.LayerNorm", (unwrap(cin), *extra)), cin
        if op == "rescale":
            self.s.helpers.add("Rescale")
            offset = () if node.offset == 0.0 else (py(node.offset),)  # type: ignore[attr-defined]
            return Call("Rescale", (py(node.scale), *offset)), cin  # type: ignore[attr-defined]
        if op == "normalize":
            self.s.helpers.add("Normalize")
            args = [unwrap(cin), py(node.mean), py(node.variance)]  # type: ignore[attr-defined]
            if not node.stored:  # type: ignore[attr-defined]
                args.append("stored=False")
            return Call("Normalize", tuple(args)), cin
        if op == "permute":
            self.s.helpers.add("Permute")
            dims = "(0, 2, 3, 1)" if node.to == "channels_last" else "(0, 3, 1, 2)"  # type: ignore[attr-defined]
            return Call("Permute", (dims,)), cin
        if op == "drop_path":
            self.s.helpers.add("DropPath")
            return Call("DropPath", (py(node.p),)), cin  # type: ignore[attr-defined]
        if op == "layer_scale":
            raise self.fail(
                index, "torch: layer_scale is a parameter of its block, not a group's child"
            )
        if op in ("mean", "max"):
            self.s.helpers.add("Reduce")
            over_channels = node.axis == "channels"  # type: ignore[attr-defined]
            dim = "1" if over_channels else "(2, 3)"
            return Call("Reduce", (json.dumps(op), dim)), "1" if over_channels else cin
        if op == "zeropad":
            t, b, left, r = self.pad4(node.padding)  # type: ignore[attr-defined]
            return Call("nn.ZeroPad2d", (f"({left}, {r}, {t}, {b})",)), cin
        if op == "crop":
            self.s.helpers.add("Crop")
            return Call("Crop", self.pad4(node.crop)), cin  # type: ignore[attr-defined]
        if op in ("crop_to", "pad_to"):
            helper = "CropTo" if op == "crop_to" else "PadTo"
            self.s.helpers.add(helper)
            return f"{helper}()", cin
        if op == "subsample":
            self.s.helpers.add("Subsample")
            return Call("Subsample", (_pair(node.stride),)), cin  # type: ignore[attr-defined]
        if op == "channel_pad":
            self.s.helpers.add("ChannelPad")
            before, after = py(node.before), py(node.after)  # type: ignore[attr-defined]
            return Call("ChannelPad", (before, after)), f"({cin} + {before} + {after})"
        if op == "upsample":
            args = [f"scale_factor={py(node.scale)}", f"mode={node.mode!r}"]  # type: ignore[attr-defined]
            if node.mode == "bilinear":  # type: ignore[attr-defined]
                args.append(f"align_corners={py(node.align_corners)}")  # type: ignore[attr-defined]
            return Call("nn.Upsample", tuple(args)), cin
        raise self.fail(index, f"op {op!r} has no torch translation")

    def pad4(self, value: Any) -> tuple[str, str, str, str]:
        if isinstance(value, list) and len(value) == 4:
            return tuple(py(v) for v in value)  # type: ignore[return-value]
        if isinstance(value, list) and len(value) == 2:
            h, w = py(value[0]), py(value[1])
            return h, h, w, w
        v = py(value)
        return v, v, v, v

    def conv_padding(self, node: NodeBase, index: int) -> str | None:
        value = node.padding  # type: ignore[attr-defined]
        if value == "valid":
            return None
        if value == "same":
            return '"same"'
        if isinstance(value, list) and len(value) == 4:
            t, b, left, r = value
            if t != b or left != r:
                return None  # PaddedConv2d pads in its forward
            return _pair([t, left])
        return _pair(value)

    def init_lines(self, indent: int, node: NodeBase, ref: str) -> list[str]:
        op = node.op  # type: ignore[attr-defined]
        if op not in ("conv", "conv_transpose", "bn", "linear"):
            return []
        defaults = self.s.spec.model.defaults.get(op)
        chosen: list[str] = []
        for tensor in ("weight", "bias"):
            own = getattr(node.init, tensor, None) if node.init else None  # type: ignore[attr-defined]
            value = (
                own if own is not None else getattr(getattr(defaults, "init", None), tensor, None)
            )
            if (
                value is None
                or value == "torch_default"
                or TORCH_DEFAULT_INIT.get((op, tensor)) == value
            ):
                continue
            if tensor == "bias" and op != "bn" and self.default(node, "bias") is False:
                continue
            if tensor == "bias" and op == "bn" and getattr(node, "affine", True) is False:
                continue
            if value in INIT_NAMES:
                how = json.dumps(value)
            else:
                how = py(value, lambda n: repr(n) if n in INIT_NAMES else n)
            chosen.append(f"{tensor}={how}")
        if not chosen:
            return []
        # applied by ``initialise`` once every layer exists, in modules() order (torchvision's)
        return layout(indent, "", Call("init_later", (ref, *chosen)))

    # -- bodies ------------------------------------------------------------------------
    def emit(
        self,
        body: list[Any],
        inputs: dict[str, tuple[str, str]],
        first: str,
        output: str | None = None,
        outputs: list[str] = (),  # type: ignore[assignment]
    ) -> str:
        """Emit ``body``; ``inputs`` maps visible names to (var, channels). Returns output name;
        the values of ``outputs`` (a model's named outputs) are kept to the end."""
        for name, (var, chan) in inputs.items():
            self.vars[name], self.channels[name] = var, chan
            self.taken.add(name)
        plan = self.plan(body, first)
        out_local = output or (plan[-1][1] if plan else first)
        self.last_use = {name: len(body) for name in [out_local, *outputs]}
        for index, (_node, _local, names, alt) in enumerate(plan):
            for name in [*names, alt]:
                if self.last_use.get(name, -1) < index:
                    self.last_use[name] = index
        self.entries = plan
        self.reach = [True] * len(plan)  # where each node's value is used (liveness)
        if not self.in_group:
            self.reach = liveness(
                (  # a reuse node needs the module of the node it reuses
                    (local, [*names, node.reuse] if isinstance(node, Reuse) else names, alt, w)
                    for (node, local, names, alt), w in zip(
                        plan, (when_source(entry[0]) for entry in plan), strict=True
                    )
                ),
                # named outputs: only they are used (a group's child: the group)
                [o.split(".")[0] for o in outputs] if outputs else [out_local],
            )
        self.index_of = {local: index for index, (_n, local, _names, _alt) in enumerate(plan)}
        self.root: dict[str, str] = {}  # reuse node -> the node whose module it applies
        for node, local, *_ in plan:
            if isinstance(node, Reuse):
                self.root[local] = self.root.get(node.reuse, node.reuse)
        self.reused = set(self.root.values())
        self.readers: dict[str, list[int]] = {name: [len(body)] for name in [out_local, *outputs]}
        for index, (node, _local, names, _alt) in enumerate(plan):
            for name in [*names, *([node.otherwise] if node.otherwise is not None else [])]:
                self.readers.setdefault(name, []).append(index)
        by_var: dict[str, list[str]] = {}
        for name, (var, _c) in inputs.items():
            by_var.setdefault(var, []).append(name)
        # a folded BN's output is its input's tensor: the two names live and die together
        groups = [set(aliases) for aliases in by_var.values()]
        groups += [
            {local, names[0]} for k, (_n, local, names, _a) in enumerate(plan) if self.fold_of(k)
        ]
        groups += [{local, alt} for node, local, _names, alt in plan if node.when is False]
        merged: list[set[str]] = []
        for group in groups:
            for other in [m for m in merged if m & group]:
                group |= other
                merged.remove(other)
            merged.append(group)
        for aliases in merged:
            last = max(self.last_use.get(a, -1) for a in aliases)
            for alias in aliases:
                self.last_use[alias] = last
        self.live = {var: aliases[0] for var, aliases in by_var.items() if var}
        self.next_uses = {plan[k][1]: k for k in range(len(plan))}
        previous = first
        for index, (node, local, names, alt) in enumerate(plan):
            self.taken.add(local)
            self.emit_node(node, index, local, names, alt)
            previous = local
        return out_local if output else previous

    def plan(self, body: list[Any], first: str) -> list[tuple[Any, str, list[str], str]]:
        """(node, local name, input names, name used when skipped) for each node, in order."""
        taken = set(self.taken)
        plan = []
        previous = first
        for index, node in enumerate(body):
            saved, self.taken = self.taken, taken
            local = self.local_name(node, index)
            self.taken = saved
            taken.add(local)
            if node.inputs is None:
                names = [previous]
            else:
                names = [node.inputs] if isinstance(node.inputs, str) else list(node.inputs)
            alt = node.otherwise if node.otherwise is not None else names[0]
            plan.append((node, local, names, alt))
            previous = local
        return plan

    def fold_of(self, index: int) -> Fold | None:
        """The fold that removes BN node ``index`` of this body (inference builds only)."""
        plan = self.s.plan
        return plan.folds.get(f"{self.path}[{index}]") if plan is not None else None

    def into_fold(self, index: int, local: str) -> bool:
        """Node ``index`` is read only by the next node, a BN folded away, which is read only
        by the node after it (names the var as if the BN were not there)."""
        fold = self.fold_of(index + 1)
        if fold is None or self.readers.get(local) != [index + 1]:
            return False
        readers = self.readers.get(fold.bn_local, [])
        return readers == [index + 2] or self.into_fold(index + 1, fold.bn_local)

    def may_overwrite(self, index: int, name: str) -> bool:
        """Node ``index`` may overwrite the value ``name``: a node of this body made it into a new
        tensor no backward reads (not a body input, not an alias), and ``index`` is its only
        reader. Safe for autograd and for values still live elsewhere."""
        source = self.index_of.get(name)
        if source is None or source >= index or self.readers.get(name) != [index]:
            return False
        node, _local, names, alt = self.entries[source]
        if exclusive(node, self.entries[index][0]):  # it never ran where index runs:
            return self.may_overwrite(source, alt)  # index reads what it passed on
        return owned_by_reader(node, len(names))

    def record_fold(self, fold: Fold, index: int) -> bool:
        """Note a folded BN in the class's FOLDED_BN; True when a placeholder must keep the
        positions of later modules of a group (``nn.Identity``)."""
        self.s.folded.append(
            (
                self.module_path + fold.target_local,
                self.module_path + fold.bn_local,
                fold.eps,
                fold.side,
            )
        )
        later = [entry[0] for entry in self.entries[index + 1 :]]
        return self.owner != "self" and any(has_params(n) for n in later)

    def choose_var(
        self, index: int, local: str, names: list[str], conditional: bool
    ) -> tuple[str, bool]:
        """Output variable of node ``index``: reuse the first input's when it dies here."""
        first = names[0]
        first_var = self.vars.get(first, "")
        dies = self.last_use.get(first, -1) <= index and first_var and names.count(first) >= 1
        for name in set(names):
            if self.last_use.get(name, -1) <= index:
                self.live.pop(self.vars.get(name, ""), None)
        if dies and first_var and first_var not in self.live:
            self.live[first_var] = local
            return first_var, True
        next_only = index + 1 == self.last_use.get(local, -1) or self.into_fold(index, local)
        preferred = "out" if next_only or local.isdigit() else local
        if preferred in self.live or preferred not in ("out",):
            preferred = self.s.var_ns.create(local if not local.isdigit() else f"out{local}")
        else:
            self.s.var_ns.reserve(preferred)
        self.live[preferred] = local
        return preferred, False

    def emit_node(self, node: Any, index: int, local: str, names: list[str], alt: str) -> None:
        cin = self.channels[names[0]]
        reach = self.reach[index]
        counted = self.s.counter is not None and isinstance(node, BlockCall) and node.repeat
        if reach is False:  # used nowhere (the front end drops it too): no module, no code
            self.vars[local], self.channels[local] = "None", "0"
            if counted and node.when is not False:  # its blocks still count in block_index
                pad = " " * getattr(self, "indent", 8)
                add = py(node.repeat)
                if isinstance(node.when, str):
                    add = f"({add} if {py(node.when)} else 0)"
                self.s.init.append(f"{pad}{self.s.counter} += {add}")
            return
        if counted and reach is not True:
            raise self.fail(
                index, "torch: a stage used only with some params, while stages read block_index"
            )
        if node.when is False:  # ``when: false``: never built, its value is ``alt``'s
            self.vars[local], self.channels[local] = self.vars[alt], self.channels[alt]
            return
        cond = py(node.when) if isinstance(node.when, str) else None  # a literal True: always
        if reach is not True:  # used only where ``reach`` holds: built only there
            cond = reach if cond is None else str(all_of(cond, reach))
        op = getattr(node, "op", None)
        fold = self.fold_of(index)
        if fold is not None:  # the BN lives on in its conv's weights: its output is its input
            if self.record_fold(fold, index):
                self.s.init += self.assign(getattr(self, "indent", 8), local, "nn.Identity()")
            self.vars[local], self.channels[local] = self.vars[names[0]], cin
            return
        if (
            op == "add"
            and len(names) == 2
            and not self.may_overwrite(index, names[0])
            and self.may_overwrite(index, names[1])
        ):
            names = [names[1], names[0]]  # add into the operand that may be overwritten
        in_vars = [self.vars[n] for n in names]
        if isinstance(node, Reuse):  # the module of an earlier node, applied again
            if cond is not None:
                raise self.fail(index, "torch: a reuse node used only in some instances")
            var, _ = self.choose_var(index, local, names, False)
            target = self.root[local]
            self.s.forward += layout(8, f"{var} = ", Call(self.attr_ref(target), (in_vars[0],)))
            self.vars[local], self.channels[local] = var, self.channels[target]
            return
        if op in MERGES:
            if self.owner != "self":  # the front end keeps merges out of groups
                raise self.fail(index, f"{op} inside a group is not supported by torch")
            if cond is not None:
                self.emit_conditional_merge(node, index, local, names, alt, cond)
                return
            overwrite = len(names) == 2 and self.may_overwrite(index, names[0])
            var, _ = self.choose_var(index, local, names, False)
            merged, self.channels[local] = self.merge_source(op, names, index)
            if op == "add" and overwrite and var == in_vars[0]:
                self.s.forward.append(f"        {var} += {in_vars[1]}")
            else:
                self.s.forward += layout(8, f"{var} = ", merged)
            self.vars[local] = var
            return
        if self.owner != "self":
            self.emit_group_child(node, index, local, names, cin, cond)
            return
        indent = 8
        if cond is not None:
            self.s.init.append(f"        if {cond}:")
            indent = 12
        out_chan = self.emit_module(node, index, local, indent, cin, names)
        if cond is not None:
            self.s.init += ["        else:", f"            self.{local} = None"]
            if node.when is not None and out_chan != self.channels[alt]:
                out_chan = f"({out_chan} if self.{local} is not None else {self.channels[alt]})"
        if isinstance(node, Group) and self.s.targets(local):
            if cond is not None:
                raise self.fail(index, "torch: a group holding a named output has 'when'")
            var, _ = self.choose_var(index, local, names, False)
            self.unrolled(node, self.attr_ref(local), local, in_vars[0], var)
            self.vars[local], self.channels[local] = var, out_chan
            return
        call = self.call_source(node, index, local, in_vars)
        alt_var = self.vars[alt]
        var, reused = self.choose_var(
            index, local, names if cond is None else [alt, *names], cond is not None
        )
        if cond is not None:
            passes_on = not (reused and var == alt_var)
            if passes_on and var not in in_vars:  # torchvision's ``identity = x`` first
                self.s.forward.append(f"        {var} = {alt_var}")
            self.s.forward.append(f"        if self.{local} is not None:")
            self.s.forward += layout(12, f"{var} = ", call)
            if passes_on and var in in_vars:  # var is the call's input: assign in a branch
                self.s.forward += ["        else:", f"            {var} = {alt_var}"]
        else:
            self.s.forward += layout(8, f"{var} = ", call)
        self.vars[local], self.channels[local] = var, out_chan

    def unrolled(self, node: Group, ref: str, path: str, in_var: str, var: str) -> None:
        """The forward of a group holding named outputs: its children one by one (as
        ``create_feature_extractor`` traces it), each named output kept in a variable."""
        targets = self.s.targets(path)
        positions = self.s.positions.get(ref)
        current = in_var
        for k, child in enumerate(node.body):
            local = str(child.group) if isinstance(child, Group) else (child.name or str(k))
            full = f"{path}.{local}"
            if positions is not None:  # an nn.Sequential of ops: folded BNs may be gone
                position = positions[k]
                child_ref = None if position is None else f"{ref}[{position}]"
            else:
                child_ref = f"{ref}[{k}]" if local.isdigit() else f"{ref}.{local}"
            if child_ref is not None:
                if isinstance(child, Group) and local in targets:
                    self.unrolled(child, child_ref, full, current, var)
                else:
                    self.s.forward += layout(8, f"{var} = ", Call(child_ref, (current,)))
                current = var
            if full in self.s.dotted:
                kept = self.s.var_ns.create(full.replace(".", "_"))
                self.s.forward.append(f"        {kept} = {current}")
                self.s.captured[full] = kept

    def emit_conditional_merge(
        self, node: Any, index: int, local: str, names: list[str], alt: str, cond: str
    ) -> None:
        """A merge with ``when`` (or used only in some blocks): the condition is kept as a flag
        set in ``__init__`` (like torchvision's ``use_res_connect``); forward merges or passes
        ``alt`` on."""
        attributes = {entry[1] for entry in self.entries}
        attributes |= TORCH_MODULE_ATTRIBUTES | GENERATED_ATTRIBUTES
        flag = f"use_{local}"
        while flag in attributes:
            flag += "_"
        self.taken.add(flag)
        self.s.init += layout(8, f"self.{flag} = ", cond)
        alt_var = self.vars[alt]
        var, reused = self.choose_var(index, local, [alt, *names], True)
        merged, chan = self.merge_source(node.op, names, index)
        if node.when is not None and chan != self.channels[alt]:  # else read only when on
            chan = f"({chan} if self.{flag} else {self.channels[alt]})"
        self.s.forward.append(f"        if self.{flag}:")
        in_vars = [self.vars[n] for n in names]
        overwrite = node.op == "add" and len(names) == 2 and self.may_overwrite(index, names[0])
        if overwrite and var == in_vars[0]:  # torchvision's ``result += input``
            self.s.forward.append(f"            {var} += {in_vars[1]}")
        else:
            self.s.forward += layout(12, f"{var} = ", merged)
        if not (reused and var == alt_var):
            self.s.forward += ["        else:", f"            {var} = {alt_var}"]
        self.vars[local], self.channels[local] = var, chan

    def merge_source(self, op: str, names: list[str], index: int) -> tuple[Call | str, str]:
        """Source of an ``add``/``concat``/``mul`` of ``names`` (node ``index``) and its channel
        count."""
        in_vars = [self.vars[n] for n in names]
        if op == "add":
            return " + ".join(in_vars), self.channels[names[0]]
        if op == "mul":  # channels of the input that is not broadcast over them
            return " * ".join(in_vars), self.channels[names[self.full_input(index)]]
        channels = "(" + " + ".join(self.channels[n] for n in names) + ")"
        return Call("torch.cat", (f"[{', '.join(in_vars)}]", "1")), channels

    def full_input(self, index: int) -> int:
        """Which input of ``mul`` node ``index`` has the product's channel count in every
        block instance (a gate of 1 channel broadcasts over the others)."""
        graph = self.s.spec.graph
        for k in range(len(self.entries[index][2])):
            if all(
                graph.shape_of(n.inputs[k])[0] == n.shape[0]
                for n in self.s.instances.get(f"{self.path}[{index}]", [])
            ):
                return k
        return 0

    def call_source(self, node: Any, index: int, local: str, in_vars: list[str]) -> Call | str:
        if getattr(node, "op", None) == "layer_scale":  # torchvision's ``self.layer_scale * x``
            return f"self.{local} * {in_vars[0]}"
        if isinstance(node, BlockCall) and node.repeat is not None and len(in_vars) > 1:
            raise self.fail(
                index, "torch: stages of multi-input blocks are not supported (nn.Sequential)"
            )
        return Call(f"self.{local}", tuple(in_vars))

    def emit_module(
        self, node: Any, index: int, local: str, indent: int, cin: str, names: list[str]
    ) -> str:
        """Create ``self.<local>`` (a module, block, stage or group); returns its channels."""
        if isinstance(node, BlockCall):
            return self.emit_block_call(node, index, local, indent, names)
        if isinstance(node, Group):
            return self.emit_group(node, index, local, indent, cin)
        if node.op == "layer_scale" and self.owner == "self":  # a parameter, as torchvision's
            ranks = {len(n.shape) for n in self.s.instances.get(f"{self.path}[{index}]", [])}
            last = all(
                n.layout == "channels_last"
                for n in self.s.instances.get(f"{self.path}[{index}]", [])
            )
            shape = f"({unwrap(cin)},)" if ranks == {1} or last else f"({unwrap(cin)}, 1, 1)"
            value = Call("torch.full", (shape, py(node.value)))
            self.s.init += self.assign(indent, local, Call("nn.Parameter", (value,)))
            return cin
        inplace = (
            node.op in IN_PLACE and self.may_overwrite(index, names[0]) and local not in self.reused
        )
        ctor, out = self.constructor(node, index, cin, inplace=inplace)
        self.s.init += self.assign(indent, local, ctor)
        self.s.init += self.init_lines(indent, node, self.attr_ref(local))
        return out

    def block_args(
        self, node: BlockCall, names: list[str], rename: dict[str, str] | None = None
    ) -> list[str]:
        template: BlockTemplate = self.s.spec.model.blocks[node.block]
        args = [unwrap(self.channels[n]) for n in names]
        for key in template.params:
            if key in node.args:
                value = node.args[key]
                source = py(value, lambda n: rename.get(n, n)) if rename else py(value)
                args.append(f"{key}={source}")
        args += [f"{g}={g}" for g in self.s.globals_of[node.block]]
        return args

    def emit_block_call(
        self, node: BlockCall, index: int, local: str, indent: int, names: list[str]
    ) -> str:
        cls = self.s.class_of[node.block]
        pad = " " * indent
        if node.repeat is None:
            self.s.init += self.assign(
                indent, local, Call(cls, tuple(self.block_args(node, names)))
            )
            return f"{self.attr_ref(local)}.out_channels"
        stage = self.attr_ref(local)
        chan = self.s.init_ns.create(f"{local}_channels")
        self.s.init += self.assign(indent, local, "nn.Sequential()")
        self.s.init.append(f"{pad}{chan} = {unwrap(self.channels[names[0]])}")
        # ``i`` and ``n`` in args and child names are the block's position and the count
        reads = set().union(*(value_names(v) for v in node.args.values()))
        reads |= template_names(node.child_name)
        count = py(node.repeat)
        rename: dict[str, str] = {}
        if "n" in reads and count != "n":
            rename["n"] = self.s.loop_name("n")
            self.s.init.append(f"{pad}{rename['n']} = {count}")
            count = rename["n"]
        loop = "_"
        if "i" in reads:
            loop = rename["i"] = self.s.loop_name("i")
        if self.s.counter is not None and "block_index" in reads:
            rename["block_index"] = self.s.counter
        if self.s.count_var is not None and "block_count" in reads:
            rename["block_count"] = self.s.count_var
        block = self.s.loop_name("block")
        self.s.init.append(f"{pad}for {loop} in range({count}):")
        saved = self.channels[names[0]]
        self.channels[names[0]] = chan
        args = self.block_args(node, names, rename)
        self.channels[names[0]] = saved
        self.s.init += layout(indent + 4, f"{block} = ", Call(cls, tuple(args)))
        child = fstring(node.child_name, lambda n: rename.get(n, n))
        self.s.init.append(f"{pad}    {stage}.add_module({child}, {block})")
        self.s.init.append(f"{pad}    {chan} = {block}.out_channels")
        if self.s.counter is not None:
            self.s.init.append(f"{pad}    {self.s.counter} += 1")
        return chan

    def emit_group(self, node: Group, index: int, local: str, indent: int, cin: str) -> str:
        ref = self.attr_ref(local)
        if all(
            isinstance(child, NodeBase)
            and not isinstance(child, BlockCall | Group)
            and child.name is None
            and child.when is None
            and child.op not in MERGES  # type: ignore[attr-defined]
            for child in node.body
        ):
            ctors: list[Call | str] = []
            rowwise: list[bool] = []  # per constructor: acts on each row (last dim) alone
            inits, chan = [], cin
            plan = self.s.plan
            targets = self.s.targets(f"{self.module_path}{local}")
            positions = self.s.positions[ref] = {}
            for k, child in enumerate(node.body):
                positions[k] = None
                child_path = f"{self.path}[{index}].body[{k}]"
                fold = plan.folds.get(child_path) if plan is not None else None
                if fold is not None:
                    self.s.folded.append(
                        (
                            f"{self.module_path}{local}.{fold.target_local}",
                            f"{self.module_path}{local}.{fold.bn_local}",
                            fold.eps,
                            fold.side,
                        )
                    )
                    if any(has_params(later) for later in node.body[k + 1 :]):
                        ctors.append("nn.Identity()")  # later modules keep their positions
                        rowwise.append(False)
                    continue
                inplace = k > 0 and child.op in IN_PLACE and owned_by_reader(node.body[k - 1])
                inplace = inplace and str(k - 1) not in targets  # a named output stays
                ctor, chan = self.constructor(child, k, chan, child_path, inplace)
                positions[k] = len(ctors)
                inits += self.init_lines(indent, child, f"{ref}[{len(ctors)}]")
                ctors.append(ctor)
                rowwise.append(
                    child.op in ROWWISE
                    or (isinstance(ctor, Call) and ctor.callee == "nn.LayerNorm")
                )
            run = rowwise_run(ctors, rowwise) if plan is not None and not targets else None
            if run is not None:  # an MLP over channels-last rows: run in cache-sized blocks
                self.s.helpers.add("ChunkedSequential")
                rows = f"rows=({run[0]}, {run[1]})"
                sequential = Call("ChunkedSequential", (*ctors, rows), explode=True)
            else:
                sequential = Call("nn.Sequential", tuple(ctors), explode=True)
            self.s.init += self.assign(indent, local, sequential)
            self.s.init += inits
            return chan
        self.s.init += self.assign(indent, local, "nn.Sequential()")
        inner = BodyEmitter(
            self.s,
            f"{self.path}[{index}].body",
            ref,
            in_group=True,
            module_path=f"{self.module_path}{local}.",
        )
        inner.indent = indent  # type: ignore[attr-defined]
        targets = sorted(self.s.targets(f"{self.module_path}{local}"))
        out = inner.emit(node.body, {"__in": ("", cin)}, "__in", outputs=targets)
        return inner.channels[out]

    def emit_group_child(
        self, node: Any, index: int, local: str, names: list[str], cin: str, cond: str | None
    ) -> str:
        indent = getattr(self, "indent", 8)
        if cond is not None:
            self.s.init.append(" " * indent + f"if {cond}:")
            out = self.emit_module(node, index, local, indent + 4, cin, names)
            out = out if out == cin else f"({out} if {cond} else {cin})"
        else:
            out = self.emit_module(node, index, local, indent, cin, names)
        self.channels[local] = out
        self.vars[local] = ""
        return local


def rowwise_run(ctors: list[Call | str], rowwise: list[bool]) -> tuple[int, int] | None:
    """(start, stop) of the longest run of row-wise modules in a Sequential holding a Linear
    and at least one more module (a channels-last MLP), for ``ChunkedSequential``; else None."""
    best: tuple[int, int] | None = None
    start = 0
    for k in range(len(ctors) + 1):
        if k < len(ctors) and rowwise[k]:
            continue
        linear = any(isinstance(c, Call) and c.callee == "nn.Linear" for c in ctors[start:k])
        if k - start >= 2 and linear and (best is None or k - start > best[1] - best[0]):
            best = (start, k)
        start = k + 1
    return best


def has_params(node: Any) -> bool:
    """A body node may hold parameters or buffers (its position in a group matters)."""
    if isinstance(node, Reuse):
        return False  # its weights are the reused node's
    return isinstance(node, BlockCall | Group) or node.op in (
        "conv",
        "conv_transpose",
        "bn",
        "linear",
        "layernorm",
        "groupnorm",
        "layer_scale",
        "normalize",
    )


def emit_class(spec: Any, scope: Scope, name: str, template: BlockTemplate) -> dict[str, Any]:
    """Source parts of one block class."""
    emitter = BodyEmitter(scope, f"blocks.{name}.body")
    input_vars = {}
    signature = []
    for k, input_name in enumerate(template.inputs):
        var = scope.var_ns.create("x" if input_name == "input" and k == 0 else input_name)
        chan = "in_channels" if k == 0 else scope.init_ns.create(f"{input_name}_channels")
        input_vars[input_name] = (var, chan)
        signature.append(chan)
    if "input" not in input_vars:
        input_vars["input"] = input_vars[template.inputs[0]]
    params = [f"{chan}: int" for chan in signature]
    defaults = [default is not None for default in template.params.values()]
    if defaults != sorted(defaults):  # a required param after one with a default
        params.append("*")  # callers pass params by keyword
    for key, default in template.params.items():
        param, fill = param_default(key, default)
        params.append(param)
        scope.init += [f"        {line}" for line in fill]
    globals_ = [f"{g}: {annotation(spec.params.get(g))}" for g in scope.globals_of[name]]
    if globals_ and "*" not in params:
        globals_.insert(0, "*")
    lets = [f"        {key} = {py(value)}" for key, value in template.let.items()]
    scope.init += lets
    out = emitter.emit(template.body, input_vars, template.inputs[0], template.output)
    return {
        "name": scope.class_of[name],
        "doc": clean(template.doc or f"Block template {name!r}."),
        "template": name,
        "signature": layout(
            4,
            "def ",
            Call("__init__", ("self", *params, *globals_)),
            " -> None:",
        ),
        "init": scope.init,
        "out_channels": unwrap(emitter.channels[out]),
        "forward_signature": layout(
            4,
            "def ",
            Call(
                "forward", ("self", *(f"{input_vars[i][0]}: torch.Tensor" for i in template.inputs))
            ),
            " -> torch.Tensor:",
        ),
        "forward": scope.forward,
        "result": emitter.vars[out],
        "folded": folded_lines(scope.folded),
    }


def folded_lines(folded: list[tuple[str, str, float, str]]) -> list[str]:
    """A class's ``FOLDED_BN = (...)`` assignment as source lines."""
    if not folded:
        return []
    rows = [literal(list(row)) for row in folded]
    one = f"    FOLDED_BN = ({rows[0]},)"
    if len(rows) == 1 and len(one) <= LINE_LENGTH:
        return [one]
    return ["    FOLDED_BN = (", *(f"        {row}," for row in rows), "    )"]


def emit_source(spec: Any, optimize: str | None = None) -> str:
    """The generated module's source for ``spec`` (a loaded rescompiler Spec); with
    ``optimize="inference"`` the inference build: BatchNorms folded into convs on load."""
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize must be one of {list(OPTIMIZE)}, got {optimize!r}")
    plan = plan_folds(spec.model) if optimize == "inference" else None
    model = spec.model
    instances: dict[str, list[IRNode]] = {}
    for node in spec.graph.nodes:
        instances.setdefault(node.spec_path, []).append(node)
    globals_of = global_names(model, INIT_NAMES)
    variables = {*model.params, *model.let, "input_shape", "in_channels"}
    for template in model.blocks.values():
        variables |= {*template.params, *template.let}
    classes_ns = Namespace({*MODULE_GLOBALS, *HELPERS, *variables})
    order = used_blocks(model)
    class_of = {name: classes_ns.create(camel(name)) for name in order}
    model_class = classes_ns.create(camel(model.name))
    helpers: set[str] = set()
    blocks = []
    for name in order:
        scope = Scope(spec, instances, globals_of, class_of, helpers, plan=plan)
        scope.var_ns.reserve("self")
        template = model.blocks[name]
        visible = [*template.params, *template.let, *globals_of[name], *template.inputs]
        scope.init_ns = Namespace(["self", "in_channels", *visible, *MODULE_GLOBALS])
        blocks.append(emit_class(spec, scope, name, template))
    scope = Scope(spec, instances, globals_of, class_of, helpers, plan=plan)
    scope.init_ns = Namespace(
        ["self", "in_channels", "input_shape", *spec.params, *model.let, *MODULE_GLOBALS]
    )
    emitter = BodyEmitter(scope, "body")
    scope.init.append("        in_channels = input_shape[0]")
    scope.init += [f"        {key} = {py(value)}" for key, value in model.let.items()]
    scope.init += check_lines(model.checks, 8)
    counters = counters_read(model)
    if "block_count" in counters:  # the blocks of all stages, for rates scaled over depth
        scope.count_var = scope.init_ns.create("block_count")
        scope.init += layout_sum(8, f"{scope.count_var} = ", block_count_terms(model))
    if "block_index" in counters:
        scope.counter = scope.init_ns.create("block_index")
        scope.init.append(f"        {scope.counter} = 0")
    x = scope.var_ns.create("x")
    named = named_outputs(model)
    scope.dotted = frozenset(v for v in named.values() if "." in v)
    out = emitter.emit(
        model.body, {"input": (x, "in_channels")}, "input", outputs=list(named.values())
    )
    result = emitter.vars[out]
    if named:  # a dict of named outputs, as torchvision's create_feature_extractor returns
        graph = spec.graph
        contiguous = {  # an inference build's channels-last maps are handed out contiguous
            key: ".contiguous()" if plan is not None and len(graph.shape_of(i)) == 3 else ""
            for key, i in graph.outputs.items()
        }
        result = Call(
            "",
            tuple(
                f"{json.dumps(k)}: {scope.captured.get(v) or emitter.vars[v]}{contiguous[k]}"
                for k, v in named.items()
            ),
            brackets="{}",
        )
    params = [
        f"{key}: {annotation(value)} = {literal(value)}" for key, value in spec.params.items()
    ]
    params.append(f"input_shape: Sequence[int] = {literal(spec.graph.input_shape)}")
    header = f"{model.name}: {clean(model.description or model.name)}\n\n"
    if model.reference:
        header += f"Reference: {clean(model.reference)}.\n\n"
    source = clean(Path(spec.file).as_posix())
    flag = " --optimize inference" if plan is not None else ""
    header += (
        f"Generated by rescompiler from {source}; do not edit. Regenerate with "
        f"``rescompile {source} --backend torch{flag}``. Depends only on torch."
    )
    if plan is not None:
        header += "\n\n" + inference_notes(spec, plan, "ChunkedSequential" in helpers)
    return ENVIRONMENT.get_template("module.py.jinja").render(
        header=header,
        spec_name=model.name,
        helpers=sorted(helpers),
        blocks=blocks,
        model={
            "name": model_class,
            "signature": layout(4, "def ", Call("__init__", ("self", *params)), " -> None:"),
            "init": scope.init,
            "forward": scope.forward,
            "result": layout(8, "return ", result),
            "returns": "dict[str, torch.Tensor]" if named else "torch.Tensor",
            "uses_stage_runner": False,
            "folded": folded_lines(scope.folded),
        },
        inference=plan is not None,
        functions=functions_used(model),
        inits=optional_inits(model),
        channels_last=plan is not None and len(spec.graph.input_shape) == 3,
        output_rank=0 if named else len(spec.graph.shape_of(spec.graph.output)),
        defaults=[(json.dumps(k), literal(v)) for k, v in spec.params.items()],
        input_shape=literal(spec.graph.input_shape),
        needs_init=any(
            "init_later(" in line for b in [*blocks, {"init": scope.init}] for line in b["init"]
        ),
    )


def inference_notes(spec: Any, plan: FoldPlan, chunked: bool = False) -> str:
    """The header paragraph of an inference build: what it does, what was folded, what not;
    ``chunked``: channels-last MLPs run in blocks of rows (``ChunkedSequential``)."""
    blocks = (
        " Channels-last MLPs run over cache-sized blocks of rows (``ChunkedSequential``)."
        if chunked
        else ""
    )
    return fold_notes(
        spec,
        plan,
        (
            "Inference build: load a plain model's state_dict (``load_state_dict`` folds "
            "each BatchNorm listed in a class's ``FOLDED_BN`` into its conv; ``fold`` shows the "
            "result); ReLUs run in place; images and convolutions are channels-last (NHWC), "
            f"faster on CPU (``x`` is converted on entry).{blocks} The model stays in eval "
            "mode and refuses ``train()``."
        ),
    )


def unwrap(expr: str) -> str:
    """Drop one pair of parentheses around a whole expression."""
    if not (expr.startswith("(") and expr.endswith(")")):
        return expr
    depth = 0
    for k, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and k < len(expr) - 1:
            return expr
    return expr[1:-1]


ENVIRONMENT = template_environment(TEMPLATES)
