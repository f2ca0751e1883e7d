"""Diagnostics: every problem in a spec is reported as ``file:line:col: spec.path: message``.

Whatever a spec contributes to a diagnostic (a key, a value, a file name) is escaped here, once,
for every producer: no diagnostic holds a line break or another control character, so a spec
cannot forge extra ``file:line:col:`` lines that editors and CI would annotate.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def escape_text(text: str) -> str:
    """``text`` with each non-printable character escaped as ``\\n``, ``\\x1b``, ``\\u2028``.

    Printable text (including non-ASCII letters) is returned unchanged; backslashes are kept as
    they are, so text that ``repr`` already escaped is not escaped twice.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Location:
    """A position in a spec file (1-based line and column); the file name is escaped."""

    file: str
    line: int = 0
    column: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.file, str) and not self.file.isprintable():
            object.__setattr__(self, "file", escape_text(self.file))

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec: where it is, which spec path, what is wrong.

    ``path`` and ``message`` are escaped on construction (see :func:`escape_text`).
    """

    location: Location
    path: str
    message: str
    severity: str = "error"

    def __post_init__(self) -> None:
        for name in ("path", "message"):
            value = getattr(self, name)
            if isinstance(value, str) and not value.isprintable():
                object.__setattr__(self, name, escape_text(value))

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        kind = "warning: " if self.severity == "warning" else ""
        return f"{self.location}: {kind}{where}{self.message}"


def format_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """Render a spec path the way users read it: ``blocks.bottleneck.body[3].stride``.

    Keys are escaped (:func:`escape_text`) and the result is cut to 120 characters.
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = escape_text(str(part))
            out += f".{text}" if out else text
    return out if len(out) <= 120 else out[:117] + "..."


@dataclass
class SpecError(Exception):
    """A spec is invalid. Carries every error found in it, the first one as attributes.

    ``str(err)`` is one line per error: ``specs/x.yaml:12:7: blocks.bottleneck.body[3]: ...``.
    """

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @classmethod
    def single(cls, location: Location, path: str, message: str) -> SpecError:
        """Build an error holding one diagnostic."""
        return cls([Diagnostic(location, path, message)])

    @property
    def first(self) -> Diagnostic:
        """The first error (the one the attributes describe)."""
        return self.diagnostics[0]

    @property
    def file(self) -> str:
        """File of the first error."""
        return self.first.location.file

    @property
    def line(self) -> int:
        """Line (1-based) of the first error; 0 when unknown."""
        return self.first.location.line

    @property
    def column(self) -> int:
        """Column (1-based) of the first error; 0 when unknown."""
        return self.first.location.column

    @property
    def path(self) -> str:
        """Spec path of the first error, e.g. ``blocks.bottleneck.body[3].stride``."""
        return self.first.path

    @property
    def message(self) -> str:
        """Message of the first error, without its position."""
        return self.first.message

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


class DiagnosticSink:
    """Collects diagnostics of one spec; de-duplicates repeats of one mistake."""

    def __init__(self) -> None:
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self._seen: set[tuple[Location, str]] = set()

    def error(self, location: Location, path: str, message: str, key: str | None = None) -> None:
        """Record an error once per (location, key): a template mistake repeats per instance."""
        dedupe = (location, key if key is not None else message)
        if dedupe in self._seen:
            return
        self._seen.add(dedupe)
        self.errors.append(Diagnostic(location, path, message))

    def warning(self, location: Location, path: str, message: str) -> None:
        """Record a warning (does not fail the spec)."""
        dedupe = (location, "W:" + message)
        if dedupe not in self._seen:
            self._seen.add(dedupe)
            self.warnings.append(Diagnostic(location, path, message, "warning"))

    def raise_if_errors(self) -> None:
        """Raise one SpecError with everything collected so far."""
        if self.errors:
            raise SpecError(sorted(self.errors, key=_order))


def _order(d: Diagnostic) -> tuple[str, int, int]:
    return (d.location.file, d.location.line, d.location.column)
