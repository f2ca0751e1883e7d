"""Emit a standalone Keras 3 module from a spec, in the style of ``keras.applications``: one
function per block template (taking its input tensors, the block params, the layer-name prefix
``name`` and the model-level params it reads), stages as loops, and a model function that
builds a functional, channels-last ``keras.Model``. The output depends on keras only.

Each op computes what the spec (and the torch backend) computes:

- conv: symmetric padding ``p == dilation * (kernel - 1) / 2`` at stride 1 (all literal in the
  spec) is ``padding="same"``, and so is the spec's ``same`` at any stride (TF's, which pads by
  the input's size); any other padding is a ``ZeroPadding2D`` (``<name>_pad``) and a ``valid``
  conv;
- a conv with ``depthwise: true`` is a ``DepthwiseConv2D`` (kernel kh×kw×C×1, the layout of
  keras.applications' MobileNets), any other a ``Conv2D`` (with ``groups``); a depthwise
  kernel's fans are the other way round from torch's, so a fan-in initialiser draws by its
  fan-out there (``depthwise_initializer``);
- transposed conv: a ``valid`` ``Conv2DTranspose`` (with ``output_padding``), then
  ``Cropping2D`` (``<name>_crop``) by the torch padding;
- max-pool padding pads with -inf (``PaddedMaxPooling2D``); avg-pool padding counts the padded
  zeros (``ZeroPadding2D`` + ``AveragePooling2D``) or not (``PaddedAveragePooling2D``);
- BN: ``epsilon`` as given, ``momentum = 1 - torch momentum``;
- bilinear upsampling: ``UpSampling2D`` equals torch's ``align_corners=False``;
  ``BilinearUpSampling2D`` computes ``align_corners=True``;
- flatten flattens NHWC: a spatial flatten orders features (h, w, c), not torch's (c, h, w);
  ``rescompiler.backends.keras.weights`` permutes the next layer's weights accordingly;
- initialisers draw from torch's distributions (``torch_default`` included).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rescompiler.attrs import BUILTIN_DEFAULTS
from rescompiler.codegen import (
    Namespace,
    annotation,
    block_count_terms,
    camel,
    check_lines,
    clean,
    counters_read,
    functions_used,
    global_names,
    literal,
    local_name,
    named_outputs,
    optional_inits,
    param_default,
    py,
    template_environment,
    template_names,
    used_blocks,
    value_names,
)
from rescompiler.errors import Location, SpecError, format_path
from rescompiler.expr import template_parts
from rescompiler.fold import Fold, FoldPlan, fold_notes, plan_folds
from rescompiler.identifiers import MODULE_GLOBALS
from rescompiler.ir import INPUT
from rescompiler.pyformat import LINE_LENGTH, Call, layout, layout_sum
from rescompiler.schema import (
    INIT_NAMES,
    NOT_EXPRESSIONS,
    BlockCall,
    BlockTemplate,
    Group,
    NodeBase,
    Reuse,
    SpecModel,
)

TEMPLATES = Path(__file__).parent / "templates"
ACTIVATIONS = {
    "relu": "relu",
    "relu6": "relu6",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "gelu": "gelu",
    "silu": "silu",
    "hardswish": "hard_swish",
    "hardsigmoid": "hard_sigmoid",
}
HELPERS = (
    "PaddedMaxPooling2D",
    "PaddedAveragePooling2D",
    "DilatedConv2DTranspose",
    "BilinearUpSampling2D",
    "CropTo",
    "PadTo",
    "ChannelPad",
    "FoldedConv2D",
    "FoldedDepthwiseConv2D",
    "FoldedDense",
    "Reduce",
    "LayerScale",
    "FixedNormalization",
)
MODULE_NAMES = (
    "keras",
    "layers",
    "build",
    "initializer",
    "depthwise_initializer",
    "DEFAULTS",
    "INPUT_SHAPE",
    "Any",
)
MODULE_EXTRA = (
    "Sequence",
    "sys",
    "_pair",
    "_overhang",
    "np",
    "fold_batchnorm",
    "load_plain_weights",
)
OPTIMIZE = (None, "inference")
GENERIC_VARS = ("x", "out")
# keras.Model (and load_model) map the layer graph recursively, a frame per layer of its
# longest path: past this many layers the generated module raises Python's recursion limit
DEEP_GRAPH = 500
# initialisers Keras layers use when none is given, per weight role
KERAS_DEFAULT_INIT = {"kernel": "glorot_uniform", "bias": "zeros", "gamma": "ones", "beta": "zeros"}
# what torch's default initialisation is for BN's weight and bias
TORCH_DEFAULT_BN = {"gamma": "ones", "beta": "zeros"}

PathKey = tuple[str | int, ...]
Part = tuple[bool, str]  # (is an expression, text)


# -- names -------------------------------------------------------------------------------------
def name_parts(template: str, rename: Callable[[str], str] | None = None) -> list[Part]:
    """A name template (``block{i + 1}``) as literal and expression parts."""
    parts: list[Part] = []
    for part in template_parts(template):
        if isinstance(part, str):
            parts.append((False, part))
        else:
            parts.append((True, part.to_python(rename) if rename else part.to_python()))
    return parts


def join_name(prefix: list[Part] | None, own: list[Part]) -> list[Part]:
    """``{prefix}_{own}`` (as ``Scope.keras_name`` joins names), or ``own`` at the top."""
    return own if prefix is None else [*prefix, (False, "_"), *own]


def render_name(parts: list[Part]) -> str:
    """Python source of a name: a string literal, a variable, or an f-string."""
    if len(parts) == 1 and parts[0][0]:
        return parts[0][1]
    if all(not is_expr for is_expr, _ in parts):
        return json.dumps("".join(text for _, text in parts))
    body = ""
    for is_expr, text in parts:
        if is_expr:
            if '"' in text or "'" in text or "\\" in text:
                raise ValueError(f"a name template expression cannot hold quotes: {text}")
            body += "{" + text + "}"
        else:
            body += text.replace("{", "{{").replace("}", "}}")
    return f'f"{body}"'


# -- small helpers -----------------------------------------------------------------------------
def is_literal(value: Any) -> bool:
    """A spec value without expressions."""
    if isinstance(value, list):
        return all(is_literal(v) for v in value)
    return isinstance(value, int | float | bool)


def pair_of(value: Any) -> tuple[Any, Any]:
    """A literal int or [h, w] as two values."""
    return (value[0], value[1]) if isinstance(value, list) else (value, value)


def is_neutral(value: Any, neutral: int) -> bool:
    """The value is the literal ``neutral`` (or a list of it)."""
    if isinstance(value, list):
        return all(is_neutral(v, neutral) for v in value)
    return value is not True and value is not False and value == neutral


def parenthesise(source: str) -> str:
    """``source`` wrapped in parentheses unless it is a name, number or subscript."""
    return source if re.fullmatch(r"[\w.\[\]]+", source) else f"({source})"


def node_reads(node: Any) -> set[str]:
    """Every name one node's expressions and name templates read (not its children's)."""
    when = value_names(node.when) if node.when is not None else set()
    templates = set().union(*(template_names(t) for t in node.names.values()), set())
    if isinstance(node, BlockCall):  # args and names of a stage also see its i and n
        per_block = templates.union(*(value_names(v) for v in node.args.values()))
        if node.repeat is None:
            return when | per_block
        per_block |= template_names(node.child_name)
        return when | value_names(node.repeat) | (per_block - {"i", "n"})
    names = when | templates
    if isinstance(node, Group):
        return names
    for key in type(node).model_fields:
        if key in NodeBase.model_fields or key in NOT_EXPRESSIONS:
            continue
        value = getattr(node, key)
        if key == "init":
            for raw in (value.weight, value.bias) if value is not None else ():
                if raw is not None and raw not in INIT_NAMES:
                    names |= value_names(raw) - set(INIT_NAMES)
            continue
        names |= value_names(value)
    return names


# -- functions being generated -----------------------------------------------------------------
@dataclass
class Function:
    """One generated function: its lines, identifiers, and the names its code reads."""

    ns: Namespace
    lines: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    loop_names: dict[str, str] = field(default_factory=dict)
    generic: tuple[str, ...] = GENERIC_VARS  # those not taken by a param or let of the spec
    counter: str | None = None  # block_index's variable (model function, when read)
    count_var: str | None = None  # block_count's variable (likewise)

    def src(self, value: Any, rename: dict[str, str] | None = None) -> str:
        """Python source of a spec value; remembers the names it reads."""
        rename = rename or {}
        self.used |= value_names(value) - set(rename)
        if not rename and not _reads_init(value):
            return py(value)
        return py(value, lambda n: rename.get(n) or (json.dumps(n) if n in INIT_NAMES else n))

    def loop_name(self, name: str) -> str:
        """The function's variable for a stage's ``i`` or ``n`` (stages do not nest)."""
        if name not in self.loop_names:
            self.loop_names[name] = self.ns.create(name)
        return self.loop_names[name]

    def pair(self, value: Any, rename: dict[str, str] | None = None) -> str:
        """Source of an int or [h, w] as an int or a tuple."""
        return self.src(tuple(value) if isinstance(value, list) else value, rename)


def _reads_init(value: Any) -> bool:
    return isinstance(value, str) and bool(set(value_names(value)) & set(INIT_NAMES))


@dataclass
class Plan:
    """One node of a body: its local name, input names and the name used when it is off."""

    node: Any
    local: str
    inputs: list[str]
    alt: str


class ModuleEmitter:
    """State shared by the functions of one generated module."""

    def __init__(self, spec: Any, plan: FoldPlan | None = None) -> None:
        self.spec = spec
        self.plan = plan  # the fold plan of an inference build; None for the plain one
        self.model: SpecModel = spec.model
        self.globals_of = global_names(self.model, reads=node_reads)
        self.helpers: set[str] = set()
        self.needs_init = False
        self.dotted: frozenset[str] = frozenset()  # named outputs inside groups (features.1)
        self.captured: dict[str, str] = {}  # such an output -> the variable that keeps it
        self.needs_depthwise_init = False
        variables = {*self.model.params, *self.model.let}
        for template in self.model.blocks.values():
            variables |= {*template.params, *template.let, *template.inputs}
        # block functions are module globals: none may take a name a function binds locally
        local_names = {*GENERIC_VARS, "input_shape", "in_channels", "inputs", "name"}
        self.module_ns = Namespace(
            {*MODULE_NAMES, *HELPERS, *MODULE_EXTRA, *MODULE_GLOBALS, *variables, *local_names}
        )
        self.order = used_blocks(self.model)
        self.fn_of = {name: self.module_ns.create(name) for name in self.order}
        self.model_fn = self.module_ns.create(camel(self.model.name))
        # each block function's keyword for its layer-name prefix: ``name`` unless taken
        self.prefix_of: dict[str, str] = {}
        for name in self.order:
            template = self.model.blocks[name]
            taken = {*template.params, *template.let, *self.globals_of[name], *template.inputs}
            self.prefix_of[name] = next(
                p for p in ("name", "prefix", "name_prefix", "layer_prefix") if p not in taken
            )
        self.aux: list[tuple[str, str]] = []  # (spec path, suffix) of helper layers
        self.instances: dict[str, list[Any]] = {}
        for node in spec.graph.nodes:
            self.instances.setdefault(node.spec_path, []).append(node)

    def fail(self, path: PathKey, message: str) -> SpecError:
        document = self.spec.document
        location = document.locate(path) if document is not None else Location(self.spec.file)
        return SpecError.single(location, format_path(path), message)

    def check_aux_names(self) -> None:
        """Helper layers (``<name>_pad``, ``<name>_crop``) must not take a node's name."""
        names = {node.names["keras"] for node in self.spec.graph.nodes}
        for spec_path, suffix in self.aux:
            for node in self.instances.get(spec_path, []):
                clash = node.names["keras"] + suffix
                if clash in names:
                    raise SpecError.single(
                        node.location,
                        spec_path,
                        f"keras: the helper layer {clash!r} of {node.id} takes the name of "
                        "another layer; rename one of them",
                    )

    def default(self, node: Any, key: str) -> Any:
        """A node's attribute, else the spec's default for its op, else the built-in one."""
        value = getattr(node, key, None)
        if value is None:
            defaults = self.model.defaults.get(node.op)
            value = getattr(defaults, key, None) if defaults else None
        if value is None:
            value = BUILTIN_DEFAULTS.get(node.op, {}).get(key)
        return value

    def init_value(self, node: Any, tensor: str) -> Any:
        """The initialiser a node's spec states for ``weight``/``bias`` (or torch_default)."""
        own = getattr(node.init, tensor, None) if node.init is not None else None
        if own is not None:
            return own
        defaults = self.model.defaults.get(node.op)
        value = getattr(getattr(defaults, "init", None), tensor, None)
        return "torch_default" if value is None else value


class BodyEmitter:
    """Writes the code of one body (a block template's, the model's) into a Function."""

    def __init__(
        self,
        module: ModuleEmitter,
        fn: Function,
        prefix: list[Part] | None,
        keep: frozenset[str] = frozenset(),
    ) -> None:
        self.m = module
        self.fn = fn
        self.prefix = prefix
        self.keep = keep
        self.vars: dict[str, str] = {}
        self.bound: dict[str, set[str]] = {}
        self.last: dict[str, int] = {}
        self.group_path = ""  # the dotted path of the group whose children this emits

    # -- output -------------------------------------------------------------------------
    def line(self, indent: int, text: str) -> None:
        self.fn.lines.append(" " * indent + text)

    def condition(self, indent: int, when: Any) -> None:
        """``if <when>:``, parenthesised over three lines when too long (as ruff does)."""
        test = self.fn.src(when)
        if indent + len(test) + 4 <= LINE_LENGTH:
            self.line(indent, f"if {test}:")
            return
        inner = " " * (indent + 4)
        tree = ast.parse(test, mode="eval").body
        lines = [test]
        if indent + 4 + len(test) > LINE_LENGTH and isinstance(tree, ast.BoolOp):
            word = "and" if isinstance(tree.op, ast.And) else "or"
            lines = []
            for k, value in enumerate(tree.values):
                part = ast.get_source_segment(test, value) or ast.unparse(value)
                if isinstance(value, ast.BoolOp | ast.IfExp):
                    part = f"({part})"
                lines.append(part if k == 0 else f"{word} {part}")
        self.fn.lines += [" " * indent + "if (", *(inner + line for line in lines)]
        self.line(indent, "):")

    def apply(self, indent: int, var: str, ctor: Call, arg: str) -> None:
        """``var = Layer(...)(arg)``, laid out as ruff format does: on one line; else split in
        the last brackets when the line up to them fits; else split the layer's arguments."""
        pad = " " * indent
        head = f"{pad}{var} = {ctor.flat()}("
        if len(head) + len(arg) + 1 > LINE_LENGTH and len(head) <= LINE_LENGTH:
            self.fn.lines += [head, f"{pad}    {arg}", f"{pad})"]
            return
        self.fn.lines += layout(indent, f"{var} = ", ctor, f"({arg})")

    # -- bodies -------------------------------------------------------------------------
    def plan(self, body: list[Any], taken: set[str], first: list[str]) -> list[Plan]:
        """Local names and inputs of each node, named as the expander names them."""
        plans = []
        previous = first
        for index, node in enumerate(body):
            local = local_name(node, index, taken)
            taken.add(local)
            if node.inputs is None:
                names = list(previous)
            else:
                names = [node.inputs] if isinstance(node.inputs, str) else list(node.inputs)
            alt = node.otherwise if node.otherwise is not None else names[0]
            plans.append(Plan(node, local, names, alt))
            previous = [local]
        return plans

    def emit(
        self,
        body: list[Any],
        path: PathKey,
        indent: int,
        inputs: dict[str, str],
        first: list[str],
        output: str | None = None,
        outputs: list[str] = (),  # type: ignore[assignment]
    ) -> str:
        """Emit ``body``; ``inputs`` maps visible names to variables. Returns the output var;
        the variables of ``outputs`` (a model's named outputs) stay untouched to the end."""
        for name, var in inputs.items():
            self.vars[name] = var
            self.bound.setdefault(var, set()).add(name)
        plans = self.plan(body, set(inputs), first)
        self.siblings = {p.local: p.node for p in plans}
        self.root: dict[str, str] = {}  # reuse node -> the node whose layers it applies
        for p in plans:
            if isinstance(p.node, Reuse):
                self.root[p.local] = self.root.get(p.node.reuse, p.node.reuse)
        self.reused = set(self.root.values())
        self.layers: dict[str, list[str]] = {}  # layers of reused nodes, kept in variables
        out_local = output if output is not None else plans[-1].local
        for index, p in enumerate(plans):
            for name in [*p.inputs, p.alt]:
                self.last[name] = index
        for name in [out_local, *outputs]:
            self.last[name] = len(plans)
        for index, p in enumerate(plans):
            self.emit_node(p, index, (*path, index), indent)
        if out_local not in self.vars:
            raise self.m.fail(path, f"unknown output node {out_local!r}")
        return self.vars[out_local]

    def free(self, var: str, index: int) -> bool:
        """``var`` may take node ``index``'s output: nothing reads its value afterwards."""
        return var not in self.keep and all(
            self.last.get(name, -1) <= index for name in self.bound.get(var, ())
        )

    def choose(self, p: Plan, index: int, conditional: bool) -> str:
        """The variable of a node's output: a dying input's, a generic one, or a new one."""
        dying = [v for v in dict.fromkeys(self.vars[n] for n in p.inputs) if self.free(v, index)]
        alt = self.vars[p.alt]
        if conditional and self.free(alt, index):
            return alt  # no ``else`` needed
        for var in dying:
            if var in GENERIC_VARS:
                return var
        if dying:
            return dying[0]
        if self.last.get(p.local, -1) == index + 1:
            for var in self.fn.generic:
                if self.free(var, index):
                    return var
        return self.fn.ns.create(p.local if not p.local.isdigit() else f"out{p.local}")

    def bind(self, local: str, var: str) -> None:
        self.vars[local] = var
        self.bound[var] = {local}

    def fold_of(self, path: PathKey) -> Fold | None:
        """The fold that removes the BN node at ``path`` (inference builds only)."""
        plan = self.m.plan
        return plan.folds.get(format_path(path)) if plan is not None else None

    def absorbed(self, path: PathKey) -> Fold | None:
        """The fold whose BN the conv/linear node at ``path`` absorbs (inference builds)."""
        plan = self.m.plan
        return plan.targets.get(format_path(path)) if plan is not None else None

    def layer_name(self, node: Any, local: str) -> list[Part]:
        """The Keras name of an op node of this body."""
        if "keras" in node.names:
            self.fn.used |= template_names(node.names["keras"])
            own = name_parts(node.names["keras"])
        else:
            own = [(False, local)]
        return join_name(self.prefix, own)

    def emit_node(self, p: Plan, index: int, path: PathKey, indent: int) -> None:
        node = p.node
        for name in [*p.inputs, p.alt]:
            if name not in self.vars:
                raise self.m.fail(path, f"unknown input {name!r}")
        folded = self.fold_of(path) is not None  # the BN lives on in its conv
        if folded or node.when is False:  # (or ``when: false``): its value is another's
            var = self.vars[p.inputs[0] if folded else p.alt]
            self.vars[p.local] = var
            self.bound.setdefault(var, set()).add(p.local)
            return
        in_vars = [self.vars[n] for n in p.inputs]
        conditional = isinstance(node.when, str)  # a literal True: always built
        var = self.choose(p, index, conditional)
        body_indent = indent
        if conditional:
            self.condition(indent, node.when)
            body_indent = indent + 4
        self.emit_unit(node, p.local, path, body_indent, in_vars, var)
        alt_var = self.vars[p.alt]
        if conditional and alt_var != var:
            self.line(indent, "else:")
            self.line(indent + 4, f"{var} = {alt_var}")
        self.bind(p.local, var)

    def emit_unit(
        self, node: Any, local: str, path: PathKey, indent: int, in_vars: list[str], var: str
    ) -> None:
        """Code computing one node (op, block call, stage or group) into ``var``."""
        if isinstance(node, Group):
            self.emit_group(node, path, indent, in_vars, var)
        elif isinstance(node, BlockCall):
            self.emit_call(node, local, path, indent, in_vars, var)
        elif isinstance(node, Reuse):  # the layers of an earlier node, called again
            for k, layer in enumerate(self.layers[self.root[local]]):
                self.line(indent, f"{var} = {layer}({in_vars[0] if k == 0 else var})")
        else:
            self.emit_op(node, local, path, indent, in_vars, var)

    # -- groups -------------------------------------------------------------------------
    def emit_group(
        self, node: Group, path: PathKey, indent: int, in_vars: list[str], var: str
    ) -> None:
        """A group's children in sequence, each writing ``var``; names under its prefix."""
        own = (
            name_parts(node.names["keras"]) if "keras" in node.names else [(False, str(node.group))]
        )
        self.fn.used |= template_names(node.names.get("keras", ""))
        # a group named "" adds nothing to its layers' names
        prefix = join_name(self.prefix, own) if own else self.prefix
        inner = BodyEmitter(self.m, self.fn, prefix, self.keep)
        group_path = f"{self.group_path}.{node.group}" if self.group_path else str(node.group)
        inner.group_path = group_path
        inner.siblings = {
            (str(child.group) if isinstance(child, Group) else (child.name or str(k))): child
            for k, child in enumerate(node.body)
        }
        current = in_vars
        for k, child in enumerate(node.body):
            child_path = (*path, "body", k)
            if self.fold_of(child_path) is not None:
                continue  # the BN lives on in its conv
            if child.inputs is not None:
                raise self.m.fail((*child_path, "inputs"), "nodes inside a group are sequential")
            if child.otherwise is not None:
                raise self.m.fail(
                    (*child_path, "otherwise"), "keras: 'otherwise' inside a group is unsupported"
                )
            local = str(child.group) if isinstance(child, Group) else (child.name or str(k))
            if child.when is False:
                continue
            conditional = isinstance(child.when, str)
            child_indent = indent
            if conditional:
                self.condition(indent, child.when)
                child_indent = indent + 4
            inner.emit_unit(child, local, child_path, child_indent, current, var)
            if conditional and current[0] != var:
                self.line(indent, "else:")
                self.line(indent + 4, f"{var} = {current[0]}")
            current = [var]
            if f"{group_path}.{local}" in self.m.dotted:  # a named output: kept as it is here
                kept = self.fn.ns.create(f"{group_path}_{local}".replace(".", "_"))
                self.line(indent, f"{kept} = {var}")
                self.m.captured[f"{group_path}.{local}"] = kept
        if current is in_vars and var != in_vars[0]:  # no child is built
            self.line(indent, f"{var} = {in_vars[0]}")

    # -- blocks and stages --------------------------------------------------------------
    def block_args(
        self, node: BlockCall, in_vars: list[str], rename: dict[str, str], name: list[Part]
    ) -> list[str]:
        template: BlockTemplate = self.m.model.blocks[node.block]
        args = list(in_vars)
        for key in template.params:
            if key in node.args:
                args.append(f"{key}={self.fn.src(node.args[key], rename)}")
        args.append(f"{self.m.prefix_of[node.block]}={render_name(name)}")
        for g in self.m.globals_of[node.block]:
            self.fn.used.add(g)
            args.append(f"{g}={g}")
        return args

    def emit_call(
        self,
        node: BlockCall,
        local: str,
        path: PathKey,
        indent: int,
        in_vars: list[str],
        var: str,
    ) -> None:
        if node.block not in self.m.fn_of:
            raise self.m.fail((*path, "block"), f"unknown block {node.block!r}")
        template: BlockTemplate = self.m.model.blocks[node.block]
        if len(in_vars) != len(template.inputs):
            raise self.m.fail(
                (*path, "inputs"),
                f"block {node.block!r} takes {len(template.inputs)} input(s), got {len(in_vars)}",
            )
        fn_name = self.m.fn_of[node.block]
        keras_template = node.names.get("keras")
        if node.repeat is None:
            if keras_template is not None:
                self.fn.used |= template_names(keras_template)
                own = name_parts(keras_template)
            else:
                own = [(False, local)]
            name = join_name(self.prefix, own)
            call = Call(fn_name, tuple(self.block_args(node, in_vars, {}, name)))
            self.fn.lines += layout(indent, f"{var} = ", call)
            return
        # a stage: ``repeat`` blocks, each taking the previous one's output as first input
        reads = set().union(*(value_names(v) for v in node.args.values()), set())
        reads |= template_names(node.child_name)
        if keras_template is not None:
            reads |= template_names(keras_template)
        rename: dict[str, str] = {}
        count = self.fn.src(node.repeat)
        if "n" in reads:
            if count == "n":
                rename["n"] = "n"
            else:
                n_var = self.fn.loop_name("n")
                self.line(indent, f"{n_var} = {count}")
                rename["n"] = count = n_var
        loop_var = "_"
        if "i" in reads:
            loop_var = rename["i"] = self.fn.loop_name("i")
        if self.fn.counter is not None and "block_index" in reads:
            rename["block_index"] = self.fn.counter
        if self.fn.count_var is not None and "block_count" in reads:
            rename["block_count"] = self.fn.count_var
        render: Callable[[str], str] = lambda n: rename.get(n, n)  # noqa: E731
        if keras_template is not None:
            own = name_parts(keras_template, render)
        else:
            own = [(False, f"{local}_"), *name_parts(node.child_name, render)]
        self.fn.used |= reads - {"i", "n"}
        name = join_name(self.prefix, own)
        if var != in_vars[0]:
            self.line(indent, f"{var} = {in_vars[0]}")
        self.line(indent, f"for {loop_var} in range({count}):")
        args = self.block_args(node, [var, *in_vars[1:]], rename, name)
        self.fn.lines += layout(indent + 4, f"{var} = ", Call(fn_name, tuple(args)))
        if self.fn.counter is not None:
            self.line(indent + 4, f"{self.fn.counter} += 1")

    # -- primitive ops ------------------------------------------------------------------
    def emit_op(
        self, node: Any, local: str, path: PathKey, indent: int, in_vars: list[str], var: str
    ) -> None:
        name = self.layer_name(node, local)
        chain = self.constructors(node, path, in_vars[0], var, name)
        arg = in_vars[0] if len(in_vars) == 1 else "[" + ", ".join(in_vars) + "]"
        for k, (suffix, callee, args) in enumerate(chain):
            layer_name = name if suffix is None else [*name, (False, suffix)]
            if suffix is not None:
                self.m.aux.append((format_path(path), suffix))
            ctor = Call(callee, (*args, f"name={render_name(layer_name)}"))
            if local in getattr(self, "reused", ()):  # kept to be called again
                layer = self.fn.ns.create(f"{local}_layer")
                self.fn.lines += layout(indent, f"{layer} = ", ctor)
                self.line(indent, f"{var} = {layer}({arg if k == 0 else var})")
                self.layers.setdefault(local, []).append(layer)
                continue
            self.apply(indent, var, ctor, arg if k == 0 else var)

    def constructors(
        self, node: Any, path: PathKey, in_var: str, var: str, name: list[Part]
    ) -> list[tuple[str | None, str, list[str]]]:
        """The layers computing an op, applied in sequence: (name suffix, callee, args)."""
        op = node.op
        src, pair = self.fn.src, self.fn.pair
        if op == "conv":
            return self.conv(node, path, in_var, var)
        if op == "conv_transpose":
            return self.conv_transpose(node, path)
        if op == "bn":
            return [(None, "layers.BatchNormalization", self.bn_args(node))]
        if op == "linear":
            args = [src(node.out)]
            bias = self.m.default(node, "bias")
            fold = self.absorbed(path)
            if bias is not True and fold is None:
                args.append(f"use_bias={src(bias)}")
            args += self.init_args(node, bias, f"{in_var}.shape[-1]")
            if fold is not None:
                self.m.helpers.update({"FoldedConv2D", "FoldedDense"})  # its fold_from
                return [(None, "FoldedDense", [*args, *self.fold_args(fold)])]
            return [(None, "layers.Dense", args)]
        if op in ACTIVATIONS:
            return [(None, "layers.Activation", [json.dumps(ACTIVATIONS[op])])]
        if op == "leaky_relu":
            return [(None, "layers.LeakyReLU", [f"negative_slope={src(node.slope)}"])]
        if op == "softmax":
            return [(None, "layers.Softmax", [])]
        if op in ("identity", "permute"):  # Keras maps are channels-last already
            return [(None, "layers.Identity", [])]
        if op == "flatten":
            return [(None, "layers.Flatten", [])]
        if op == "dropout":
            return [(None, "layers.Dropout", [src(node.p)])]
        if op == "maxpool":
            args = [pair(node.kernel)]
            if node.stride is not None and node.stride != node.kernel:
                args.append(f"strides={pair(node.stride)}")
            ceil = [] if node.ceil_mode is False else [f"ceil_mode={src(node.ceil_mode)}"]
            if is_neutral(node.padding, 0) and not ceil:
                return [(None, "layers.MaxPooling2D", args)]
            self.m.helpers.add("PaddedMaxPooling2D")
            return [(None, "PaddedMaxPooling2D", [*args, f"padding={pair(node.padding)}", *ceil])]
        if op == "avgpool":
            args = [pair(node.kernel)]
            if node.stride is not None and node.stride != node.kernel:
                args.append(f"strides={pair(node.stride)}")
            ceil = [] if node.ceil_mode is False else [f"ceil_mode={src(node.ceil_mode)}"]
            if is_neutral(node.padding, 0) and not ceil:
                return [(None, "layers.AveragePooling2D", args)]
            if node.count_include_pad is True and not ceil:
                pad = (
                    "_pad",
                    "layers.ZeroPadding2D",
                    [pair(node.padding)],
                )
                return [pad, (None, "layers.AveragePooling2D", args)]
            self.m.helpers.add("PaddedAveragePooling2D")
            args.append(f"padding={pair(node.padding)}")
            args.append(f"count_include_pad={src(node.count_include_pad)}")
            return [(None, "PaddedAveragePooling2D", [*args, *ceil])]
        if op in ("global_avgpool", "global_maxpool"):
            callee = (
                "layers.GlobalAveragePooling2D"
                if op == "global_avgpool"
                else ("layers.GlobalMaxPooling2D")
            )
            args = [] if node.keepdims is False else [f"keepdims={src(node.keepdims)}"]
            return [(None, callee, args)]
        if op in ("layernorm", "groupnorm"):
            eps = self.m.default(node, "eps")
            args = [f"epsilon={src(eps)}"]
            if op == "groupnorm":
                return [(None, "layers.GroupNormalization", [src(node.groups), *args])]
            return [(None, "layers.LayerNormalization", args)]
        if op == "rescale":
            offset = [] if node.offset == 0.0 else [f"offset={src(node.offset)}"]
            return [(None, "layers.Rescaling", [src(node.scale), *offset])]
        if op == "normalize":
            mean, variance = node.mean, node.variance
            if isinstance(mean, list) != isinstance(variance, list):  # Keras wants equal shapes
                size = len(mean if isinstance(mean, list) else variance)
                mean = mean if isinstance(mean, list) else [mean] * size
                variance = variance if isinstance(variance, list) else [variance] * size
            values = [src(mean), src(variance)]
            if not node.stored:
                values = [f"mean={values[0]}", f"variance={values[1]}"]
                return [(None, "layers.Normalization", values)]
            self.m.helpers.add("FixedNormalization")
            return [(None, "FixedNormalization", values)]
        if op == "layer_scale":
            self.m.helpers.add("LayerScale")
            return [(None, "LayerScale", [src(node.value)])]
        if op == "drop_path":  # one draw per sample: the noise broadcasts over the rest
            ranks = {len(n.shape) for n in self.m.instances.get(format_path(path), [])}
            if len(ranks) > 1:
                raise self.m.fail(path, "keras: this drop_path sees maps and vectors in turn")
            ones = ", ".join(["1"] * (ranks.pop() if ranks else 3))
            return [(None, "layers.Dropout", [src(node.p), f"noise_shape=(None, {ones})"])]
        if op in ("mean", "max"):
            self.m.helpers.add("Reduce")
            axis = "-1" if node.axis == "channels" else "(1, 2)"
            return [(None, "Reduce", [json.dumps(op), axis])]
        if op == "zeropad":
            return [(None, "layers.ZeroPadding2D", [self.pad4(node.padding)])]
        if op == "crop":
            return [(None, "layers.Cropping2D", [self.pad4(node.crop)])]
        if op in ("crop_to", "pad_to"):
            helper = "CropTo" if op == "crop_to" else "PadTo"
            self.m.helpers.add(helper)
            return [(None, helper, [])]
        if op == "subsample":
            return [(None, "layers.MaxPooling2D", ["1", f"strides={pair(node.stride)}"])]
        if op == "channel_pad":
            self.m.helpers.add("ChannelPad")
            return [(None, "ChannelPad", [src(node.before), src(node.after)])]
        if op == "upsample":
            args = [src(node.scale)]
            if node.mode == "nearest":
                return [(None, "layers.UpSampling2D", args)]
            if node.align_corners is False:
                return [(None, "layers.UpSampling2D", [*args, 'interpolation="bilinear"'])]
            self.m.helpers.add("BilinearUpSampling2D")
            args.append(f"align_corners={src(node.align_corners)}")
            return [(None, "BilinearUpSampling2D", args)]
        if op == "add":
            return [(None, "layers.Add", [])]
        if op == "concat":
            return [(None, "layers.Concatenate", [])]
        if op == "mul":
            return [(None, "layers.Multiply", [])]
        raise self.m.fail(path, f"op {op!r} has no keras translation")

    def fold_args(self, fold: Fold) -> list[str]:
        """``folded_bn=<the BN's Keras name>`` (and ``bn_before=True``) of a layer that absorbs
        a BN of the same body."""
        bn = self.siblings[fold.bn_local]
        args = [f"folded_bn={render_name(self.layer_name(bn, fold.bn_local))}"]
        if fold.side == "before":
            args.append("bn_before=True")
        return args

    def pad4(self, value: Any) -> str:
        """A zeropad/crop amount (int, [h, w] or [top, bottom, left, right]) for Keras."""
        if isinstance(value, list) and len(value) == 4:
            t, b, left, r = (self.fn.src(v) for v in value)
            return f"(({t}, {b}), ({left}, {r}))"
        return self.fn.pair(value)

    def conv(
        self, node: Any, path: PathKey, in_var: str, var: str
    ) -> list[tuple[str | None, str, list[str]]]:
        src, pair = self.fn.src, self.fn.pair
        depthwise = node.depthwise  # DepthwiseConv2D: one output per input channel
        args = [pair(node.kernel)] if depthwise else [src(node.out), pair(node.kernel)]
        # Keras refuses strides > 1 with dilation > 1: convolve at stride 1, then keep every
        # stride-th row and column, which is what a strided convolution computes
        subsample = not is_neutral(node.stride, 1) and not is_neutral(node.dilation, 1)
        if not is_neutral(node.stride, 1) and not subsample:
            args.append(f"strides={pair(node.stride)}")
        chain: list[tuple[str | None, str, list[str]]] = []
        padding = node.padding
        if padding == "same" and subsample:  # Keras' "same" at stride 1 pads otherwise
            raise self.m.fail(
                (*path, "padding"), "keras: padding 'same' with a stride and a dilation"
            )
        if padding == "same" or self.same_padding(node):
            args.append('padding="same"')
        elif padding != "valid" and not is_neutral(padding, 0):
            chain.append(("_pad", "layers.ZeroPadding2D", [self.pad4(padding)]))
        if not is_neutral(node.dilation, 1):
            args.append(f"dilation_rate={pair(node.dilation)}")
        if not is_neutral(node.groups, 1) and not depthwise:
            args.append(f"groups={src(node.groups)}")
        bias = self.m.default(node, "bias")
        fold = self.absorbed(path)
        if bias is not True and fold is None:
            args.append(f"use_bias={src(bias)}")
        # torch's default bias bound uses the weight's fan-in: in_channels / groups * kh * kw
        source = var if chain else in_var
        fan_in = f"{source}.shape[-1]"
        if depthwise:
            fan_in = "1"
        elif not is_neutral(node.groups, 1):
            fan_in += f" // {parenthesise(src(node.groups))}"
        fan_in = self.times_kernel(fan_in, node.kernel)
        args += self.init_args(node, bias, fan_in, depthwise)
        layer = "DepthwiseConv2D" if depthwise else "Conv2D"
        if fold is not None:  # FoldedDepthwiseConv2D uses FoldedConv2D's code
            self.m.helpers.update({"FoldedConv2D", f"Folded{layer}"})
            chain.append((None, f"Folded{layer}", [*args, *self.fold_args(fold)]))
        else:
            chain.append((None, f"layers.{layer}", args))
        if subsample:
            chain.append(("_stride", "layers.MaxPooling2D", ["1", f"strides={pair(node.stride)}"]))
        return chain

    def times_kernel(self, fan_in: str, kernel: Any) -> str:
        if is_literal(kernel):
            kh, kw = pair_of(kernel)
            if fan_in == "1":
                return str(kh * kw)
            return fan_in if kh * kw == 1 else f"{fan_in} * {kh * kw}"
        kh, kw = (kernel[0], kernel[1]) if isinstance(kernel, list) else (kernel, kernel)
        factors = [parenthesise(self.fn.src(kh)), parenthesise(self.fn.src(kw))]
        return " * ".join(factors if fan_in == "1" else [fan_in, *factors])

    def same_padding(self, node: Any) -> bool:
        """Literal symmetric padding equal to dilation * (kernel - 1) / 2 at stride 1."""
        values = (node.padding, node.kernel, node.stride, node.dilation)
        if not all(is_literal(v) for v in values) or not is_neutral(node.stride, 1):
            return False
        padding = node.padding
        if isinstance(padding, list) and len(padding) == 4:
            if padding[0] != padding[1] or padding[2] != padding[3]:
                return False
            padding = [padding[0], padding[2]]
        for p, k, d in zip(
            pair_of(padding), pair_of(node.kernel), pair_of(node.dilation), strict=True
        ):
            if 2 * p != d * (k - 1):
                return False
        return not is_neutral(padding, 0)

    def conv_transpose(self, node: Any, path: PathKey) -> list[tuple[str | None, str, list[str]]]:
        src, pair = self.fn.src, self.fn.pair
        if not is_neutral(node.groups, 1):
            raise self.m.fail((*path, "groups"), "keras: Conv2DTranspose has no groups")
        args = [src(node.out), pair(node.kernel)]
        if not is_neutral(node.stride, 1):
            args.append(f"strides={pair(node.stride)}")
        # Keras' valid output size is (h - 1) * s + dk + output_padding when output_padding is
        # given, h * s + max(dk - s, 0) when not: give it unless both agree
        kernel, stride, dilation = node.kernel, node.stride, node.dilation
        agree = is_neutral(node.output_padding, 0) and all(
            is_literal(v) for v in (kernel, stride, dilation)
        )
        if agree:
            for k, s, d in zip(pair_of(kernel), pair_of(stride), pair_of(dilation), strict=True):
                agree = agree and d * (k - 1) + 1 >= s
        if not agree:
            args.append(f"output_padding={pair(node.output_padding)}")
        if not is_neutral(dilation, 1):
            args.append(f"dilation_rate={pair(dilation)}")
        bias = self.m.default(node, "bias")
        if bias is not True:
            args.append(f"use_bias={src(bias)}")
        # torch's ConvTranspose2d weight is (in, out / groups, kh, kw): its fan-in is out * kh * kw
        args += self.init_args(node, bias, self.times_kernel(parenthesise(src(node.out)), kernel))
        layer = "layers.Conv2DTranspose"
        if not is_neutral(dilation, 1):
            layer = "DilatedConv2DTranspose"
            self.m.helpers.add(layer)
        chain: list[tuple[str | None, str, list[str]]] = [(None, layer, args)]
        if not is_neutral(node.padding, 0):
            chain.append(("_crop", "layers.Cropping2D", [pair(node.padding)]))
        return chain

    def bn_args(self, node: Any) -> list[str]:
        src = self.fn.src
        args = []
        eps = self.m.default(node, "eps")
        if eps != 1e-3:
            args.append(f"epsilon={src(eps)}")
        momentum = self.m.default(node, "momentum")
        if isinstance(momentum, int | float):
            value = 1 - momentum
            value = float(f"{value:.12g}")
            if value != 0.99:
                args.append(f"momentum={value!r}")
        else:
            args.append(f"momentum=1 - {parenthesise(src(momentum))}")
        if node.affine is not True:
            affine = src(node.affine)
            args += [f"center={affine}", f"scale={affine}"]
        for tensor, role in (("weight", "gamma"), ("bias", "beta")):
            arg = self.init_arg(self.m.init_value(node, tensor), role, None)
            if arg is not None:
                args.append(f"{role}_initializer={arg}")
        return args

    def init_args(self, node: Any, bias: Any, fan_in: str, depthwise: bool = False) -> list[str]:
        args = []
        kernel = self.init_arg(self.m.init_value(node, "weight"), "kernel", None)
        if kernel is not None and depthwise:
            # a DepthwiseConv2D kernel (kh, kw, C, 1) has its fans the other way round
            if kernel.startswith("initializer("):
                self.m.needs_depthwise_init = True
                kernel = f"depthwise_{kernel}"
            args.append(f"depthwise_initializer={kernel}")
        elif kernel is not None:
            args.append(f"kernel_initializer={kernel}")
        if bias is not False:
            arg = self.init_arg(self.m.init_value(node, "bias"), "bias", fan_in)
            if arg is not None:
                args.append(f"bias_initializer={arg}")
        return args

    def init_arg(self, value: str, role: str, fan_in: str | None) -> str | None:
        """Source of a Keras initializer for a weight ``role``; None for Keras' default."""
        if value in INIT_NAMES:
            if role in TORCH_DEFAULT_BN and value == "torch_default":
                value = TORCH_DEFAULT_BN[role]
            if value == KERAS_DEFAULT_INIT[role]:
                return None
            if value in ("zeros", "ones", "glorot_uniform"):
                return json.dumps(value)
            self.m.needs_init = True
            if value == "torch_default" and role == "bias":
                return f"initializer({json.dumps(value)}, fan_in={fan_in})"
            return f"initializer({json.dumps(value)})"
        self.m.needs_init = True
        rename = {}
        if role in TORCH_DEFAULT_BN:
            rename["torch_default"] = json.dumps(TORCH_DEFAULT_BN[role])
        expression = self.fn.src(value, rename)
        if role == "bias":
            return f"initializer({expression}, fan_in={fan_in})"
        return f"initializer({expression})"


# -- functions --------------------------------------------------------------------------------
def lets_used(lets: dict[str, Any], used: set[str]) -> list[str]:
    """The lets the code reads, directly or through later lets, in definition order."""
    needed = set(used)
    keep = []
    for key in reversed(list(lets)):
        if key in needed:
            keep.append(key)
            needed |= value_names(lets[key])
    return list(reversed(keep))


def block_function(m: ModuleEmitter, name: str, template: BlockTemplate) -> dict[str, Any]:
    """Source parts of one block function."""
    reserved = {
        *MODULE_NAMES,
        *HELPERS,
        *MODULE_EXTRA,
        *m.fn_of.values(),
        m.model_fn,
        *template.params,
        *template.let,
        *m.globals_of[name],
        "in_channels",
    }
    reserved |= set(MODULE_GLOBALS)
    fn = Function(Namespace(reserved), generic=tuple(v for v in GENERIC_VARS if v not in reserved))
    inputs: dict[str, str] = {}
    for k, input_name in enumerate(template.inputs):
        inputs[input_name] = fn.ns.create("x" if input_name == "input" and k == 0 else input_name)
    inputs.setdefault("input", inputs[template.inputs[0]])
    for generic in GENERIC_VARS:
        fn.ns.reserve(generic)
    prefix = m.prefix_of[name]
    fn.ns.reserve(prefix)
    emitter = BodyEmitter(m, fn, [(True, prefix)])
    result = emitter.emit(
        template.body, ("blocks", name, "body"), 4, inputs, [template.inputs[0]], template.output
    )
    head: list[str] = []
    lets = lets_used(template.let, fn.used)
    reads = set(fn.used)
    for key in lets:
        reads |= value_names(template.let[key])
    if "in_channels" in reads:
        head.append(f"    in_channels = {inputs[template.inputs[0]]}.shape[-1]")
    head += [f"    {key} = {fn.src(template.let[key])}" for key in lets]
    signature = [f"{inputs[i]}: keras.KerasTensor" for i in template.inputs]
    params = []
    ordered = True
    seen_default = False
    fills = []
    for key, default in template.params.items():
        param, fill = param_default(key, default, fn.src)
        params.append(param)
        fills += [f"    {line}" for line in fill]
        if default is None:
            ordered = ordered and not seen_default
        else:
            seen_default = True
    head = fills + head
    globals_ = [f"{g}: {annotation(m.model.params.get(g))}" for g in m.globals_of[name]]
    keyword = [f"{prefix}: str", *globals_]
    args = [*signature, *params, "*", *keyword] if ordered else [*signature, "*", *params, *keyword]
    doc = (template.doc or f"Block template {name!r}.").strip()
    doc += "" if doc.endswith((".", "!", "?")) else "."
    doc += f" Layers are named ``{{{prefix}}}_<layer>``."
    return {
        "name": m.fn_of[name],
        "doc": clean(doc),
        "signature": layout(0, "def ", Call(m.fn_of[name], tuple(args)), " -> keras.KerasTensor:"),
        "body": [*head, *fn.lines],
        "result": result,
    }


def model_function(m: ModuleEmitter) -> dict[str, Any]:
    """Source parts of the model function."""
    spec = m.spec
    model = m.model
    reserved = {
        *MODULE_NAMES,
        *HELPERS,
        *MODULE_EXTRA,
        *m.fn_of.values(),
        m.model_fn,
        *model.params,
        *model.let,
        "in_channels",
        "input_shape",
        "inputs",
    }
    reserved |= set(MODULE_GLOBALS)
    fn = Function(Namespace(reserved), generic=tuple(v for v in GENERIC_VARS if v not in reserved))
    for generic in GENERIC_VARS:
        fn.ns.reserve(generic)
    counters = counters_read(model)
    if "block_count" in counters:  # the blocks of all stages, for rates scaled over depth
        fn.count_var = fn.ns.create("block_count")
    if "block_index" in counters:
        fn.counter = fn.ns.create("block_index")
    emitter = BodyEmitter(m, fn, None, keep=frozenset({"inputs"}))
    named = named_outputs(model)
    m.dotted = frozenset(v for v in named.values() if "." in v)
    result = emitter.emit(
        model.body, ("body",), 4, {"input": "inputs"}, ["input"], outputs=list(named.values())
    )
    if named:  # a model with several named outputs, as keras.applications backbones are used
        items = ", ".join(
            f"{json.dumps(k)}: {m.captured.get(v) or emitter.vars[v]}" for k, v in named.items()
        )
        result = "{" + items + "}"
    checked = {name for check in model.checks for name in value_names(check.that)}
    lets = lets_used(model.let, set(fn.used) | checked)
    reads = set(fn.used) | checked
    for key in lets:
        reads |= value_names(model.let[key])
    head: list[str] = []
    if "in_channels" in reads:
        head.append("    in_channels = input_shape[0]")
    head += [f"    {key} = {fn.src(model.let[key])}" for key in lets]
    head += check_lines(model.checks, 4, fn.src)
    if fn.count_var is not None:
        head += layout_sum(4, f"{fn.count_var} = ", block_count_terms(model, fn.src))
    if fn.counter is not None:
        head.append(f"    {fn.counter} = 0")
    rank = len(spec.graph.input_shape)
    shape = (
        "(input_shape[1], input_shape[2], input_shape[0])" if rank == 3 else "tuple(input_shape)"
    )
    taken = {node.names["keras"] for node in spec.graph.nodes}
    input_name = next(n for n in ("input", "input_layer", "model_input") if n not in taken)
    head += layout(
        4, "inputs = ", Call("keras.Input", (f"shape={shape}", f"name={json.dumps(input_name)}"))
    )
    params = [
        f"{key}: {annotation(value)} = {literal(value)}" for key, value in spec.params.items()
    ]
    params.append(f"input_shape: Sequence[int] = {literal(spec.graph.input_shape)}")
    name = json.dumps(model.name)
    return {
        "name": m.model_fn,
        "signature": layout(0, "def ", Call(m.model_fn, tuple(params)), " -> keras.Model:"),
        "doc": f"{model.name} as the spec defines it, as a functional ``keras.Model``.",
        "body": [*head, *fn.lines],
        "result": layout(4, "return ", Call("keras.Model", ("inputs", result, f"name={name}"))),
        "build_doc": (
            f"Build {model.name}; keyword params override ``DEFAULTS`` (and ``input_shape``)."
        ),
    }


def emit_source(spec: Any, optimize: str | None = None) -> str:
    """The generated module's source for ``spec`` (a loaded rescompiler Spec); with
    ``optimize="inference"`` the inference build: BatchNorms folded into convs."""
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize must be one of {list(OPTIMIZE)}, got {optimize!r}")
    plan = plan_folds(spec.model) if optimize == "inference" else None
    m = ModuleEmitter(spec, plan)
    model = m.model
    blocks = [block_function(m, name, model.blocks[name]) for name in m.order]
    main = model_function(m)
    m.check_aux_names()
    depth: dict[str, int] = {INPUT: 0}
    for node in spec.graph.nodes:
        depth[node.id] = 1 + max(depth[i] for i in node.inputs)
    longest = depth[spec.graph.output]
    source = clean(Path(spec.file).as_posix())
    header = f"{model.name}: {clean(model.description or model.name)}\n\n"
    if model.reference:
        header += f"Reference: {clean(model.reference)}.\n\n"
    flag = " --optimize inference" if plan is not None else ""
    header += (
        f"Generated by rescompiler from {source}; do not edit. Regenerate with "
        f"``rescompile {source} --backend keras{flag}``. Depends only on keras (Keras 3).\n\n"
        "Channels-last: the model takes (batch, H, W, C) inputs, while ``input_shape`` is "
        "(C, H, W) as in the spec. Layer names are the spec's Keras names. Importing this "
        "module registers its custom layers, which ``keras.models.load_model`` needs."
    )
    if plan is not None:
        header += "\n\n" + inference_notes(spec, plan)
    return ENVIRONMENT.get_template("module.py.jinja").render(
        header=header,
        inference=plan is not None,
        functions=functions_used(m.model),
        inits=optional_inits(m.model),
        helpers=sorted(m.helpers),
        needs_init=m.needs_init,
        needs_depthwise_init=m.needs_depthwise_init,
        blocks=blocks,
        model=main,
        defaults=[(json.dumps(k), literal(v)) for k, v in spec.params.items()],
        input_shape=literal(spec.graph.input_shape),
        longest=longest,
        recursion_limit=(
            f"{max(10_000, -(-3 * longest // 1000) * 1000):_}" if longest > DEEP_GRAPH else None
        ),
    )


def inference_notes(spec: Any, plan: FoldPlan) -> str:
    """The header paragraph of an inference build: what it does, what was folded, what not."""
    return fold_notes(
        spec,
        plan,
        (
            "Inference build: each ``FoldedConv2D``/``FoldedDense`` absorbs the BatchNorm it "
            "names (``folded_bn``), which the model does not have; "
            "``load_plain_weights(model, plain)`` copies a plain model's weights by layer name "
            "and folds them."
        ),
    )


ENVIRONMENT = template_environment(TEMPLATES)
