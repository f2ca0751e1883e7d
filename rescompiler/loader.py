"""Load YAML or JSON into plain data plus a map from spec path to source position.

Only the safe YAML subset is accepted: no Python tags, no duplicate keys, bounded size, depth
and node count (aliases are counted each time they are used, so alias bombs stop fast).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Location, SpecError

MAX_FILE_BYTES = 2_000_000
MAX_DEPTH = 64
MAX_VALUES = 200_000

PathKey = tuple[str | int, ...]

_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}


@dataclass
class LoadedDocument:
    """A parsed spec file: its data and the position of every key and value."""

    file: str
    data: Any
    positions: dict[PathKey, Location] = field(default_factory=dict)

    def locate(self, path: PathKey) -> Location:
        """Position of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Location(self.file, 1, 1))


class _Builder:
    """Turns a composed YAML node tree into Python data, recording positions."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[PathKey, Location] = {}
        self.count = 0
        self._constructor = yaml.SafeLoader("")

    def loc(self, node: Node) -> Location:
        return Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, node: Node, path: PathKey, message: str) -> SpecError:
        from .errors import format_path

        return SpecError.single(self.loc(node), format_path(path), message)

    def build(self, node: Node, path: PathKey, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(
                node, path, f"document expands to more than {MAX_VALUES:,} values (alias bomb?)"
            )
        if depth > MAX_DEPTH:
            raise self.fail(node, path, f"nesting deeper than {MAX_DEPTH} levels")
        if node.tag == "tag:yaml.org,2002:timestamp" and isinstance(node, ScalarNode):
            self.positions.setdefault(path, self.loc(node))
            return str(node.value)  # a date-like string stays a string
        if node.tag not in _STANDARD_TAGS:
            raise self.fail(node, path, f"tag {node.tag!r} is not allowed in a spec")
        self.positions.setdefault(path, self.loc(node))
        if isinstance(node, ScalarNode):
            return self._constructor.construct_object(node, deep=True)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.fail(key_node, path, "YAML merge keys (<<) are not supported")
                key = self.build(key_node, (*path, "<key>"), depth + 1)
                if not isinstance(key, str):
                    raise self.fail(key_node, path, f"mapping key {key!r} must be a string")
                if key in out:
                    first = self.positions.get((*path, key))
                    raise self.fail(
                        key_node, (*path, key), f"duplicate key {key!r} (first defined at {first})"
                    )
                self.positions[(*path, key)] = self.loc(key_node)
                out[key] = self.build(value_node, (*path, key), depth + 1)
                self.positions[(*path, key)] = self.loc(key_node)
            self.positions.pop((*path, "<key>"), None)
            return out
        raise self.fail(node, path, "unsupported YAML node")


def parse_text(text: str, file: str) -> LoadedDocument:
    """Parse spec text (YAML, or JSON which is read through the same positioned path)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise SpecError.single(Location(file), "", f"file larger than {MAX_FILE_BYTES:,} bytes")
    if "\x00" in text:
        raise SpecError.single(Location(file, 1, 1), "", "file is binary, not YAML or JSON")
    if file.endswith(".json"):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError.single(
                Location(file, exc.lineno, exc.colno), "", f"invalid JSON: {exc.msg}"
            ) from None
        text = text.replace("\t", " ")  # JSON allows tabs as whitespace, YAML does not
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "syntax error"
        raise SpecError.single(Location(file, line, col), "", f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError.single(Location(file, 1, 1), "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError.single(Location(file, 1, 1), "", "nesting too deep") from None
    if node is None:
        raise SpecError.single(Location(file, 1, 1), "", "file is empty")
    builder = _Builder(file)
    try:
        data = builder.build(node, ())
    except RecursionError:
        raise SpecError.single(Location(file, 1, 1), "", "nesting too deep") from None
    if not isinstance(data, dict):
        raise SpecError.single(
            builder.loc(node), "", f"a spec must be a mapping, got {type(data).__name__}"
        )
    return LoadedDocument(file, data, builder.positions)


def load_document(path: str | Path, display_name: str | None = None) -> LoadedDocument:
    """Read and parse one spec file; errors name the file as ``display_name`` (default: path)."""
    path = Path(path)
    name = display_name or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError.single(Location(name), "", f"file larger than {MAX_FILE_BYTES:,} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError.single(Location(name), "", f"cannot read file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError.single(
            Location(name, 1, 1), "", f"file is not UTF-8 text (byte {exc.start})"
        ) from None
    return parse_text(text, name)
