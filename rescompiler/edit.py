"""Variants edited by name: the ``edit`` key of a spec that ``extends`` another.

After the child is deep-merged over its base, ``edit`` changes single nodes of the model body
or of a block body without restating the lists they are in::

    edit:
      body:                                   # the model body
        conv1: {replace: {group: conv1, body: [...]}}
      blocks.bottleneck.body:                 # a block's body
        downsample.0:                         # a group's child, by position or by name
          insert_before: {op: avgpool, kernel: 2}
          set: {stride: 1}

A node is addressed by the name the summary shows for it (its ``name``, a group's name, or the
name an unnamed node gets: ``relu``, ``relu_1``, ...), and a group's child by ``group.child``.
Every address means a node of the body as inherited, before any edit of this spec. The edits
keep the data flow: what read a replaced node reads its replacement, nodes inserted before a
node run on its input, nodes inserted after it on its output (and whatever read it reads
theirs), a deleted node passes its input on. Positions follow the nodes: inherited nodes keep
their place in the base file, edited fields and new nodes point into the child.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Diagnostic, Location, format_path
from .expr import suggest

PathKey = tuple[str | int, ...]
Target = tuple[str, Any]  # ("old", index) | ("raw", name) | ("entry", _Entry)

EDIT_KINDS = ("replace", "insert_before", "insert_after", "delete", "set")
ALONE = ("replace", "delete")  # kinds that cannot be combined with another on one node
INPUT = "input"
ARCHITECTURE_KEYS = ("edit", "body", "blocks", "let", "defaults")
NOT_INHERITED = ("reference", "description")


# -- positions as a tree (moving a node moves its subtree in O(1)) ------------------------------
@dataclass
class _Pos:
    loc: Location | None = None
    kids: dict[str | int, _Pos] = field(default_factory=dict)


def _tree(positions: dict[PathKey, Location]) -> _Pos:
    root = _Pos()
    for path, loc in positions.items():
        node = root
        for part in path:
            node = node.kids.setdefault(part, _Pos())
        node.loc = loc
    return root


def _flatten(node: _Pos, path: PathKey, out: dict[PathKey, Location]) -> dict[PathKey, Location]:
    if node.loc is not None:
        out[path] = node.loc
    for key, kid in node.kids.items():
        _flatten(kid, (*path, key), out)
    return out


def _at(root: _Pos, path: PathKey) -> _Pos:
    node = root
    for part in path:
        node = node.kids.setdefault(part, _Pos())
    return node


def _copy(node: _Pos | None) -> _Pos:
    return copy.deepcopy(node) if node is not None else _Pos()


# -- names, as the expander gives them ---------------------------------------------------------
def local_names(body: list[Any], inputs: list[str], in_group: bool = False) -> list[str]:
    """The local name of each node of ``body``, as expansion names it: ``name`` (a group's
    ``group``), else the position inside a group, else the op (or block) with a ``_k`` suffix
    that no earlier name (nor a block input) holds."""
    taken = set(inputs)
    out: list[str] = []
    next_k: dict[str, int] = {}  # names are only ever taken: resume each count where it was
    for index, raw in enumerate(body):
        node = raw if isinstance(raw, dict) else {}
        group, name = node.get("group"), node.get("name")
        if isinstance(group, str) or (isinstance(group, int) and not isinstance(group, bool)):
            local = str(group)
        elif isinstance(name, str):
            local = name
        elif in_group:
            local = str(index)
        else:
            default = (
                node.get("block")
                if "block" in node
                else (node.get("reuse") if "reuse" in node else node.get("op"))
            )
            default = default if isinstance(default, str) else "node"
            k = next_k.get(default, 0)
            if "reuse" in node:  # a reuse never takes the bare name of the node it reuses
                k = max(k, 1)
            local = default if k == 0 else f"{default}_{k}"
            while local in taken:
                k += 1
                local = f"{default}_{k}"
            next_k[default] = k
        taken.add(local)
        out.append(local)
    return out


def _addresses(
    body: list[Any], path: PathKey, inputs: list[str], in_group: bool, prefix: str
) -> dict[str, tuple[PathKey, int]]:
    """Every address of a body (``conv1``, ``downsample.0``, ``downsample.conv``): its list
    path and index. The first node of a name wins (a second one is an error elsewhere)."""
    found: dict[str, tuple[PathKey, int]] = {}
    names = local_names(body, inputs, in_group)
    for index, node in enumerate(body):
        keys = [names[index]]
        if in_group and keys[0] != str(index):
            keys.append(str(index))  # a named child of a group is also addressed by position
        for key in keys:
            found.setdefault(prefix + key, (path, index))
        inner = node.get("body") if isinstance(node, dict) and "group" in node else None
        if isinstance(inner, list):
            nested = _addresses(inner, (*path, index, "body"), [], True, prefix + keys[0] + ".")
            for key, where in nested.items():
                found.setdefault(key, where)
    return found


# -- the edit of one body -----------------------------------------------------------------------
@dataclass
class _Op:
    address: str
    spec: dict[str, Any]
    path: PathKey  # of the address in the child file: ("edit", target, address)


@dataclass
class _Entry:
    """A node of an edited list: where its positions come from and what it reads by name."""

    node: Any
    pos: _Pos
    old: int | None = None
    refs: dict[str, list[Target]] = field(default_factory=dict)
    inputs_was_str: bool = False
    set_value: dict[str, Any] | None = None
    set_pos: _Pos | None = None


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _ref_names(node: Any) -> dict[str, list[str]]:
    """The node names ``node`` reads by name: its ``inputs`` and ``otherwise``."""
    out: dict[str, list[str]] = {}
    if not isinstance(node, dict):
        return out
    inputs = node.get("inputs")
    if isinstance(inputs, str):
        out["inputs"] = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(i, str) for i in inputs):
        out["inputs"] = list(inputs)
    if isinstance(node.get("otherwise"), str):
        out["otherwise"] = [node["otherwise"]]
    return out


class BodyEditor:
    """Applies the edits of one list (a body or a group's body) to data and positions."""

    def __init__(
        self,
        items: list[Any],
        path: PathKey,
        pos: _Pos,
        root: _Pos,
        inputs: list[str] | None,
        error: Callable[[PathKey, str], None],
    ) -> None:
        self.items = items
        self.path = path
        self.pos = pos  # positions of the list
        self.root = root  # positions of the whole document (for the child's edit items)
        self.inputs = inputs  # None inside a group: positional only, nobody reads by name
        self.error = error
        self.entries: list[_Entry] = []
        self.kept: dict[int, _Entry] = {}
        self.last_of: dict[int, _Entry] = {}  # replaced / inserted-after: the new output
        self.deleted: set[int] = set()
        self.old_refs: list[dict[str, list[Target]]] = []

    def _new(self, item_path: PathKey, node: Any) -> _Entry:
        return _Entry(copy.deepcopy(node), _copy(_find(self.root, item_path)))

    def _new_items(self, op: _Op, kind: str) -> list[_Entry]:
        value = op.spec[kind]
        base = (*op.path, kind)
        if isinstance(value, list):
            return [self._new((*base, k), item) for k, item in enumerate(value)]
        return [self._new(base, value)]

    def _resolve_old_refs(self, names: list[str]) -> None:
        """Which earlier node each name a node reads means (a node reads earlier nodes only)."""
        latest: dict[str, int] = {}
        for index, node in enumerate(self.items):
            refs: dict[str, list[Target]] = {}
            for slot, wanted in _ref_names(node).items():
                refs[slot] = [("old", latest[n]) if n in latest else ("raw", n) for n in wanted]
            self.old_refs.append(refs)
            latest[names[index]] = index

    def output_of(self, index: int) -> Target | None:
        """What now carries the value old node ``index`` produced (None: nothing does).
        A deleted node passes its input on: its only input, or the node before it."""
        seen: set[int] = set()
        while index not in seen:
            if index in self.last_of:
                return ("entry", self.last_of[index])
            if index in self.kept:
                return ("entry", self.kept[index])
            seen.add(index)
            inputs = self.old_refs[index].get("inputs") if self.old_refs else None
            if inputs is not None:
                if len(inputs) != 1 or inputs[0][0] != "old":
                    return inputs[0] if len(inputs) == 1 else None
                index = inputs[0][1]
            elif index == 0:
                return ("raw", INPUT)
            else:
                index -= 1
        return None

    def resolve(self, target: Target) -> Target | None:
        """A reference made before the edit, as it reads after it."""
        if target[0] == "old":
            return self.output_of(target[1])
        return target

    def apply(self, ops: dict[int, _Op], block: dict[str, Any] | None) -> None:
        """Edit the list in place; ``block`` is the template whose ``output`` may name a node."""
        with_refs = self.inputs is not None
        if with_refs:
            self._resolve_old_refs(local_names(self.items, self.inputs or []))
        pending: int | None = None  # a deleted branch node whose inputs its successor takes

        def add(entry: _Entry) -> None:
            nonlocal pending
            if pending is not None:
                self._take_inputs(entry, pending)
                pending = None
            self.entries.append(entry)

        for index, node in enumerate(self.items):
            op = ops.get(index)
            spec = op.spec if op is not None else {}
            before = self._new_items(op, "insert_before") if op and "insert_before" in spec else []
            for k, entry in enumerate(before):
                if k == 0:
                    self._take_inputs(entry, index)
                add(entry)
            if op is not None and "replace" in spec:
                new = self._new_items(op, "replace")
                self._take_inputs(new[0], index)
                for entry in new:
                    add(entry)
                self.last_of[index] = new[-1]
            elif op is not None and "delete" in spec:
                self.deleted.add(index)
                if with_refs and "inputs" in self.old_refs[index]:
                    pending = index
            else:
                entry = _Entry(copy.deepcopy(node), self.pos.kids.get(index) or _Pos(), index)
                if with_refs:
                    entry.refs = {k: list(v) for k, v in self.old_refs[index].items()}
                    entry.inputs_was_str = isinstance(node, dict) and isinstance(
                        node.get("inputs"), str
                    )
                if before and isinstance(entry.node, dict) and "inputs" in entry.node:
                    del entry.node["inputs"]  # it reads the nodes inserted before it
                    entry.pos.kids.pop("inputs", None)
                    entry.refs.pop("inputs", None)
                if "set" in spec:
                    entry.set_value = spec["set"]
                    entry.set_pos = _find(self.root, (*op.path, "set"))  # type: ignore[union-attr]
                add(entry)
                self.kept[index] = entry
            if op is not None and "insert_after" in spec:
                after = self._new_items(op, "insert_after")
                for entry in after:
                    add(entry)
                self.last_of[index] = after[-1]
        if with_refs:
            self._rewrite(ops, block)
        self._commit()

    def _take_inputs(self, entry: _Entry, index: int) -> None:
        """``entry`` takes what old node ``index`` read by name, unless it names its own."""
        if self.inputs is None or not isinstance(entry.node, dict) or "inputs" in entry.node:
            return
        inputs = self.old_refs[index].get("inputs")
        if inputs is None:
            return
        entry.refs["inputs"] = list(inputs)
        old = self.items[index]
        entry.inputs_was_str = isinstance(old, dict) and isinstance(old.get("inputs"), str)
        entry.node["inputs"] = copy.deepcopy(old["inputs"])
        entry.pos.kids["inputs"] = _copy(self.pos.kids.get(index, _Pos()).kids.get("inputs"))

    def _rewrite(self, ops: dict[int, _Op], block: dict[str, Any] | None) -> None:
        """Rewrite names read by nodes (and the block's ``output``) to what carries the same
        value after the edit; a name whose value is gone is an error at the edit."""
        names = local_names([e.node for e in self.entries], self.inputs or [])
        where = {id(e): j for j, e in enumerate(self.entries)}
        old_names = local_names(self.items, self.inputs or [])

        def text(target: Target | None, reader: str, wanted: Target) -> str | None:
            if target is None:
                gone = wanted[1] if wanted[0] == "old" else -1
                op = ops.get(gone)
                shown = old_names[gone] if gone >= 0 else "?"
                if op is not None:
                    self.error(
                        op.path,
                        f"{reader} reads {shown!r}, which this edit deletes and which has "
                        f"no single input to pass on: edit {reader} too",
                    )
                return None
            return names[where[id(target[1])]] if target[0] == "entry" else str(target[1])

        for j, entry in enumerate(self.entries):
            reader = repr(names[j])
            for slot, targets in entry.refs.items():
                texts = [text(self.resolve(t), reader, t) for t in targets]
                if any(t is None for t in texts):
                    continue
                value: Any = texts[0] if slot == "otherwise" or entry.inputs_was_str else texts
                if entry.node.get(slot) != value:
                    entry.node[slot] = value
        if block is not None and isinstance(block.get("output"), str):
            wanted = [t for t, n in enumerate(old_names) if n == block["output"]]
            if wanted:
                target: Target = ("old", wanted[-1])
                value = text(self.resolve(target), "the block's output", target)
                if value is not None:
                    block["output"] = value

    def _commit(self) -> None:
        self.items[:] = [e.node for e in self.entries]
        kids = {k: v for k, v in self.pos.kids.items() if not isinstance(k, int)}
        for j, entry in enumerate(self.entries):
            kids[j] = entry.pos
            if entry.set_value is not None:
                _set_fields(entry.node, entry.pos, entry.set_value, entry.set_pos or _Pos())
        self.pos.kids = kids


def _find(root: _Pos, path: PathKey) -> _Pos | None:
    node: _Pos | None = root
    for part in path:
        if node is None:
            return None
        node = node.kids.get(part)
    return node


def _set_fields(node: Any, pos: _Pos, value: dict[str, Any], vpos: _Pos) -> None:
    """Deep-merge ``value`` into ``node`` (mappings merge, anything else is replaced, null
    removes the field), moving the child's positions along."""
    if not isinstance(node, dict):
        return
    for key, item in value.items():
        if item is None:
            node.pop(key, None)
            pos.kids.pop(key, None)
        elif isinstance(node.get(key), dict) and isinstance(item, dict):
            kid = pos.kids.setdefault(key, _Pos())
            _set_fields(node[key], kid, item, vpos.kids.get(key) or _Pos())
        else:
            node[key] = copy.deepcopy(item)
            pos.kids[key] = _copy(vpos.kids.get(key))


# -- checking the edit mapping ------------------------------------------------------------------
def _targets(data: dict[str, Any]) -> dict[str, PathKey]:
    """Editable bodies: ``body`` and ``blocks.NAME.body``."""
    out: dict[str, PathKey] = {"body": ("body",)}
    blocks = data.get("blocks")
    if isinstance(blocks, dict):
        for name in blocks:
            out[f"blocks.{name}.body"] = ("blocks", name, "body")
    return out


def _node_list(value: Any) -> str | None:
    """Why ``value`` is not one node or a non-empty list of nodes (None when it is)."""
    if isinstance(value, dict):
        return None
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return None
    return f"expected a node or a non-empty list of nodes, got {_shown(value)}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_op(spec: Any) -> list[tuple[PathKey, str]]:
    """Problems of one node's edit, each with its path relative to the edit."""
    if not isinstance(spec, dict) or not spec:
        return [((), f"an edit is a mapping of {', '.join(EDIT_KINDS)}, got {_shown(spec)}")]
    problems: list[tuple[PathKey, str]] = []
    for key in spec:
        if key not in EDIT_KINDS:
            hint = suggest(str(key), EDIT_KINDS)
            problems.append(
                ((key,), f"unknown edit {key!r}{hint}; an edit is {', '.join(EDIT_KINDS)}")
            )
    for kind in ALONE:
        others = [k for k in spec if k != kind and k in EDIT_KINDS]
        if kind in spec and others:
            problems.append(
                ((others[0],), f"{kind!r} cannot be combined with {others[0]!r} on one node")
            )
            break
    if "delete" in spec and spec["delete"] is not True:
        problems.append((("delete",), f"delete must be true, got {_shown(spec['delete'])}"))
    if "set" in spec and (not isinstance(spec["set"], dict) or not spec["set"]):
        shown = _shown(spec["set"])
        problems.append((("set",), f"set needs a mapping of fields, got {shown}"))
    for kind in ("replace", "insert_before", "insert_after"):
        if kind in spec:
            problem = _node_list(spec[kind])
            if problem is not None:
                problems.append(((kind,), problem))
    return problems


def _list_at(data: Any, path: PathKey) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _plan(
    data: dict[str, Any], edits: dict[str, Any], error: Callable[[PathKey, str], None]
) -> list[tuple[str, PathKey, dict[PathKey, dict[int, _Op]]]]:
    """Check every address and edit; return, per target, the edits grouped by list."""
    targets = _targets(data)
    plans: list[tuple[str, PathKey, dict[PathKey, dict[int, _Op]]]] = []
    for target, node_edits in edits.items():
        where: PathKey = ("edit", target)
        if target not in targets:
            hint = suggest(str(target), targets)
            error(
                where, f"unknown body {target!r} to edit{hint}; edit 'body' or 'blocks.NAME.body'"
            )
            continue
        body_path = targets[target]
        body = _list_at(data, body_path)
        if not isinstance(body, list):
            error(where, f"{target} is not a list of nodes")
            continue
        if not isinstance(node_edits, dict) or not node_edits:
            shown = _shown(node_edits)
            error(where, f"edit {target} with a mapping from node names to edits, got {shown}")
            continue
        addresses = _addresses(body, body_path, _block_inputs(data, body_path), False, "")
        by_list: dict[PathKey, dict[int, _Op]] = {}
        chosen: dict[PathKey, str] = {}
        for address, spec in node_edits.items():
            here = (*where, address)
            found = addresses.get(str(address))
            if found is None:
                hint = suggest(str(address), addresses)
                error(here, f"no node {address!r} in {target}{hint}")
                continue
            problems = _check_op(spec)
            for rel, message in problems:
                error((*here, *rel), message)
            if problems:
                continue
            list_path, index = found
            node_path = (*list_path, index)
            if node_path in chosen:
                error(
                    here,
                    f"{address!r} is the node {chosen[node_path]!r} edited above: edit it once",
                )
                continue
            chosen[node_path] = str(address)
            by_list.setdefault(list_path, {})[index] = _Op(str(address), spec, here)
        for node_path, address in chosen.items():
            for end in range(len(body_path) + 1, len(node_path) - 1, 2):
                outer_path = node_path[:end]  # each group the node lies in
                if outer_path not in chosen:
                    continue
                op = by_list[outer_path[:-1]][int(outer_path[-1])]
                kind = next((k for k in ALONE if k in op.spec), None)
                if kind is not None:
                    verb = "replaces" if kind == "replace" else "deletes"
                    inner = by_list[node_path[:-1]][int(node_path[-1])]
                    outer = chosen[outer_path]
                    error(inner.path, f"{address!r} is inside {outer!r}, which this edit {verb}")
        plans.append((target, body_path, by_list))
    return plans


def _block_inputs(data: dict[str, Any], body_path: PathKey) -> list[str]:
    if body_path[0] != "blocks":
        return [INPUT]
    block = _list_at(data, body_path[:-1])
    inputs = block.get("inputs") if isinstance(block, dict) else None
    names = [i for i in inputs if isinstance(i, str)] if isinstance(inputs, list) else []
    return [INPUT, *names]


def apply_edits(
    data: dict[str, Any],
    positions: dict[PathKey, Location],
    locate: Callable[[PathKey], Location],
) -> tuple[dict[str, Any], dict[PathKey, Location], list[Diagnostic]]:
    """Apply (and remove) ``data["edit"]``: return the edited data and positions, or the
    problems found (unknown bodies and nodes with the closest name, malformed edits, a name
    read by a node whose value an edit removes). ``data`` is changed in place."""
    edits = data.pop("edit", None)
    problems: list[Diagnostic] = []

    def error(path: PathKey, message: str) -> None:
        problems.append(Diagnostic(locate(path), format_path(path), message))

    if edits is None:
        return data, positions, problems
    if not isinstance(edits, dict):
        error(
            ("edit",),
            f"edit must map bodies ('body', 'blocks.NAME.body') to node edits, got {_shown(edits)}",
        )
        return data, positions, problems
    plans = _plan(data, edits, error)
    if problems:
        return data, positions, problems
    root = _tree(positions)
    for _target, body_path, by_list in plans:
        block = _list_at(data, body_path[:-1]) if body_path[0] == "blocks" else None
        for list_path in sorted(by_list, key=len, reverse=True):  # inner lists first
            items = _list_at(data, list_path)
            top = list_path == body_path
            inputs = _block_inputs(data, body_path) if top else None
            editor = BodyEditor(items, list_path, _at(root, list_path), root, inputs, error)
            editor.apply(by_list[list_path], block if top else None)
    return data, _flatten(root, (), {}), problems


def apply_inheritance(
    merged: dict[str, Any], child: dict[str, Any], positions: dict[PathKey, Location]
) -> None:
    """What a variant inherits. A child that changes the architecture (states ``edit``,
    ``body``, ``blocks``, ``let`` or ``defaults``) describes another model: the base's
    ``reference`` and ``description`` are not inherited unless the child restates them, and
    neither is the ``doc`` of a block whose body or params it changes (by ``edit`` or under
    ``blocks``). A child stating only params (``resnet101``) inherits everything."""
    if not any(key in child for key in ARCHITECTURE_KEYS):
        return
    for key in NOT_INHERITED:
        if key not in child and key in merged:
            del merged[key]
            _drop(positions, (key,))
    changed: set[str] = set()
    child_blocks = child.get("blocks")
    if isinstance(child_blocks, dict):
        changed |= {
            str(name)
            for name, block in child_blocks.items()
            if not isinstance(block, dict) or set(block) - {"doc"}
        }
    edits = child.get("edit")
    if isinstance(edits, dict):
        for target in edits:
            parts = str(target).split(".")
            if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "body":
                changed.add(parts[1])
    blocks = merged.get("blocks")
    if not isinstance(blocks, dict):
        return
    for name in changed:
        block = blocks.get(name)
        restated = isinstance(child_blocks, dict) and isinstance(child_blocks.get(name), dict)
        if isinstance(block, dict) and "doc" in block:
            if restated and "doc" in child_blocks[name]:  # type: ignore[index]
                continue
            del block["doc"]
            _drop(positions, ("blocks", name, "doc"))


def _drop(positions: dict[PathKey, Location], path: PathKey) -> None:
    for key in [k for k in positions if k[: len(path)] == path]:
        del positions[key]
