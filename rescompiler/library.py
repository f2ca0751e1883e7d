"""The spec library shipped with rescompiler, found by name.

In the repository the library is ``specs/`` and the JSON Schema ``schema/``; an installed
wheel carries both inside the package (``rescompiler/_specs``, ``rescompiler/_schema``).
A library spec can be named without a path (``rescompile resnet50``, ``load_spec("resnet50")``,
``extends: resnet50``); a file path that exists always wins over a library name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.ya?ml|\.json)?$")


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def library_dir() -> Path | None:
    """The folder of library specs, installed or in the repository (None if neither)."""
    return _first_dir(_HERE / "_specs", _HERE.parent / "specs")


def schema_file() -> Path | None:
    """The committed JSON Schema of the spec format, if it ships with this install."""
    folder = _first_dir(_HERE / "_schema", _HERE.parent / "schema")
    return folder / "spec.schema.json" if folder is not None else None


def library_names() -> list[str]:
    """Names of the library specs (``resnet50``, ...), sorted."""
    folder = library_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder is not None else []


def library_spec(name: str) -> Path | None:
    """The library file for ``name`` (``resnet50`` or ``resnet50.yaml``), or None when
    ``name`` is not a bare library name."""
    folder = library_dir()
    if folder is None or not _NAME.match(name):
        return None
    candidate = folder / (name if "." in name else f"{name}.yaml")
    return candidate if candidate.is_file() else None


def present(path: Path) -> bool:
    """Whether something is at ``path`` (a broken symlink counts; an unusable name, such as one
    with a NUL byte or too long, counts too, so that reading it reports why)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    return True


def find_spec(path: str | Path) -> Path:
    """``path`` itself when something is there (or it is not a bare name), else the library
    spec of that name, else ``path`` unchanged."""
    given = Path(path)
    if present(given) or given.parent != Path("."):
        return given
    return library_spec(str(path)) or given


def close_names(name: str) -> list[str]:
    """Library names close to ``name`` (for a did-you-mean hint)."""
    import difflib

    stem = Path(name).stem
    return difflib.get_close_matches(stem, library_names(), n=3, cutoff=0.6)
