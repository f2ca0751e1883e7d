"""Load YAML or JSON into plain data plus a map from spec path to source position.

Only the safe YAML subset is accepted: no Python tags, no duplicate keys, bounded size, depth
and node count (aliases are counted each time they are used, so alias bombs stop fast).
Specs are untrusted data: only regular files are read (never a FIFO or a device), at most
``MAX_FILE_BYTES`` are read whatever the file claims its size is, explicitly tagged scalars must
hold a value of their tag, and numbers must be finite and within ``MAX_INT``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Location, SpecError, format_path
from .expr import MAX_INT

MAX_FILE_BYTES = 2_000_000
MAX_DEPTH = 64
MAX_VALUES = 200_000

PathKey = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP = _TAG + "seq", _TAG + "map"
_STANDARD_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ, _MAP}
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL}
_NULL_WORDS = {"", "~", "null", "Null", "NULL"}
_BOOL_WORDS = yaml.constructor.SafeConstructor.bool_values
_DIGITS = re.compile(r"[0-9]+")
# more digits than this (decimal or octal, leading zeros aside) is always beyond MAX_INT
_MAX_INT_DIGITS = 22
# a sexagesimal integer (1:30:00) with more parts than this is always beyond MAX_INT
_MAX_SEXAGESIMAL_PARTS = 12
# the composer refuses nesting a little deeper than the builder does, before recursion is deep
_MAX_COMPOSE_DEPTH = MAX_DEPTH + 2

_FILE_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO, not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read as a spec (``"is a directory"``), or None."""
    if stat.S_ISREG(mode):
        return None
    for test, reason in _FILE_KINDS:
        if test(mode):
            return reason
    return "is not a regular file"


def os_error_reason(exc: OSError | ValueError) -> str:
    """A readable reason for a failed file operation (``"Permission denied"``)."""
    if isinstance(exc, ValueError):
        return "file name contains a NUL byte" if "null" in str(exc) else str(exc)
    return exc.strerror or str(exc)


def _short(text: str, limit: int = 40) -> str:
    """``repr`` of a scalar's source text, cut to ``limit`` characters."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 10]!r}... ({len(text):,} chars)"


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


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing deep nesting where it starts (not by RecursionError)."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self._file = file
        self._depth = 0

    def _too_deep(self, mark: yaml.Mark) -> SpecError:
        where = Location(self._file, mark.line + 1, mark.column + 1)
        return SpecError.single(where, "", f"nesting deeper than {MAX_DEPTH} levels")

    def fetch_flow_collection_start(self, token_class: type) -> None:
        """Scan ``[`` or ``{``; refuse flow nesting deeper than a spec may nest at all.

        Checked in the scanner because PyYAML scans about 1,000 characters ahead of the
        composer, with a cost quadratic in the flow nesting met on the way.
        """
        if self.flow_level >= MAX_DEPTH + 1:
            raise self._too_deep(self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        """Compose one node, counting how deep the composer has descended."""
        self._depth += 1
        try:
            if self._depth > _MAX_COMPOSE_DEPTH:
                raise self._too_deep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
            if node.tag not in _SCALAR_TAGS:
                raise self.fail(node, path, f"tag {_short_tag(node.tag)} cannot tag a scalar")
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                raise self.fail(node, path, f"tag {_short_tag(node.tag)} cannot tag a list")
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if node.tag != _MAP:
                raise self.fail(node, path, f"tag {_short_tag(node.tag)} cannot tag a mapping")
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

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        """The value of a scalar, checked against its (explicit or implicit) tag."""
        text = node.value
        if node.tag == _STR:
            return text
        if node.tag == _NULL:
            if text not in _NULL_WORDS:
                raise self.fail(node, path, f"{_short(text)} is not a valid null (!!null)")
            return None
        if node.tag == _BOOL:
            value = _BOOL_WORDS.get(text.lower())
            if value is None:
                raise self.fail(node, path, f"{_short(text)} is not a valid boolean (!!bool)")
            return value
        if node.tag == _INT:
            return self.integer(node, path)
        try:
            number = self._constructor.construct_yaml_float(node)
        except (ValueError, IndexError, OverflowError):
            raise self.fail(node, path, f"{_short(text)} is not a valid number (!!float)") from None
        if not math.isfinite(number):
            raise self.fail(node, path, f"{_short(text)} is not a finite number")
        return number

    def integer(self, node: ScalarNode, path: PathKey) -> int:
        """An integer scalar, refused when it is not one or its magnitude exceeds MAX_INT."""
        text = node.value
        digits = text.replace("_", "").lstrip("+-")
        parts = digits.split(":")
        too_large = f"integer {_short(text)} is too large (magnitude above 2**62)"
        if all(_DIGITS.fullmatch(p) for p in parts) and (
            len(parts) > _MAX_SEXAGESIMAL_PARTS
            or any(len(p.lstrip("0")) > _MAX_INT_DIGITS for p in parts)
        ):
            raise self.fail(node, path, too_large)
        try:
            value = self._constructor.construct_yaml_int(node)
        except (ValueError, IndexError, OverflowError):
            raise self.fail(node, path, f"{_short(text)} is not a valid integer (!!int)") from None
        if abs(value) > MAX_INT:
            raise self.fail(node, path, too_large)
        return int(value)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else repr(tag)


def _compose_node(text: str, file: str) -> Node | None:
    """Compose YAML text into a node tree; YAML errors propagate, deep nesting is a SpecError."""
    loader = _SpecLoader(text, file)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _compose(text: str, file: str) -> Node | None:
    """Parse YAML text into a node tree; syntax errors become located SpecErrors."""
    try:
        return _compose_node(text, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "syntax error"
        hint = yaml_hint(problem, exc.context or "")
        raise SpecError.single(
            Location(file, line, col), "", f"invalid YAML: {problem}{hint}"
        ) from None
    except yaml.reader.ReaderError as exc:
        pos = exc.position if isinstance(exc.position, int) else 0
        line, col = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        raise SpecError.single(Location(file, line, col), "", _reader_problem(exc)) from None
    except yaml.YAMLError as exc:
        raise SpecError.single(Location(file, 1, 1), "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise SpecError.single(Location(file, 1, 1), "", "nesting too deep") from None


YAML_HINTS: tuple[tuple[str, str], ...] = (
    (
        "mapping values are not allowed",
        "a key needs a space after its colon, and a value holding ': ' must be quoted; "
        "or this line is indented deeper than its key",
    ),
    ("could not find expected ':'", "a key needs ': ' after it; or a quote above is not closed"),
    ("cannot start any token", "indent with spaces, not tabs; quote values starting with @ or `"),
    ("expected <block end>", "this line is indented differently from the lines around it"),
    ("did not find expected key", "this line is indented differently from the keys around it"),
    ("did not find expected '-'", "list items of one list must start at the same column"),
    ("expected ',' or ']'", "a [...] list is not closed, or misses a comma"),
    ("expected ',' or '}'", "a {...} mapping is not closed, or misses a comma"),
    ("found unexpected end of stream", "a quote is not closed"),
    ("found undefined alias", "*name needs an &name anchor earlier in the file"),
)


def yaml_hint(problem: str, context: str) -> str:
    """`` (look at: ...)`` for a PyYAML problem a user can fix by looking at one thing."""
    for needle, hint in YAML_HINTS:
        if needle in problem or needle in context:
            return f" ({hint})"
    return ""


def _reader_problem(exc: yaml.reader.ReaderError) -> str:
    """The message of a YAML reader error, without PyYAML's ``in "<unicode string>"`` tail."""
    char = exc.character
    code = ord(char) if isinstance(char, str) else char
    return f"invalid YAML: unacceptable character #x{code:04x}: {exc.reason}"


def _refuse_deep_json(text: str, file: str) -> None:
    """Raise a SpecError where JSON ``text`` nests deeper than ``MAX_DEPTH`` (if it does)."""
    depth, line, line_start = 0, 1, 0
    in_string = escaped = False
    for pos, ch in enumerate(text):
        if in_string:
            in_string = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH + 1:  # the root mapping is depth 0 for the builder
                where = Location(file, line, pos - line_start + 1)
                raise SpecError.single(where, "", f"nesting deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
        elif ch == "\n":
            line, line_start = line + 1, pos + 1


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
        except RecursionError:
            _refuse_deep_json(text, file)
        except ValueError:
            pass  # an integer too long for Python: the positioned YAML path says where
        text = text.replace("\t", " ")  # JSON allows tabs as whitespace, YAML does not
    node = _compose(text, file)
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


def parse_value(text: str, file: str, path: str) -> Any:
    """Parse one YAML value (a ``--set`` override) under the rules of a spec file.

    Raises ``ValueError`` when ``text`` is not YAML, and ``SpecError`` located at ``file``
    with spec path ``path`` for a value no spec may hold (bad tag, non-finite number, integer
    beyond 2**62, nesting too deep).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise SpecError.single(Location(file), path, f"value larger than {MAX_FILE_BYTES:,} bytes")
    if "\x00" in text:
        raise ValueError("the value contains a NUL byte")
    try:
        node = _compose_node(text, file)
        return None if node is None else _Builder(file).build(node, ())
    except yaml.MarkedYAMLError as exc:
        raise ValueError(f"invalid YAML: {exc.problem or exc.context or 'syntax error'}") from None
    except yaml.reader.ReaderError as exc:
        raise ValueError(_reader_problem(exc)) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from None
    except SpecError as exc:
        raise SpecError.single(Location(file), path, exc.message) from None
    except RecursionError:
        raise SpecError.single(Location(file), path, "nesting too deep") from None


def read_spec_bytes(path: str | Path, display_name: str | None = None) -> bytes:
    """Read a spec file's bytes safely: a regular file only, at most ``MAX_FILE_BYTES``.

    A FIFO, device, socket or directory is refused without blocking on it, and the size cap
    holds on the bytes actually read (``/proc`` files and devices report a size of 0).
    Every failure is a ``SpecError`` naming the file.
    """
    name = display_name or str(path)

    def refuse(message: str) -> SpecError:
        return SpecError.single(Location(name), "", message)

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        info = os.stat(path)  # follows symlinks: judge what is finally read
        reason = not_regular_reason(info.st_mode)
        if reason is not None:
            raise refuse(f"cannot read file: {reason}")
        if info.st_size > MAX_FILE_BYTES:
            raise refuse(f"file larger than {MAX_FILE_BYTES:,} bytes")
        fd = os.open(path, flags)
        try:
            reason = not_regular_reason(os.fstat(fd).st_mode)  # replaced since the stat?
            if reason is not None:
                raise refuse(f"cannot read file: {reason}")
            chunks: list[bytes] = []
            total = 0
            while total <= MAX_FILE_BYTES:
                chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
    except (OSError, ValueError) as exc:
        raise refuse(f"cannot read file: {os_error_reason(exc)}") from None
    if total > MAX_FILE_BYTES:
        raise refuse(f"file larger than {MAX_FILE_BYTES:,} bytes")
    return b"".join(chunks)


def load_document(path: str | Path, display_name: str | None = None) -> LoadedDocument:
    """Read and parse one spec file; errors name the file as ``display_name`` (default: path)."""
    name = display_name or str(path)
    raw = read_spec_bytes(path, name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError.single(
            Location(name, 1, 1), "", f"file is not UTF-8 text (byte {exc.start})"
        ) from None
    return parse_text(text, name)
