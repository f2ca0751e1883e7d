"""The one way text from a spec enters generated Python: as a string literal or a docstring
whose value is exactly that text, never as code.

Specs are shared data. A description, reference, block ``doc`` or param value reaches the
emitted module only through :func:`string_literal`, :func:`docstring` or :func:`literal`;
each escapes what it writes and then parses its own output with :mod:`ast` to prove that it is
one string constant holding the intended text, so no text can close a literal and run.
"""

from __future__ import annotations

import ast
import math
import textwrap
from typing import Any

LINE_LENGTH = 100


class UnsafeText(ValueError):
    """Raised when a literal could not be written safely (a bug, never a spec's fault)."""


def printable(text: str) -> str:
    """``text`` with every control or invisible separator character replaced by a space,
    newlines kept (``\\r\\n`` and ``\\r`` become ``\\n``)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in text)


def _escape_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch == '"':
        return '\\"'
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _proved(source: str, value: str) -> str:
    """``source`` if it parses as exactly one string constant equal to ``value``."""
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise UnsafeText(f"unsafe literal for {value!r}") from None
    body = tree.body
    if not (isinstance(body, ast.Constant) and type(body.value) is str and body.value == value):
        raise UnsafeText(f"unsafe literal for {value!r}")
    return source


def string_literal(text: str) -> str:
    """A double-quoted Python string literal whose value is exactly ``text`` (any characters:
    quotes, backslashes, control characters and separators are escaped)."""
    return _proved('"' + "".join(_escape_char(ch) for ch in text) + '"', text)


def _escape_docstring_line(line: str, last: bool) -> str:
    """One line of a triple-quoted docstring: backslashes doubled, a quote escaped where it
    touches another quote or ends the docstring (so no run of three can form)."""
    out = []
    for k, ch in enumerate(line):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"' and (
            (k > 0 and line[k - 1] == '"')
            or (k + 1 < len(line) and line[k + 1] == '"')
            or (last and k == len(line) - 1)
        ):
            out.append('\\"')
        else:
            out.append(ch)
    return "".join(out)


def docstring(text: str, indent: int = 4) -> str:
    """A triple-quoted docstring at ``indent`` spaces holding ``text`` wrapped to the line
    length. Wrapping happens first and escaping after, per line, so an escape is never split;
    the result is checked to be one string constant with the wrapped text as its value."""
    pad = " " * indent
    width = LINE_LENGTH - indent - 6
    lines: list[str] = []
    for paragraph in printable(text).strip().split("\n"):
        lines += textwrap.wrap(paragraph, width) or [""]
    if len(lines) == 1 and len(lines[0]) <= width:
        value = lines[0]
        source = '"""' + _escape_docstring_line(lines[0], True) + '"""'
    else:
        rest = [pad + line if line else "" for line in lines[1:]]
        value = "\n".join([lines[0], *rest, pad])
        escaped = [_escape_docstring_line(line, False) for line in [lines[0], *rest]]
        source = '"""' + "\n".join([*escaped, pad]) + '"""'
    try:
        return _proved(source, value)
    except UnsafeText:  # not expected; a plain literal is always right
        return string_literal(value)


def literal(value: Any) -> str:
    """Python source of a literal value from a spec (str, int, finite float, bool, None, and
    lists, tuples and string-keyed dicts of them); strings via :func:`string_literal`."""
    if isinstance(value, str):
        return string_literal(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeText(f"{value!r} is not a finite number")
        return repr(value)
    if isinstance(value, list | tuple):
        items = ", ".join(literal(v) for v in value)
        return f"({items}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        items = ", ".join(f"{string_literal(str(k))}: {literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise UnsafeText(f"a {type(value).__name__} cannot be written as a literal")


def raise_lines(indent: int, error: str, message: str) -> list[str]:
    """``raise error(message)`` at ``indent`` spaces, the message one string literal or, when
    too long, several on their own lines (implicit concatenation, split at spaces), each
    written by :func:`string_literal`."""
    pad = " " * indent
    text = " ".join(printable(message).split())
    one = f"{pad}raise {error}({string_literal(text)})"
    if len(one) <= LINE_LENGTH:
        return [one]
    width = LINE_LENGTH - indent - 6  # four spaces deeper, two quotes
    words = textwrap.wrap(text, width, break_long_words=True, drop_whitespace=False)
    chunks = [string_literal(chunk) for chunk in words]
    if "".join(words) != text:  # not expected: wrap keeps every character here
        raise UnsafeText(f"could not split {text!r}")
    return [f"{pad}raise {error}(", *(f"{pad}    {chunk}" for chunk in chunks), f"{pad})"]
