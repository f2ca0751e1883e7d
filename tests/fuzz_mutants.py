"""Mutants of library specs aimed at code generation, and the oracle an emitted module must pass.

Used by ``tests/test_fuzz_emit.py`` (a fixed, seeded batch in CI) and runnable on its own for
longer explorations, which also minimise every distinct failure to a small repro spec::

    python tests/fuzz_mutants.py --start 100000 --count 20000 --report /tmp/fuzz_emit.json
    python tests/fuzz_mutants.py --sweep --report /tmp/fuzz_emit_sweep.json

A case is a seed. From it a :class:`Case` is drawn deterministically (:func:`make_case`): a
small library spec, one to three mutations (hostile text, Python-hostile renames done
consistently so the spec stays valid, name templates, numeric edge values, allowed calls, quoted
strings, the structural mutations of ``test_fuzz.py``), sometimes overrides or a hostile file
name, and an output format (YAML or JSON). :func:`sweep_case` instead puts each hostile
identifier into each kind of name of :data:`TINY`. :func:`run_case` loads the mutant and, if it
is valid, emits the torch and Keras sources and compiles them (``compile()``, never run);
:func:`check_module` then reads the module's AST for injected code and name clashes.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import dataclasses
import json
import math
import random
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
if str(ROOT) not in sys.path:  # run as a script: import the checkout, as pytest does
    sys.path.insert(0, str(ROOT))

import rescompiler  # noqa: E402
from rescompiler.identifiers import TORCH_MODULE_ATTRIBUTES  # noqa: E402

MARKER = "Zq9pwned"  # an identifier that only hostile text contains: seen as code = injected
PathKey = tuple[Any, ...]
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# -- the bases -------------------------------------------------------------------------------
# Library specs at a small input; the deep ones get fewer repeats so a case stays cheap (loading
# expands every repeat; emitting does not).
BASE_EDITS: dict[str, dict[str, Any]] = {
    "cifar_resnet20": {"input_shape": [3, 32, 32], "params.depth": 8},
    "resnet18": {"input_shape": [3, 32, 32], "params.depths": [1, 2, 1, 1]},
    "densenet121": {"input_shape": [3, 32, 32], "params.block_config": [2, 3, 2, 2]},
    "unet": {"input_shape": [3, 32, 32]},
    "resnet50v2": {"input_shape": [3, 32, 32], "params.depths": [2, 1, 2, 1]},
    "d2l_densenet": {"input_shape": [1, 32, 32], "params.arch": [2, 2, 1, 2]},
}


def load_bases() -> dict[str, dict[str, Any]]:
    """The parsed library specs of :data:`BASE_EDITS`, with those edits applied."""
    bases = {}
    for name, edits in BASE_EDITS.items():
        data = yaml.safe_load((SPECS / f"{name}.yaml").read_text(encoding="utf-8"))
        for key, value in edits.items():
            target = data
            *parents, last = key.split(".")
            for part in parents:
                target = target[part]
            if last in target or not parents:
                target[last] = value
        bases[name] = data
    return bases


BASES = load_bases()

# -- hostile material ------------------------------------------------------------------------
TEXT_FRAGMENTS = [
    '"""',
    "'''",
    '"',
    "'",
    "\\",
    "\\\n",
    '\\"""',
    '""""',
    "''''",
    '\\"',
    "\u2028",
    "\u2029",
    "\x85",
    "\x0c",
    "\x0b",
    "\x00",
    "\x1b[31m",
    "\r",
    "\r\n",
    "\n",
    "\n\n",
    "\t",
    " ",
    "\ud800",
    "\u200b",
    "\ufeff",
    "😀",
    "é",
    "{}",
    "{0}",
    "{i}",
    "{{",
    "}}",
    "%s",
    "%(x)s",
    "%",
    "{{ x }}",
    "{% if x %}",
    "{# c #}",
    "#",
    "\\N{BULLET}",
    "\\x41",
    "\\u0041",
    "\\n",
    f"{MARKER}()",
    f'"""; {MARKER}() #',
    f"'''; {MARKER}() #",
    f'"""\n{MARKER}()\n"""',
    f"\n{MARKER}()\n",
    f"\\\n{MARKER}()",
    f'\u2028{MARKER}() #"',
    f'\x85"""{MARKER}()',
    f"\r{MARKER}()",
    f'{{"a": {MARKER}()}}',
    "x" * 150,
    "y" * 97,
    "word " * 30,
    "a-very-long-hyphenated-" * 6,
    " " * 120,
]
INJECTIONS = [f for f in TEXT_FRAGMENTS if MARKER in f]
ENDINGS = ['"', "\\", "'", '"""', "'''", "\\\\", " \\", '\\"', "\n", "\u2028", ""]

HOSTILE_IDENTS = [
    # the emitted modules' imports, globals and helpers
    "nn",
    "torch",
    "F",
    "keras",
    "layers",
    "ops",
    "np",
    "numpy",
    "sys",
    "Any",
    "Sequence",
    "Mapping",
    "annotations",
    "build",
    "DEFAULTS",
    "INITIALISERS",
    "INPUT_SHAPE",
    "initializer",
    "depthwise_initializer",
    "fold_batchnorm",
    "load_plain_weights",
    "Subsample",
    "ChannelPad",
    "PadTo",
    "CropTo",
    "Crop",
    "GlobalPool",
    "PaddedConv2d",
    "PaddedMaxPooling2D",
    "PaddedAveragePooling2D",
    "BilinearUpSampling2D",
    "FoldedConv2D",
    "FoldedDepthwiseConv2D",
    "FoldedDense",
    "Bottleneck",
    "BasicBlock",
    "Basic",
    "DenseLayer",
    "Transition",
    "DoubleConv",
    "Down",
    "Up",
    "OutConv",
    "PreactBottleneck",
    "ConvBlock",
    "TransitionBlock",
    # builtins the generated code calls
    "range",
    "len",
    "int",
    "float",
    "tuple",
    "list",
    "dict",
    "set",
    "sorted",
    "isinstance",
    "max",
    "min",
    "sum",
    "abs",
    "round",
    "TypeError",
    "ceil",
    "floor",
    "make_divisible",
    "regnet_stages",
    "math",
    "ValueError",
    "hasattr",
    "getattr",
    "setattr",
    "type",
    "id",
    "str",
    "bool",
    "super",
    "self",
    "print",
    "cls",
    # locals and arguments of generated code
    "x",
    "out",
    "inputs",
    "input",
    "input_shape",
    "in_channels",
    "out_channels",
    "name",
    "params",
    "unknown",
    "kwargs",
    "args",
    "config",
    "i",
    "n",
    "k",
    "t",
    "block",
    "value",
    "stride",
    "planes",
    "state_dict",
    "prefix",
    "module",
    "model",
    "plain",
    "layer",
    "weights",
    # nn.Module members and Keras API
    "forward",
    "train",
    "eval",
    "to",
    "cuda",
    "cpu",
    "half",
    "double",
    "apply",
    "modules",
    "children",
    "parameters",
    "buffers",
    "training",
    "add_module",
    "register_buffer",
    "register_module",
    "get_submodule",
    "zero_grad",
    "requires_grad_",
    "dump_patches",
    "T_destination",
    "FOLDED_BN",
    "call",
    "get_config",
    "compute_output_shape",
    "Model",
    "Input",
    "Layer",
    "Sequential",
    # spec-language words
    "when",
    "repeat",
    "child_name",
    "otherwise",
    "concat",
    "add",
    "conv",
    "relu",
    "same",
    "valid",
    "true",
    "none",
    "None",
    "True",
    "nan",
    "inf",
    "A",
    "_x",
    "x_",
    "x__1",
    "a" * 64,
    "a" * 65,
    "Zz9",
]
TEMPLATES = [
    "{i}",
    "{i + 1}",
    "x{i}",
    "{i}x",
    "0{i}",
    "{n - i}",
    "{i * 0}",
    "{i}{i}",
    "{i}_{n}",
    "layer",
    "forward{i}",
    "to",
    "block{i}",
    "{i // 2}",
    "{(i + 1) % 2}",
    "{-i}",
    "{i - 1}",
    "{ i }",
    "{",
    "}",
    "{}",
    "{{i}}",
    "{i}}",
    "a/b",
    "a.b",
    "a b",
    "{i / 2}",
    "{i ** 2}",
    "{x}",
    "{planes}",
    '{"a"}',
    "{__import__}",
    "1_conv",
    "0_conv",
    "conv1",
    "out",
    "predictions",
    "input",
    "x" * 130,
]
NUMBERS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    0,
    -1,
    1,
    2,
    3,
    2**31,
    2**63,
    10**30,
    True,
    False,
    0.5,
    1.0,
    3.0,
    -0.0,
    1e308,
    1e-320,
    None,
    [],
    [1, 2],
    [3, 3],
    [1, 2, 3, 4],
    {},
    "",
    "1e309",
    "2 ** 64",
    "0.5",
    "nan",
    "inf",
    "1 // 0",
    "-0",
    "True",
    "true",
    "3.0",
    "same",
    "valid",
    "(1, 2)",
    "[1, 2]",
    "not 0",
    "1 if i == 0 else 2",
]
SHAPES: list[Any] = [[3, 8, 8], [1, 1, 1], [3, 32], [3], [3, 33, 31], [3, 0, 32], [3, 32, 32.5]]
FILE_STEMS = [
    'q"""q',
    "q'''q",
    "q\\",
    "back\\slash",
    "sp ace",
    "é😀",
    "{x}",
    "%s",
    "a$b",
    "-dash",
    "q\u2028q",
    "q\x85q",
    "a" * 100,
]
# keys whose string values are names or prose, not expressions
NON_EXPR_KEYS = {
    "name",
    "inputs",
    "otherwise",
    "doc",
    "op",
    "block",
    "group",
    "mode",
    "description",
    "reference",
    "output",
    "extends",
    "version",
}


def hostile_text(rng: random.Random) -> str:
    """A description/doc string built from quote, backslash, separator and injection bits."""
    parts = [rng.choice(TEXT_FRAGMENTS) for _ in range(rng.randint(1, 6))]
    words = ["plain", "text", "ok", MARKER + "_word"]
    for _ in range(rng.randint(0, 3)):
        parts.insert(rng.randint(0, len(parts)), rng.choice(words))
    if rng.random() < 0.5:
        parts.insert(rng.randint(0, len(parts)), rng.choice(INJECTIONS))
    text = "".join(parts) + rng.choice(ENDINGS)
    if rng.random() < 0.1:
        text = text * rng.randint(2, 5)
    return text


# -- walking a spec ---------------------------------------------------------------------------
def get(data: Any, path: PathKey) -> Any:
    """The value at ``path``."""
    for part in path:
        data = data[part]
    return data


def all_paths(data: Any, prefix: PathKey = ()) -> list[PathKey]:
    """Every path in a tree of dicts and lists (the root included)."""
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += all_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += all_paths(value, (*prefix, index))
    return out


def scopes(data: dict[str, Any]) -> list[PathKey]:
    """Paths of the body lists that are scopes: the model body and each block's body."""
    out: list[PathKey] = [("body",)] if isinstance(data.get("body"), list) else []
    blocks = data.get("blocks")
    if isinstance(blocks, dict):
        out += [
            ("blocks", b, "body")
            for b, t in blocks.items()
            if isinstance(t, dict) and isinstance(t.get("body"), list)
        ]
    return out


def nodes_in(body: Any, prefix: PathKey) -> Iterator[PathKey]:
    """Paths of the node dicts of a body, groups' bodies included."""
    if not isinstance(body, list):
        return
    for index, node in enumerate(body):
        if isinstance(node, dict):
            yield (*prefix, index)
            if "group" in node:
                yield from nodes_in(node.get("body"), (*prefix, index, "body"))


def all_nodes(data: dict[str, Any]) -> list[PathKey]:
    """Paths of every node dict of the spec."""
    return [p for scope in scopes(data) for p in nodes_in(get(data, scope), scope)]


def camel(name: str) -> str:
    """The class name emitters derive from a snake-case name."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Block"


def substitute(value: Any, old: str, new: str, key: Any = None) -> Any:
    """``value`` with the whole word ``old`` replaced by ``new`` in every expression string
    (not in names or prose)."""
    if isinstance(value, dict):
        return {k: substitute(v, old, new, k) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, old, new, key) for v in value]
    if isinstance(value, str) and key not in NON_EXPR_KEYS:
        return re.sub(rf"(?<![A-Za-z0-9_]){re.escape(old)}(?![A-Za-z0-9_])", new, value)
    return value


def rename_key(mapping: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``mapping`` with key ``old`` renamed in place of order."""
    return {(new if k == old else k): v for k, v in mapping.items()}


def rename_refs(body: Any, old: str, new: str) -> None:
    """Rename the node ``old`` (its ``name``/``group``) and every reference to it in a body."""
    if not isinstance(body, list):
        return
    for node in body:
        if not isinstance(node, dict):
            continue
        for key in ("name", "group", "otherwise"):
            if node.get(key) == old:
                node[key] = new
        inputs = node.get("inputs")
        if inputs == old:
            node["inputs"] = new
        elif isinstance(inputs, list):
            node["inputs"] = [new if v == old else v for v in inputs]
        if "group" in node:
            rename_refs(node.get("body"), old, new)


def _utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- mutations --------------------------------------------------------------------------------
@dataclass
class Case:
    """One mutant: its seed, base, data, file name and format, and what was done to it."""

    seed: int
    base: str
    data: Any
    fmt: str = "yaml"
    stem: str = "fuzz"
    ascii_only: bool = False
    optimize: bool = False
    overrides: dict[str, Any] | None = None
    steps: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The mutant as file text (YAML or JSON), encodable as UTF-8."""
        if self.fmt == "json":  # ensure_ascii escapes a lone surrogate
            text = json.dumps(self.data, ensure_ascii=self.ascii_only, indent=1)
            return text if _utf8(text) else json.dumps(self.data, indent=1)
        options = {"allow_unicode": not self.ascii_only, "sort_keys": False, "width": 80}
        try:
            text = yaml.dump(self.data, Dumper=DUMPER, **options)
        except UnicodeEncodeError:  # libyaml refuses lone surrogates; PyYAML escapes them
            text = yaml.dump(self.data, Dumper=yaml.SafeDumper, **options)
        return (
            text
            if _utf8(text)
            else yaml.safe_dump(self.data, **{**options, "allow_unicode": False})
        )

    def write(self, directory: Path) -> Path:
        """Write the mutant into ``directory``; its path."""
        path = directory / f"{self.stem}.{self.fmt}"
        path.write_bytes(self.text().encode("utf-8"))
        return path


class Mutator:
    """Draws mutations of a spec's parsed data from a seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, items: list[Any]) -> Any:
        """A random element (None when there is none)."""
        return self.rng.choice(items) if items else None

    def ident(self, data: dict[str, Any]) -> str:
        """A Python-hostile identifier, or one equal to a name the spec or emitters use."""
        dynamic = [camel(str(data.get("name", "x")))]
        blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
        dynamic += [camel(str(b)) for b in blocks] + [str(b) for b in blocks]
        for path in all_nodes(data):
            node = get(data, path)
            label = node.get("name") or node.get("group")
            if isinstance(label, str):
                dynamic += [label, f"{label}_channels", f"{label}_{0}"]
        if isinstance(data.get("params"), dict):
            dynamic += list(data["params"])
        if isinstance(data.get("let"), dict):
            dynamic += list(data["let"])
        return self.rng.choice(HOSTILE_IDENTS if self.rng.random() < 0.6 else dynamic)

    # each mutation edits ``data`` in place and returns a label, or None when not applicable
    def text(self, data: dict[str, Any]) -> str | None:
        """Hostile text in a description, reference, block doc or node doc."""
        targets: list[PathKey] = [("description",), ("reference",)]
        blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
        targets += [("blocks", b, "doc") for b in blocks if isinstance(blocks[b], dict)]
        if self.rng.random() < 0.3:  # node docs: many, but no emitter writes them (yet)
            targets = [(*p, "doc") for p in all_nodes(data)] or targets
        path = self.pick(targets)
        value = hostile_text(self.rng)
        get(data, path[:-1])[path[-1]] = value
        return f"text {'.'.join(map(str, path))} = {value!r}"

    def rename_param(self, data: dict[str, Any], new: str | None = None) -> str | None:
        """Rename a model param or let, and every expression reading it."""
        kind = self.rng.choice(["params", "let"])
        table = data.get(kind)
        if not isinstance(table, dict) or not table:
            kind, table = "params", data.get("params")
            if not isinstance(table, dict) or not table:
                return None
        old, new = self.pick(list(table)), new or self.ident(data)
        renamed = substitute(data, old, new)
        renamed[kind] = rename_key(renamed[kind], old, new)
        data.clear()
        data.update(renamed)
        return f"rename {kind}.{old} -> {new}"

    def rename_block_param(self, data: dict[str, Any], new: str | None = None) -> str | None:
        """Rename a block's param or let, inside the block and at its call sites."""
        blocks = data.get("blocks")
        if not isinstance(blocks, dict):
            return None
        candidates = [
            (b, kind, p)
            for b, t in blocks.items()
            if isinstance(t, dict)
            for kind in ("params", "let")
            if isinstance(t.get(kind), dict)
            for p in t[kind]
        ]
        if not candidates:
            return None
        block, kind, old = self.pick(candidates)
        new = new or self.ident(data)
        template = substitute(blocks[block], old, new)
        template[kind] = rename_key(template[kind], old, new)
        blocks[block] = template
        for path in all_nodes(data):
            node = get(data, path)
            if node.get("block") == block and isinstance(node.get("args"), dict):
                node["args"] = rename_key(node["args"], old, new)
        return f"rename blocks.{block}.{kind}.{old} -> {new}"

    def rename_node(self, data: dict[str, Any]) -> str | None:
        """Rename (or name) a node or group, and the references to it in its scope."""
        scope = self.pick(scopes(data))
        if scope is None:
            return None
        paths = list(nodes_in(get(data, scope), scope))
        path = self.pick(paths)
        if path is None:
            return None
        node = get(data, path)
        new = self.ident(data)
        old = node.get("group") if "group" in node else node.get("name")
        if not isinstance(old, str):
            node["name"] = new
            return f"name {'.'.join(map(str, path))} = {new}"
        rename_refs(get(data, scope), old, new)
        if scope[0] == "blocks" and get(data, scope[:-1]).get("output") == old:
            get(data, scope[:-1])["output"] = new
        return f"rename node {old} -> {new} in {'.'.join(map(str, scope))}"

    def rename_block_input(self, data: dict[str, Any]) -> str | None:
        """Rename one of a block's inputs (``input`` by default) and the reads of it."""
        blocks = data.get("blocks")
        if not isinstance(blocks, dict) or not blocks:
            return None
        block = self.pick(list(blocks))
        template = blocks[block]
        if not isinstance(template, dict):
            return None
        inputs = template.get("inputs", ["input"])
        if not isinstance(inputs, list) or not inputs:
            return None
        old, new = self.pick(inputs), self.ident(data)
        template["inputs"] = [new if v == old else v for v in inputs]
        rename_refs(template.get("body"), old, new)
        return f"rename blocks.{block}.inputs {old} -> {new}"

    def rename_block(self, data: dict[str, Any]) -> str | None:
        """Rename a block template and its uses."""
        blocks = data.get("blocks")
        if not isinstance(blocks, dict) or not blocks:
            return None
        old, new = self.pick(list(blocks)), self.ident(data)
        data["blocks"] = rename_key(blocks, old, new)
        for path in all_nodes(data):
            node = get(data, path)
            if node.get("block") == old:
                node["block"] = new
        return f"rename block {old} -> {new}"

    def rename_spec(self, data: dict[str, Any]) -> str | None:
        """Rename the spec (its model class)."""
        data["name"] = self.ident(data)
        return f"name = {data['name']}"

    def template(self, data: dict[str, Any]) -> str | None:
        """Set a ``child_name`` or a ``names:`` template on a node."""
        path = self.pick(all_nodes(data))
        if path is None:
            return None
        node = get(data, path)
        value = self.rng.choice(TEMPLATES)
        if "block" in node and self.rng.random() < 0.5:
            node["child_name"] = value
            if "repeat" not in node and self.rng.random() < 0.5:
                node["repeat"] = self.rng.choice([1, 2, "2"])
            return f"child_name {'.'.join(map(str, path))} = {value!r}"
        backend = self.rng.choice(["keras", "keras", "torch", "tf", "Keras"])
        names = node.get("names") if isinstance(node.get("names"), dict) else {}
        node["names"] = {**names, backend: value}
        return f"names {'.'.join(map(str, path))} = {{{backend}: {value!r}}}"

    def number(self, data: dict[str, Any]) -> str | None:
        """An edge value where a number, bool or expression stands."""
        if self.rng.random() < 0.1:
            data["input_shape"] = copy.deepcopy(self.rng.choice(SHAPES))
            return f"input_shape = {data['input_shape']}"
        paths = [
            p
            for p in all_paths(data)
            if p
            and not isinstance(p[-1], int)
            and p[-1] not in NON_EXPR_KEYS
            and p[-1] not in ("names", "child_name", "version")
            and (
                isinstance(get(data, p), int | float | bool)
                or (isinstance(get(data, p), str) and p[0] != "description")
            )
        ]
        path = self.pick(paths)
        if path is None:
            return None
        value = copy.deepcopy(self.rng.choice(NUMBERS))
        get(data, path[:-1])[path[-1]] = value
        return f"value {'.'.join(map(str, path))} = {value!r}"

    def expr_paths(self, data: dict[str, Any]) -> list[PathKey]:
        """Paths of the int-valued or expression fields of nodes, args, params and lets."""
        return [
            p
            for p in all_paths(data)
            if len(p) > 1
            and p[0] in ("body", "blocks", "params", "let")
            and not isinstance(p[-1], int)
            and p[-1] not in NON_EXPR_KEYS
            and p[-1] not in ("names", "child_name", "doc", "when", "init", "body")
            and not isinstance(get(data, p), bool)
            and isinstance(get(data, p), int | str)
        ]

    def call(self, data: dict[str, Any]) -> str | None:
        """Wrap an expression in a call the evaluator allows (``max(out, 1)``...), and often
        give a param or let that function's name, so the emitted call could hit it."""
        path = self.pick(self.expr_paths(data))
        if path is None:
            return None
        old = get(data, path)
        func = self.rng.choice(
            ["max", "min", "abs", "int", "round", "sum", "len", "ceil", "floor", "make_divisible"]
        )
        wrapped = {
            "max": f"max({old}, 1)",
            "min": f"min({old}, 2 ** 20)",
            "sum": f"sum([{old}, 0])",
            "len": f"{old} + len([]) * 0",
            "make_divisible": f"make_divisible({old}, 1)",
        }.get(func, f"{func}({old})")
        get(data, path[:-1])[path[-1]] = wrapped
        label = f"value {'.'.join(map(str, path))} = {wrapped!r}"
        if self.rng.random() < 0.7:
            rename = self.rename_param if self.rng.random() < 0.5 else self.rename_block_param
            renamed = rename(data, func)
            label += f"; {renamed}" if renamed else ""
        return label

    def string(self, data: dict[str, Any]) -> str | None:
        """A quoted hostile string as a param default, block param default or arg value."""
        targets: list[PathKey] = [("params", k) for k in data.get("params") or {}]
        blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
        targets += [
            ("blocks", b, "params", k)
            for b, t in blocks.items()
            if isinstance(t, dict) and isinstance(t.get("params"), dict)
            for k in t["params"]
        ]
        for path in all_nodes(data):
            args = get(data, path).get("args")
            if isinstance(args, dict):
                targets += [(*path, "args", k) for k in args]
        reader: PathKey | None = None
        if self.rng.random() < 0.5:  # a new param, read by a ``when`` that always holds
            key = self.rng.choice(["label", "tag", self.ident(data)])
            if blocks and self.rng.random() < 0.5:
                block = self.pick(list(blocks))
                if isinstance(blocks[block], dict):
                    if not isinstance(blocks[block].get("params"), dict):
                        blocks[block]["params"] = {}
                    targets = [("blocks", block, "params", key)]
                    reader = ("blocks", block, "body")
            else:
                if not isinstance(data.get("params"), dict):
                    data["params"] = {}
                targets = [("params", key)]
                reader = ("body",)
            nodes = list(nodes_in(get(data, reader), reader)) if reader else []
            node = get(data, self.pick(nodes)) if nodes else {}
            if "when" not in node and "group" not in node:
                node["when"] = f"{key} == {key}"
        path = self.pick(targets)
        if path is None:
            return None
        text = hostile_text(self.rng)[:200]
        value = repr(text) if self.rng.random() < 0.7 else f"{text!r} if True else 'b'"
        get(data, path[:-1])[path[-1]] = value
        return f"value {'.'.join(map(str, path))} = {value!r}"

    def structural(self, data: dict[str, Any]) -> str | None:
        """``test_fuzz.py``'s kinds: delete, replace, duplicate, rename a key, wrap."""
        path = self.pick([p for p in all_paths(data) if p])
        if path is None:
            return None
        action = self.rng.choice(["delete", "replace", "duplicate", "rename", "wrap"])
        parent, last = get(data, path[:-1]), path[-1]
        label = f"{action} {'.'.join(map(str, path))}"
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = self.value()
            label += f" = {parent[last]!r}"
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        elif action == "rename" and isinstance(parent, dict):
            new = self.rng.choice([self.ident(data), "k", "", "é", "a b", hostile_text(self.rng)])
            parent[new] = parent.pop(last)
            label += f" -> {new!r}"
        elif action == "wrap":
            parent[last] = [parent[last]]
        else:
            return None
        return label

    def value(self, depth: int = 0) -> Any:
        """A random scalar, list or dict (``test_fuzz.py``'s VALUES, drawn by hand)."""
        roll = self.rng.random()
        if depth < 2 and roll < 0.1:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        if depth < 2 and roll < 0.2:
            return {self.ident({}): self.value(depth + 1) for _ in range(self.rng.randint(0, 2))}
        if roll < 0.5:
            return copy.deepcopy(self.rng.choice(NUMBERS))
        if roll < 0.7:
            return self.rng.choice(HOSTILE_IDENTS)
        return self.rng.choice(
            ["planes * 4", "__import__('os')", "().__class__", "depths[9]", "a" * 600, "{i}"]
        )

    KINDS: tuple[tuple[str, int], ...] = (
        ("text", 22),
        ("rename_param", 12),
        ("rename_block_param", 10),
        ("rename_node", 12),
        ("rename_block", 8),
        ("rename_block_input", 5),
        ("rename_spec", 5),
        ("template", 12),
        ("number", 12),
        ("structural", 7),
        ("call", 6),
        ("string", 5),
    )

    def mutate(self, data: dict[str, Any]) -> list[str]:
        """Apply one to three mutations to ``data``; their labels."""
        kinds, weights = zip(*self.KINDS, strict=True)
        steps = []
        for _ in range(self.rng.choice([1, 1, 2, 2, 3])):
            kind = self.rng.choices(kinds, weights)[0]
            label = getattr(self, kind)(data)
            if label:
                steps.append(label)
        return steps


# -- a systematic sweep: every hostile identifier in every kind of name ----------------------
TINY = yaml.safe_load(
    """
version: 1
name: tiny
description: every kind of name the emitters turn into code
input_shape: [3, 8, 8]
params: {width: 4, depth: 2}
let: {wide: "max(width * 2, ceil(width / 2))"}
blocks:
  unit:
    doc: a residual unit
    params: {planes: null, stride: 1}
    let: {mid: "make_divisible(floor(planes / 2), 1)"}
    body:
      - {op: conv, name: conv1, out: mid, kernel: 3, stride: stride, padding: 1}
      - {op: bn, name: bn1}
      - {op: relu, name: act}
      - {op: conv, name: conv2, out: planes, kernel: 1}
      - group: proj
        inputs: input
        when: stride != 1 or in_channels != planes
        body:
          - {op: conv, out: planes, kernel: 1, stride: stride}
          - {op: bn}
      - {op: add, name: merge, inputs: [conv2, proj]}
      - {block: head, name: post}
  head:
    body:
      - {op: relu, name: act}
  pair:
    inputs: [left, right]
    body:
      - {op: concat, name: cat, inputs: [left, right]}
body:
  - {op: conv, name: stem, out: width, kernel: 3, padding: 1}
  - {block: unit, name: stage, repeat: depth, args: {planes: wide, stride: "2 if i == 0 else 1"}}
  - {block: unit, name: side, inputs: stem, args: {planes: wide, stride: 2}}
  - {block: pair, name: join, inputs: [stage, side]}
  - {op: global_avgpool, name: pool}
  - {op: flatten}
  - {op: linear, name: fc, out: 10}
"""
)
SWEEP_KINDS = (
    "param",
    "let",
    "block_param",
    "block_let",
    "block_input",
    "block_node",
    "group",
    "node",
    "stage",
    "block",
    "inner_block",
    "spec",
)


def sweep_rename(data: dict[str, Any], kind: str, new: str) -> dict[str, Any]:
    """``TINY`` with one name of ``kind`` renamed to ``new`` consistently."""
    data = copy.deepcopy(data)
    unit = data["blocks"]["unit"]
    if kind in ("param", "let"):
        old = {"param": "width", "let": "wide"}[kind]
        data = substitute(data, old, new)
        table = "params" if kind == "param" else "let"
        data[table] = rename_key(data[table], old, new)
    elif kind in ("block_param", "block_let"):
        old = {"block_param": "planes", "block_let": "mid"}[kind]
        table = "params" if kind == "block_param" else "let"
        unit = data["blocks"]["unit"] = substitute(unit, old, new)
        unit[table] = rename_key(unit[table], old, new)
        for node in data["body"]:
            if node.get("block") == "unit":
                node["args"] = rename_key(node["args"], old, new)
    elif kind == "block_input":
        pair = data["blocks"]["pair"]
        pair["inputs"] = [new, "right"]
        rename_refs(pair["body"], "left", new)
    elif kind in ("block_node", "group"):
        rename_refs(unit["body"], {"block_node": "conv1", "group": "proj"}[kind], new)
        unit["body"][0]["name"] = new if kind == "block_node" else "conv1"
    elif kind in ("node", "stage"):
        rename_refs(data["body"], {"node": "stem", "stage": "stage"}[kind], new)
    elif kind in ("block", "inner_block"):
        old = "unit" if kind == "block" else "head"
        data["blocks"] = rename_key(data["blocks"], old, new)
        for node in [*data["body"], *data["blocks"][new if old == "unit" else "unit"]["body"]]:
            if node.get("block") == old:
                node["block"] = new
    elif kind == "spec":
        data["name"] = new
    return data


def sweep_names() -> list[str]:
    """Every hostile identifier, and the class and variable names ``TINY``'s code holds."""
    extra = [
        "Tiny",
        "Unit",
        "Pair",
        "Head",
        "unit",
        "pair",
        "head",
        "post",
        "stage_channels",
        "side_channels",
        "join",
    ]
    return list(dict.fromkeys([*HOSTILE_IDENTS, *extra]))


def sweep_case(index: int) -> Case:
    """The ``index``-th sweep case: the names in turn, each round shifting the kinds, so the
    first ``len(sweep_names()) * len(SWEEP_KINDS)`` indices hold every (name, kind) pair once
    and any stride coprime with that total spreads each name over several kinds."""
    names = sweep_names()
    name = names[index % len(names)]
    kind = SWEEP_KINDS[(index // len(names) + index % len(names)) % len(SWEEP_KINDS)]
    data = sweep_rename(TINY, kind, name)
    return Case(index, "tiny", data, optimize=index % 5 == 0, steps=[f"sweep {kind} -> {name}"])


def make_case(seed: int) -> Case:
    """The mutant of ``seed`` (deterministic)."""
    rng = random.Random(seed)
    base = rng.choice(sorted(BASES))
    data = copy.deepcopy(BASES[base])
    steps = Mutator(rng).mutate(data)
    case = Case(seed, base, data, steps=steps)
    case.fmt = "json" if rng.random() < 0.2 else "yaml"
    case.ascii_only = rng.random() < 0.3
    case.optimize = rng.random() < 0.1
    if rng.random() < 0.08:
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        key = rng.choice([*params, "input_shape", "x"])
        value = rng.choice([*NUMBERS, hostile_text(rng), repr(hostile_text(rng)), [3, 16, 16]])
        case.overrides = {key: copy.deepcopy(value)}
        case.steps.append(f"overrides {case.overrides!r}")
    if rng.random() < 0.1:
        case.stem = rng.choice(FILE_STEMS)
        case.steps.append(f"file name {case.stem!r}")
    return case


# -- the oracle -------------------------------------------------------------------------------
ALLOWED_IMPORTS = {
    "from __future__ import annotations",
    "import sys",
    "from collections.abc import Sequence",
    "from collections.abc import Mapping, Sequence",
    "from typing import Any",
    "from math import ceil",
    "from math import floor",
    "from math import ceil, floor",
    "import torch",
    "import torch.nn.functional as F",
    "from torch import nn",
    "import keras",
    "import numpy as np",
    "from keras import layers",
}
ALLOWED_ASSIGNS = {"DEFAULTS", "INPUT_SHAPE", "INITIALISERS"}
LITERAL_ASSIGNS = {"DEFAULTS", "INPUT_SHAPE"}
ALLOWED_CALLS = {"sys.setrecursionlimit(max(sys.getrecursionlimit(), {}))"}
ALLOWED_BASES = {
    "nn.Module",
    "nn.Conv2d",
    "nn.LayerNorm",
    "layers.Layer",
    "layers.Conv2D",
    "layers.DepthwiseConv2D",
    "layers.Dense",
    "layers.Normalization",
}
ALLOWED_DECORATORS = {"keras.saving.register_keras_serializable(package='rescompiler')"}
# nn.Module's public members (test_identifiers checks the list against dir(nn.Module)): a
# submodule attribute with one of these names is shadowed by the method or breaks train()
NN_MODULE_MEMBERS = TORCH_MODULE_ATTRIBUTES
BUILTINS = frozenset(dir(builtins))
# the templates' helpers (backends/*/templates): their arguments are never spec values
HELPER_CLASSES = frozenset(
    [
        *("Crop", "CropTo", "PadTo", "Subsample", "ChannelPad", "GlobalPool", "PaddedConv2d"),
        *("PaddedMaxPooling2D", "PaddedAveragePooling2D", "BilinearUpSampling2D"),
        *("FoldedConv2D", "FoldedDepthwiseConv2D", "FoldedDense"),
        *("Reduce", "LayerNorm2d", "Permute", "DropPath", "LayerScale"),
    ]
)
HELPER_FUNCTIONS = frozenset(
    [
        *("_pair", "initializer", "depthwise_initializer", "fold_batchnorm"),
        *("load_plain_weights", "make_divisible"),
        *("_uniform_fan_out", "_kaiming_truncated_normal", "regnet_stages"),
    ]
)


def _bound_names(stmt: ast.stmt) -> list[str]:
    """Names a top-level statement binds."""
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            return []
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    if isinstance(stmt, ast.FunctionDef | ast.ClassDef):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _snippet(stmt: ast.stmt) -> str:
    """The first line of a statement's source, for a message."""
    return f"line {stmt.lineno}: {ast.unparse(stmt).splitlines()[0][:100]}"


def _top_level(tree: ast.Module) -> list[str]:
    """Problems with the module's top-level statements: only a docstring, known imports,
    known assignments of literals, class and function definitions may stand there."""
    problems = []
    for index, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.Expr):
            if index == 0 and isinstance(stmt.value, ast.Constant):
                if not isinstance(stmt.value.value, str):
                    problems.append(f"top-level: non-string module docstring: {_snippet(stmt)}")
                continue
            shape = re.sub(r"\d[\d_]*", "{}", ast.unparse(stmt))
            if shape not in ALLOWED_CALLS:
                problems.append(f"top-level: expression statement: {_snippet(stmt)}")
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            if ast.unparse(stmt) not in ALLOWED_IMPORTS:
                problems.append(f"top-level: unexpected import: {_snippet(stmt)}")
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            names = _bound_names(stmt)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if len(targets) != 1 or not isinstance(targets[0], ast.Name) or not names:
                problems.append(f"top-level: unexpected assignment: {_snippet(stmt)}")
            elif names[0] not in ALLOWED_ASSIGNS:
                problems.append(f"top-level: unexpected global {names[0]}: {_snippet(stmt)}")
            elif names[0] in LITERAL_ASSIGNS and stmt.value is not None:
                try:
                    ast.literal_eval(stmt.value)
                except (ValueError, TypeError, SyntaxError, RecursionError):
                    problems.append(f"top-level: {names[0]} is not a literal: {_snippet(stmt)}")
        elif isinstance(stmt, ast.ClassDef):
            for base in stmt.bases:
                if ast.unparse(base) not in ALLOWED_BASES:
                    problems.append(f"top-level: class {stmt.name} has base {ast.unparse(base)}")
            if stmt.keywords:
                problems.append(f"top-level: class {stmt.name} has keywords")
            for deco in stmt.decorator_list:
                if ast.unparse(deco) not in ALLOWED_DECORATORS:
                    problems.append(
                        f"top-level: class {stmt.name} has decorator {ast.unparse(deco)}"
                    )
        elif isinstance(stmt, ast.FunctionDef):
            if stmt.decorator_list:
                problems.append(f"top-level: function {stmt.name} has decorators")
        else:
            problems.append(f"top-level: unexpected {type(stmt).__name__}: {_snippet(stmt)}")
    seen: dict[str, int] = {}
    for stmt in tree.body:
        for name in _bound_names(stmt):
            seen[name] = seen.get(name, 0) + 1
    problems += [f"rebound-global: {name!r} bound {k} times" for name, k in seen.items() if k > 1]
    return problems


def _injected(nodes: list[ast.AST], source: str) -> list[str]:
    """Identifiers that came from hostile text (they hold :data:`MARKER`)."""
    found: set[str] = set()
    if MARKER not in source:
        return []
    for node in nodes:
        for attr in ("id", "attr", "arg", "name", "asname", "module"):
            value = getattr(node, attr, None)
            if isinstance(value, str) and MARKER in value:
                found.add(f"{type(node).__name__} {value}")
    return [f"injected: code from spec text: {item}" for item in sorted(found)]


class _Scope(ast.NodeVisitor):
    """The locals of one function scope, how often each is assigned, and the names it calls,
    reads attributes from or indexes, without descending into nested functions, lambdas, classes or
    comprehensions."""

    def __init__(self) -> None:
        self.locals: set[str] = set()
        self.stores: dict[str, int] = {}
        self.called: set[str] = set()
        self.dereferenced: set[str] = set()
        self.guarded: str | None = None
        self.inner: set[str] = set()  # nested functions and classes: local on purpose

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        """A nested function: its name is local here; its body is another scope."""
        self.locals.add(node.name)
        self.inner.add(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        """A lambda is another scope."""

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """A nested class is another scope."""
        self.locals.add(node.name)
        self.inner.add(node.name)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        """A comprehension is another scope."""

    visit_SetComp = visit_GeneratorExp = visit_DictComp = visit_ListComp  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        """``if p is None: p = ...`` fills in a param's default: not an overwrite."""
        test = node.test
        guarded = (
            test.left.id
            if isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Is)
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None
            else None
        )
        self.visit(node.test)
        outer, self.guarded = self.guarded, guarded
        for stmt in node.body:
            self.visit(stmt)
        self.guarded = outer
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Name(self, node: ast.Name) -> None:
        """Stores make locals."""
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.locals.add(node.id)
            if node.id != self.guarded:
                self.stores[node.id] = self.stores.get(node.id, 0) + 1

    def visit_Call(self, node: ast.Call) -> None:
        """``f(...)``: names called."""
        if isinstance(node.func, ast.Name):
            self.called.add(node.func.id)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """``m.attr``: names dereferenced."""
        if isinstance(node.value, ast.Name):
            self.dereferenced.add(node.value.id)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        """``m[key]``: names dereferenced."""
        if isinstance(node.value, ast.Name):
            self.dereferenced.add(node.value.id)
        self.generic_visit(node)


def _shadowing(
    tree: ast.Module, nodes: list[ast.AST], values: frozenset[str] = frozenset()
) -> list[str]:
    """Locals that hide a global their function means: a module function or class it calls
    (a block named ``inputs`` called where ``inputs`` is the model's input), an import or
    global it dereferences (a param named ``nn``, ``layers``, ``INITIALISERS``), a builtin it
    calls (``range``, ``max``); and spec params (``values``) or Keras' ``name`` prefix that the
    function taking them assigns over (with a tensor, a loop counter), except to fill in a
    default."""
    defined, imported = set(), set()
    for stmt in tree.body:
        names = _bound_names(stmt)
        (defined if isinstance(stmt, ast.FunctionDef | ast.ClassDef) else imported).update(names)
    helpers = {  # the templates' own code: takes no spec values
        id(node)
        for stmt in tree.body
        if (isinstance(stmt, ast.ClassDef) and stmt.name in HELPER_CLASSES)
        or (isinstance(stmt, ast.FunctionDef) and stmt.name in HELPER_FUNCTIONS)
        for node in ast.walk(stmt)
    }
    problems = set()
    for func in nodes:
        if not isinstance(func, ast.FunctionDef | ast.Lambda):
            continue
        scope = _Scope()
        a = func.args
        args = {
            arg.arg
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            if arg is not None
        }
        scope.locals |= args
        body = func.body if isinstance(func, ast.FunctionDef) else [func.body]
        for stmt in body:
            scope.visit(stmt)
        where = func.name if isinstance(func, ast.FunctionDef) else "lambda"
        hidden = {
            "function": (scope.locals - scope.inner) & scope.called & defined,
            "global": scope.locals & (scope.called | scope.dereferenced) & imported,
            "builtin": (scope.locals & scope.called & BUILTINS) - defined - imported,
        }
        for kind, names in hidden.items():
            for name in names:
                problems.add(f"shadow-{kind}: local {name!r} in {where}() hides the {kind}")
        tensors = {  # inputs of forward() and of Keras functions, not spec values
            arg.arg
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]
            if arg.annotation is not None and "Tensor" in ast.unparse(arg.annotation)
        }
        for name in (values | {"name"}) & (args - tensors) if id(func) not in helpers else ():
            if scope.stores.get(name, 0):
                problems.add(f"param-overwritten: {name!r} assigned over in {where}()")
    return sorted(problems)


def _torch_members(nodes: list[ast.AST]) -> list[str]:
    """Submodule attributes of generated nn.Modules that clash with nn.Module members."""
    problems = set()
    for node in nodes:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and target.attr in NN_MODULE_MEMBERS
            ):
                problems.add(f"nn-member: self.{target.attr} hides nn.Module.{target.attr}")
    return sorted(problems)


def _keras_names(nodes: list[ast.AST]) -> list[str]:
    """Keras layer names holding ``/``, which Keras 3 refuses when the layer is made."""
    problems = set()
    for node in nodes:
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg != "name":
                continue
            parts = keyword.value.values if isinstance(keyword.value, ast.JoinedStr) else []
            texts = [p.value for p in [keyword.value, *parts] if isinstance(p, ast.Constant)]
            if any(isinstance(t, str) and "/" in t for t in texts):
                problems.add(f"keras-name: layer name {ast.unparse(keyword.value)} holds '/'")
    return sorted(problems)


def _build_contract(tree: ast.Module) -> list[str]:
    """``build(**params)`` passes DEFAULTS' keys to the model: each must be an argument."""
    defaults: list[str] | None = None
    funcs = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef | ast.ClassDef)}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign | ast.Assign) and "DEFAULTS" in _bound_names(stmt):
            try:
                value = ast.literal_eval(stmt.value) if stmt.value is not None else None
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return []  # reported by _top_level
            defaults = list(value) if isinstance(value, dict) else None
    build = funcs.get("build")
    if defaults is None or not isinstance(build, ast.FunctionDef):
        return ["build-contract: no DEFAULTS dict or no build() function"]
    returns = [n for n in ast.walk(build) if isinstance(n, ast.Return)]
    target = None
    if returns and isinstance(returns[-1].value, ast.Call):
        func = returns[-1].value.func
        target = funcs.get(func.id) if isinstance(func, ast.Name) else None
    if isinstance(target, ast.ClassDef):
        target = next(
            (s for s in target.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"),
            None,
        )
    if not isinstance(target, ast.FunctionDef):
        return ["build-contract: build() does not return a call of the module's model"]
    a = target.args
    names = {arg.arg for arg in [*a.args, *a.kwonlyargs]}
    missing = [k for k in [*defaults, "input_shape"] if k not in names and a.kwarg is None]
    return [
        f"build-contract: build() passes {k!r}, which {target.name}() does not take"
        for k in missing
    ]


def check_module(
    source: str,
    filename: str = "<emitted>",
    values: frozenset[str] = frozenset(),
    params: dict[str, Any] | None = None,
) -> list[str]:
    """Every problem of an emitted module's source, found without running it: it compiles;
    its top level holds only a docstring, known imports, literal globals, classes and
    functions, each bound once; no identifier comes from spec text; no local hides a global
    the function uses; no spec param (``values``) assigned over; no torch submodule named
    like an nn.Module member; no Keras layer name with ``/``; ``build()``'s params reach the
    model; with ``params``, ``DEFAULTS`` lists exactly those params and values."""
    try:  # parse, then compile the tree: symbol-table errors (duplicate arguments...) too
        tree = ast.parse(source, filename)
        compile(tree, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte (Python 3.11)
        return [f"compile: {type(exc).__name__}: {exc}"]
    nodes = list(ast.walk(tree))
    problems = [
        *_top_level(tree),
        *_injected(nodes, source),
        *_shadowing(tree, nodes, values),
        *(_torch_members(nodes) if "from torch import nn" in source else []),
        *(_keras_names(nodes) if "from keras import layers" in source else []),
        *_build_contract(tree),
    ]
    if params is not None and not problems:
        problems = _defaults_problems(tree, params)
    return problems


# -- running a case ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """One thing wrong with a case: ``kind`` and a ``signature`` that deduplicates it."""

    kind: str
    signature: str
    detail: str


def _where(exc: BaseException) -> str:
    """``file:function`` of the innermost project frame that raised ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if str(ROOT) in f.filename and "/tests/" not in f.filename]
    if not frames:
        return "?"
    frame = (ours or frames)[-1]
    name = frame.filename.replace(str(ROOT) + "/", "")
    return f"{name}:{frame.name}"


def _message_shape(message: str) -> str:
    """A message with its variable parts (quoted text, numbers) blanked, to group failures."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message.splitlines()[0] if message else "")
    return re.sub(r"\d+", "N", message)[:100]


def check_error(err: rescompiler.SpecError, stage: str) -> list[Failure]:
    """A SpecError must list diagnostics, each with a file and on one line."""
    out = []
    if not err.diagnostics or not str(err):
        out.append(Failure("empty-diagnostics", f"{stage}:empty", repr(err)[:300]))
    for diag in err.diagnostics:
        text = str(diag)
        if not diag.location.file:
            out.append(Failure("diagnostic-without-file", f"{stage}:nofile", text[:300]))
        if len(text.splitlines()) != 1 or "\n" in text or "\r" in text:
            shape = _message_shape(diag.message)
            out.append(Failure("diagnostic-multiline", f"{stage}:multiline:{shape}", repr(text)))
    return out


def spec_values(model: Any) -> frozenset[str]:
    """Names of the spec's params, the model's and every block's, that no let rebinds and no
    block input shares (those are the spec's own doing, the same in every backend)."""
    params, others = set(model.params), set(model.let)
    for template in model.blocks.values():
        params |= set(template.params)
        others |= set(template.let) | set(template.inputs)
    return frozenset(params - others)


def run_case(case: Case, directory: Path) -> tuple[str, list[Failure]]:
    """Write the mutant into ``directory`` and :func:`run_file` it."""
    return run_file(case.write(directory), case.optimize, case.overrides)


def run_file(
    path: Path, optimize_too: bool = False, overrides: dict[str, Any] | None = None
) -> tuple[str, list[Failure]]:
    """Load a spec (with ``overrides``); if valid, emit and compile both backends' sources
    (with ``optimize_too`` the inference builds as well) and check them.

    Returns the outcome (``invalid``, ``emit-error`` or ``emitted``) and the failures.
    """
    try:
        spec = rescompiler.load_spec(path, overrides)
    except rescompiler.SpecError as err:
        return "invalid", check_error(err, "load")
    except Exception as exc:
        sig = f"load:{type(exc).__name__}:{_where(exc)}:{_message_shape(str(exc))}"
        return "invalid", [Failure("load-escape", sig, f"{type(exc).__name__}: {exc}"[:500])]
    failures: list[Failure] = []
    outcome = "emitted"
    values = spec_values(spec.model)
    variants = [("torch", None), ("keras", None)]
    if optimize_too:
        variants += [("torch", "inference"), ("keras", "inference")]
    for backend, optimize in variants:
        label = backend + (f"-{optimize}" if optimize else "")
        try:
            source = rescompiler.emit(spec, backend, optimize=optimize)
        except rescompiler.SpecError as err:
            outcome = "emit-error"
            failures += check_error(err, f"emit-{label}")
            continue
        except Exception as exc:
            sig = f"emit-{label}:{type(exc).__name__}:{_where(exc)}:{_message_shape(str(exc))}"
            detail = f"{type(exc).__name__}: {exc}"[:500]
            failures.append(Failure("emit-escape", sig, detail))
            continue
        for problem in check_module(source, f"<{label}>", values, spec.params):
            kind = problem.split(":")[0]
            failures.append(Failure(kind, f"{label}:{kind}", problem[:500]))
    return outcome, failures


def _tuples(value: Any) -> Any:
    """``value`` with lists as tuples (as emitted literals hold them)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def _defaults_problems(tree: ast.Module, params: dict[str, Any]) -> list[str]:
    """``DEFAULTS`` must list the spec's params, under their own names, with their values."""
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign | ast.Assign) and "DEFAULTS" in _bound_names(stmt):
            defaults = ast.literal_eval(stmt.value) if stmt.value is not None else None
            break
    else:
        return ["defaults: no DEFAULTS"]
    expected = {k: _tuples(v) for k, v in params.items()}
    if not isinstance(defaults, dict) or list(defaults) != list(expected):
        return [f"defaults: DEFAULTS keys {list(defaults or ())} != params {list(expected)}"]
    wrong = [
        k
        for k, v in expected.items()
        if _tuples(defaults[k]) != v or type(defaults[k]) is not type(v)
    ]
    return [f"defaults: DEFAULTS[{k!r}] = {defaults[k]!r} != param {expected[k]!r}" for k in wrong]


# -- minimising -------------------------------------------------------------------------------
def _candidates(data: Any) -> Iterator[Any]:
    """Smaller variants of ``data``: a key or item removed, a body cut, a string shortened."""
    for path in sorted(all_paths(data), key=len):
        if not path:
            continue
        parent, last = get(data, path[:-1]), path[-1]
        value = parent[last]
        trial = copy.deepcopy(data)
        del get(trial, path[:-1])[last]
        yield trial
        if isinstance(value, str) and len(value) > 1:
            for piece in (value[: len(value) // 2], value[len(value) // 2 :]):
                trial = copy.deepcopy(data)
                get(trial, path[:-1])[last] = piece
                yield trial
        if isinstance(value, list) and len(value) > 2:
            trial = copy.deepcopy(data)
            get(trial, path[:-1])[last] = value[: len(value) // 2]
            yield trial


def minimise(case: Case, signature: str, budget: float = 30.0) -> Case:
    """A smaller case failing with the same ``signature``, by greedy deletion (``budget`` s)."""
    deadline = time.monotonic() + budget
    best = copy.deepcopy(case)
    with tempfile.TemporaryDirectory() as tmp:

        def fails(trial: Case) -> bool:
            """Whether ``trial`` still fails with ``signature``."""
            _, failures = run_case(trial, Path(tmp))
            return any(f.signature == signature for f in failures)

        improved = True
        while improved and time.monotonic() < deadline:
            improved = False
            for data in _candidates(best.data):
                if time.monotonic() > deadline:
                    break
                trial = dataclasses.replace(best, data=data)
                if fails(trial):
                    best, improved = trial, True
                    break
        if best.stem != "fuzz":
            trial = dataclasses.replace(best, stem="fuzz")
            if fails(trial):
                best = trial
        if best.overrides:
            trial = dataclasses.replace(best, overrides=None)
            if fails(trial):
                best = trial
        if best.optimize:
            trial = dataclasses.replace(best, optimize=False)
            if fails(trial):
                best = trial
    return best


# -- exploring --------------------------------------------------------------------------------
def explore(
    seeds: range,
    on_case: Callable[[int, str, list[Failure]], None] | None = None,
    make: Callable[[int], Case] = make_case,
) -> dict[str, tuple[Failure, Case]]:
    """Run the cases of ``seeds``; the first failure and case of each distinct signature."""
    found: dict[str, tuple[Failure, Case]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            case = make(seed)
            sub = Path(tmp) / str(seed)
            sub.mkdir()
            outcome, failures = run_case(case, sub)
            for failure in failures:
                found.setdefault(failure.signature, (failure, case))
            if on_case:
                on_case(seed, outcome, failures)
    return found


def main(argv: list[str] | None = None) -> int:
    """Explore many seeds, minimise each distinct failure, write a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--report", type=Path, default=Path("fuzz_emit_report.json"))
    parser.add_argument("--no-minimise", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="every name in every kind")
    args = parser.parse_args(argv)
    if args.sweep:
        args.start, args.count = 0, len(sweep_names()) * len(SWEEP_KINDS)
    outcomes: dict[str, int] = {}
    started = time.monotonic()

    def tally(seed: int, outcome: str, failures: list[Failure]) -> None:
        """Count outcomes; report progress every 1,000 cases."""
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        done = sum(outcomes.values())
        if done % 1000 == 0:
            rate = done / (time.monotonic() - started)
            print(f"{done} cases, {rate:.0f}/s, {outcomes}", file=sys.stderr, flush=True)

    make = sweep_case if args.sweep else make_case
    found = explore(range(args.start, args.start + args.count), tally, make)
    report = []
    for signature, (failure, case) in sorted(found.items()):
        small = case if args.no_minimise else minimise(case, signature)
        report.append(
            {
                "signature": signature,
                "kind": failure.kind,
                "detail": failure.detail,
                "seed": case.seed,
                "base": case.base,
                "steps": case.steps,
                "file": f"{small.stem}.{small.fmt}",
                "optimize": small.optimize,
                "overrides": repr(small.overrides),
                "repro": small.text(),
            }
        )
    args.report.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"{sum(outcomes.values())} cases {outcomes}; {len(report)} distinct failures")
    for item in report:
        print(f"- [{item['kind']}] {item['signature']}\n  {item['detail'][:300]}")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
