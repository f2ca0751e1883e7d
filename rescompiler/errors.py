"""Diagnostics: every problem in a spec is reported as ``file:line:col: spec.path: message``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    """A position in a spec file (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec: where it is, which spec path, what is wrong."""

    location: Location
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        kind = "warning: " if self.severity == "warning" else ""
        return f"{self.location}: {kind}{where}{self.message}"


def format_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """Render a spec path the way users read it: ``blocks.bottleneck.body[3].stride``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
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
