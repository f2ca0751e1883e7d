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

    def flat(self) -> str:
        """The call on one line."""
        return (
            f"{self.callee}({', '.join(a if isinstance(a, str) else a.flat() for a in self.args)})"
        )


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
        return [pad + prefix + call.callee + "(", inner, pad + ")" + suffix]
    lines = [pad + prefix + call.callee + "("]
    for arg in call.args:
        lines += layout(indent + 4, "", arg, ",")
    lines.append(pad + ")" + suffix)
    return lines
