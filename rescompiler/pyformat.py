"""Lay out generated Python the way ``ruff format`` does, for the shapes emitters produce:
statements that end in a call, whose arguments may themselves be calls."""

from __future__ import annotations

from dataclasses import dataclass, field

LINE_LENGTH = 100


@dataclass(frozen=True)
class Call:
    """``callee(args...)``; an argument is source text or another Call."""

    callee: str
    args: tuple[str | Call, ...] = field(default_factory=tuple)
    explode: bool = False  # keep one argument per line (a magic trailing comma)
    brackets: str = "()"  # "{}" with callee "" makes a dict display, "[]" a list

    def flat(self) -> str:
        """The call on one line."""
        inner = ", ".join(a if isinstance(a, str) else a.flat() for a in self.args)
        return f"{self.callee}{self.brackets[0]}{inner}{self.brackets[1]}"


def layout(indent: int, prefix: str, call: Call | str, suffix: str = "") -> list[str]:
    """Lines for ``prefix + call + suffix`` at ``indent`` spaces, split like ruff format."""
    pad = " " * indent
    if isinstance(call, str):
        return [pad + prefix + call + suffix]
    one = pad + prefix + call.flat() + suffix
    if len(one) <= LINE_LENGTH and not call.explode:
        return [one]
    if not call.args:
        return [one]
    inner = " " * (indent + 4) + ", ".join(a if isinstance(a, str) else a.flat() for a in call.args)
    if (
        len(inner) <= LINE_LENGTH
        and not call.explode
        and not any(isinstance(a, Call) and a.explode for a in call.args)
    ):
        return [
            pad + prefix + call.callee + call.brackets[0],
            inner,
            pad + call.brackets[1] + suffix,
        ]
    lines = [pad + prefix + call.callee + call.brackets[0]]
    for arg in call.args:
        lines += layout(indent + 4, "", arg, ",")
    lines.append(pad + call.brackets[1] + suffix)
    return lines


def layout_sum(indent: int, prefix: str, terms: list[str]) -> list[str]:
    """Lines for ``prefix + " + ".join(terms)`` at ``indent`` spaces, split like ruff format
    (in parentheses, one term per line when they do not fit on one)."""
    pad, inner = " " * indent, " " * (indent + 4)
    one = pad + prefix + " + ".join(terms)
    if len(one) <= LINE_LENGTH:
        return [one]
    if len(inner) + len(" + ".join(terms)) <= LINE_LENGTH:
        return [pad + prefix + "(", inner + " + ".join(terms), pad + ")"]
    return [pad + prefix + "(", inner + terms[0], *(f"{inner}+ {t}" for t in terms[1:]), pad + ")"]
