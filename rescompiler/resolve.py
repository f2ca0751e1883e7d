"""Resolve a spec file: follow ``extends`` (deep merge, child wins, then the child's ``edit``
of nodes by name and the inheritance rule of :mod:`rescompiler.edit`), validate with pydantic
(every error mapped back to file:line:col and spec path), apply param overrides, evaluate
``let`` values and the input shape."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .edit import ARCHITECTURE_KEYS, apply_edits, apply_inheritance
from .errors import Diagnostic, DiagnosticSink, Location, SpecError, format_path
from .expr import MAX_INT, ExprError, evaluate, suggest
from .library import close_names, library_spec
from .loader import (
    MAX_DEPTH,
    LoadedDocument,
    PathKey,
    load_document,
    not_regular_reason,
    os_error_reason,
)
from .schema import NODE_TAGS, OP_NAMES, BlockTemplate, SpecModel

MAX_EXTENDS_DEPTH = 16


def _merge(
    base: Any,
    child: Any,
    base_pos: dict[PathKey, Location],
    child_pos: dict[PathKey, Location],
    path: PathKey,
) -> Any:
    """Deep-merge mappings (child wins); lists and scalars are replaced whole."""
    if isinstance(base, dict) and isinstance(child, dict):
        out = dict(base)
        for key, value in child.items():
            sub = (*path, key)
            if key in base:
                out[key] = _merge(base[key], value, base_pos, child_pos, sub)
            else:
                out[key] = value
        return out
    for key in [k for k in base_pos if k[: len(path)] == path]:
        del base_pos[key]
    return child


def _shown(value: Any) -> str:
    """``repr`` of a spec value, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _base_problem(parent: str, directory: Path) -> tuple[Path | None, str | None]:
    """Resolve an ``extends`` target; return it, or why it cannot be read as a spec."""
    name = _shown(parent)
    if "\x00" in parent:
        return None, f"base spec {name} is not a valid file name (it contains a NUL byte)"
    try:
        resolved = (directory / parent).resolve()
        info = resolved.stat()
    except FileNotFoundError:
        library = library_spec(parent)
        if library is not None:  # ``extends: resnet50`` names the library's spec
            return library.resolve(), None
        close = close_names(parent)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return None, f"base spec {name} not found (looked in {directory} and the library{hint})"
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop (3.11)
        reason = os_error_reason(exc) if isinstance(exc, OSError | ValueError) else str(exc)
        return None, f"cannot read base spec {name}: {reason}"
    reason = not_regular_reason(info.st_mode)
    if reason is not None:
        return None, f"base spec {name} {reason}"
    return resolved, None


def load_merged(
    path: Path, display: str | None = None, chain: tuple[Path, ...] = ()
) -> LoadedDocument:
    """Load ``path`` and, recursively, the spec it ``extends``; return the merged document."""
    doc = load_document(path, display)
    parent = doc.data.get("extends")
    if parent is None:
        if "edit" in doc.data:
            message = "edit needs extends: only a variant of another spec edits nodes by name"
            raise SpecError.single(doc.locate(("edit",)), "edit", message)
        return doc
    where = doc.locate(("extends",))
    if not isinstance(parent, str):
        message = f"extends must be a file path, got {_shown(parent)}"
        raise SpecError.single(where, "extends", message)
    resolved, problem = _base_problem(parent, path.parent)
    if problem is not None or resolved is None:
        raise SpecError.single(where, "extends", problem or "base spec not found")
    if resolved in chain or resolved == path.resolve():
        cycle = " -> ".join(p.name for p in (*chain, path.resolve(), resolved))
        raise SpecError.single(where, "extends", f"extends cycle: {cycle}")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError.single(where, "extends", f"extends chain longer than {MAX_EXTENDS_DEPTH}")
    local = path.parent / parent
    base_display = str(Path(doc.file).parent / parent) if local.exists() else str(resolved)
    base = load_merged(resolved, base_display, (*chain, path.resolve()))
    positions = dict(base.positions)
    child_data = {k: v for k, v in doc.data.items() if k not in ("extends", "edit")}
    merged = _merge(base.data, child_data, positions, doc.positions, ())
    positions.update(doc.positions)
    merged["extends"] = parent
    if not any(key in doc.data for key in ARCHITECTURE_KEYS):
        return LoadedDocument(doc.file, merged, positions)
    merged = copy.deepcopy(merged)  # shares lists with the base; edits change them in place
    apply_inheritance(merged, doc.data, positions)
    if "edit" in doc.data:
        merged["edit"] = doc.data["edit"]
        located = LoadedDocument(doc.file, merged, positions)
        merged, positions, problems = apply_edits(merged, positions, located.locate)
        if problems:
            raise SpecError(sorted(problems, key=lambda d: (d.location.line, d.location.column)))
    return LoadedDocument(doc.file, merged, positions)


def _data_path(loc: tuple[Any, ...], data: Any) -> tuple[PathKey, str | None]:
    """Strip pydantic's union tags from an error location; also return the last union tag."""
    path: list[str | int] = []
    current = data
    tag = None
    for part in loc:
        in_list = isinstance(part, int) and isinstance(current, list) and 0 <= part < len(current)
        in_dict = isinstance(part, str) and isinstance(current, dict) and part in current
        if in_list or in_dict:
            path.append(part)
            current = current[part]
        elif isinstance(part, str) and part in NODE_TAGS:
            tag = part
        elif isinstance(part, str) and isinstance(current, dict) and not path_is_type(part):
            path.append(part)  # a missing or unknown key
            current = None
    return tuple(path), tag


TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "string_type": "an expression string",
    "float_type": "a number",
    "float_parsing": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def path_is_type(part: str) -> bool:
    """Whether a pydantic location part names a union member type (``int``, ``list[...]``)."""
    return (
        part in {"int", "str", "bool", "float", "none"}
        or "[" in part
        or part.startswith("function")
    )


def _fields_for(path: PathKey, tag: str | None) -> list[str]:
    if tag is not None:
        return list(NODE_TAGS[tag].model_fields)
    if not path:
        return list(SpecModel.model_fields)
    if len(path) == 2 and path[0] == "blocks":
        return list(BlockTemplate.model_fields)
    return []


# other frameworks' names for our ops
OP_ALIASES = {
    "batchnorm": "bn",
    "batch_norm": "bn",
    "batchnorm2d": "bn",
    "bn2d": "bn",
    "conv2d": "conv",
    "convolution": "conv",
    "conv2d_transpose": "conv_transpose",
    "deconv": "conv_transpose",
    "dense": "linear",
    "droppath": "drop_path",
    "stochastic_depth": "drop_path",
    "layer_norm": "layernorm",
    "group_norm": "groupnorm",
    "layerscale": "layer_scale",
    "fc": "linear",
    "max_pool": "maxpool",
    "maxpool2d": "maxpool",
    "avg_pool": "avgpool",
    "avgpool2d": "avgpool",
    "adaptive_avgpool": "global_avgpool",
    "concatenate": "concat",
    "cat": "concat",
    "multiply": "mul",
    "hard_swish": "hardswish",
    "hard_sigmoid": "hardsigmoid",
    "swish": "silu",
    "upsampling": "upsample",
    "zero_pad": "zeropad",
    "pad": "zeropad",
}
# close in spelling, different in meaning: list the ops instead of suggesting
FALSE_FRIENDS = {"relu_", "dropblock"}


def unknown_op_message(op: Any) -> str:
    """``unknown op 'x'`` with the op it probably means, or the list of ops."""
    text = str(op)
    alias = OP_ALIASES.get(text.lower().replace("-", "_"))
    if alias is not None:
        return f"unknown op {op!r} (did you mean {alias!r}?)"
    hint = "" if text.lower() in FALSE_FRIENDS else suggest(text, OP_NAMES)
    if hint:
        return f"unknown op {op!r}{hint}"
    return f"unknown op {op!r}; the ops are: {', '.join(sorted(OP_NAMES))}"


def validation_diagnostics(exc: ValidationError, doc: LoadedDocument) -> list[Diagnostic]:
    """Translate pydantic errors into positioned one-line diagnostics, one per spec path."""
    by_path: dict[PathKey, Diagnostic] = {}
    expected: dict[PathKey, list[str]] = {}
    for err in exc.errors(include_url=False):
        path, _tag = _data_path(err["loc"], doc.data)
        kind = TYPE_WORDS.get(err["type"])
        if kind and kind not in expected.setdefault(path, []):
            expected[path].append(kind)
    for err in exc.errors(include_url=False):
        path, tag = _data_path(err["loc"], doc.data)
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(path[-1])
            message = f"unknown key {key!r}{suggest(key, _fields_for(path[:-1], tag))}"
        elif kind == "missing":
            message = f"missing required key {path[-1]!r}"
        elif kind == "union_tag_invalid":
            op = err["ctx"]["tag"]
            message = unknown_op_message(op)
            path = (*path, "op")
        elif kind == "union_tag_not_found":
            message = "a node needs 'op' (e.g. op: conv), 'block', 'group' or 'reuse'"
        elif kind == "string_pattern_mismatch":
            message = (
                f"{err['input']!r} is not a valid name "
                "(letters, digits and _, starting with a letter)"
            )
        elif kind == "value_error":
            message = str(err["ctx"]["error"])
        elif kind == "literal_error" and path and path[-1] == "version":
            message = f"unsupported spec version {err['input']!r}: this rescompiler reads version 1"
        elif len(expected.get(path, [])) > 1:
            got = err.get("input")
            message = f"expected {' or '.join(expected[path])}, got {got!r}"
        else:
            message = err["msg"]
            if "input" in err and not isinstance(err["input"], dict):
                shown = repr(err["input"])
                message += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
        if path in by_path:
            continue
        by_path[path] = Diagnostic(doc.locate(path), format_path(path), message)
    # a union failing inside a list reports the inner element; drop the outer duplicate
    paths = list(by_path)
    return [d for p, d in by_path.items() if not any(q != p and q[: len(p)] == p for q in paths)]


def validate(doc: LoadedDocument) -> SpecModel:
    """Validate merged data with pydantic; raise SpecError listing every problem."""
    return validate_partially(doc)[0]


def validate_partially(
    doc: LoadedDocument,
) -> tuple[SpecModel, set[PathKey], list[Diagnostic]]:
    """Validate merged data; where it fails, go on with a repaired copy so that later passes
    still find the spec's other mistakes (every mistake at once, of every kind).

    Returns the model, the spec paths of nodes replaced by placeholders (whose outputs later
    passes must treat as unknown) and the validation errors. Raises SpecError when nothing
    can be checked further (e.g. a required top-level key is wrong)."""
    try:
        return SpecModel.model_validate(doc.data), set(), []
    except ValidationError as exc:
        diagnostics = sorted(
            validation_diagnostics(exc, doc), key=lambda d: (d.location.line, d.location.column)
        )
        paths = [_data_path(err["loc"], doc.data)[0] for err in exc.errors(include_url=False)]
    repaired = repair_for_checking(doc.data, paths)
    if repaired is not None:
        data, opaque = repaired
        try:
            return SpecModel.model_validate(data), opaque, diagnostics
        except ValidationError:
            pass
    raise SpecError(diagnostics)


REQUIRED_TOP = {"version", "name", "input_shape", "body"}
IDENT_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _node_prefix(path: PathKey) -> PathKey | None:
    """The innermost body node that ``path`` lies in (``body[3]``, ``...body[1].body[0]``)."""
    for end in range(len(path), 1, -1):
        if isinstance(path[end - 1], int) and path[end - 2] == "body":
            return path[:end]
    return None


def _placeholder(node: Any) -> dict[str, Any]:
    """An identity node keeping what of ``node``'s name and inputs is valid."""
    out: dict[str, Any] = {"op": "identity"}
    if not isinstance(node, dict):
        return out
    ident = IDENT_PATTERN
    name = node.get("name")
    if isinstance(name, str) and ident.match(name):
        out["name"] = name
    inputs = node.get("inputs")
    single = isinstance(inputs, str) and ident.match(inputs)
    several = isinstance(inputs, list) and all(
        isinstance(i, str) and ident.match(i) for i in inputs
    )
    if single or (several and inputs):
        out["inputs"] = inputs
    return out


def repair_for_checking(data: Any, paths: list[PathKey]) -> tuple[Any, set[PathKey]] | None:
    """A copy of ``data`` where each invalid node is an identity placeholder and each invalid
    optional key is dropped, with the placeholders' paths; None when that is not possible."""
    data = copy.deepcopy(data)
    opaque: set[PathKey] = set()
    for path in sorted(set(paths), key=len, reverse=True):
        node_path = _node_prefix(path)
        if node_path is not None:
            if any(node_path[: len(o)] == o for o in opaque):
                continue  # inside a node already replaced
            parent = _walk(data, node_path[:-1])
            if not isinstance(parent, list) or not 0 <= int(node_path[-1]) < len(parent):
                return None
            parent[int(node_path[-1])] = _placeholder(parent[int(node_path[-1])])
            opaque = {o for o in opaque if o[: len(node_path)] != node_path} | {node_path}
            continue
        if not path or (len(path) == 1 and path[0] in REQUIRED_TOP):
            return None
        if path[0] == "blocks" and (len(path) <= 2 or path[2] == "body"):
            return None
        parent = _walk(data, path[:-1])
        if not isinstance(parent, dict) or path[-1] not in parent:
            return None
        del parent[path[-1]]
    return data, opaque


def _walk(data: Any, path: PathKey) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def override_problem(value: Any, depth: int = 0) -> str | None:
    """Why an override value is one no spec may hold (non-finite, beyond 2**62), or None."""
    if depth > MAX_DEPTH:
        return f"nesting deeper than {MAX_DEPTH} levels"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return "integer too large (magnitude above 2**62)"
    items = list(value.values()) if isinstance(value, dict) else value
    if isinstance(items, list | tuple):
        for item in items:
            problem = override_problem(item, depth + 1)
            if problem is not None:
                return problem
    return None


def resolve_env(
    spec: SpecModel,
    doc: LoadedDocument,
    overrides: dict[str, Any],
    sink: DiagnosticSink,
    origin: Location,
) -> tuple[dict[str, Any], tuple[int, ...] | None]:
    """Params after overrides, plus ``let`` values; and the evaluated input shape (None when
    it cannot be evaluated or a check failed: the body is not expanded then, as the params
    are known to be wrong for it)."""
    params = dict(spec.params)
    raw_shape: Any = spec.input_shape
    for key, value in overrides.items():
        problem = override_problem(value)
        if problem is not None:
            sink.error(origin, f"overrides.{key}", problem)
            continue
        if key == "input_shape":
            raw_shape = value
            continue
        if key not in params:
            sink.error(
                origin,
                f"overrides.{key}",
                f"unknown param {key!r}{suggest(key, [*params, 'input_shape'])}",
            )
            continue
        default = params[key]
        if default is not None and _kind(default) != _kind(value):
            sink.error(
                origin,
                f"overrides.{key}",
                f"{key} must be {_kind(default)} like its default {default!r}, got {value!r}",
            )
            continue
        params[key] = value
    env = dict(params)
    complete = True
    for key, value in spec.let.items():
        try:
            env[key] = evaluate(value, env)
        except ExprError as exc:
            sink.error(doc.locate(("let", key)), f"let.{key}", str(exc), f"attr:{key}")
            complete = False
    failed = False
    for k, check in enumerate(spec.checks if complete else []):
        where = ("checks", k, "that")
        try:
            holds = evaluate(check.that, env)
        except ExprError as exc:
            sink.error(doc.locate(where), format_path(where), str(exc), "attr:that")
            failed = True
            continue
        if not isinstance(holds, bool):
            message = f"a check must give true or false, got {_shown(holds)}"
            sink.error(doc.locate(where), format_path(where), message)
            failed = True
        elif not holds:
            sink.error(doc.locate(where), format_path(where), check.failure())
            failed = True
    shape: tuple[int, ...] | None = None
    try:
        values = evaluate(raw_shape, env)
        if (
            not isinstance(values, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
            or len(values) not in (1, 3)
        ):
            raise ExprError(f"input_shape must be [C, H, W] of positive integers, got {values!r}")
        shape = tuple(values)
    except ExprError as exc:
        sink.error(doc.locate(("input_shape",)), "input_shape", str(exc), "attr:input_shape")
    return env, None if failed else shape
