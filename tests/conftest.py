"""Shared fixtures. The torch stack is imported before anything can load tensorflow:
importing triton after tensorflow segfaults with torch 2.14.1 + tensorflow-cpu 2.21."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

with contextlib.suppress(ImportError):
    import torch  # noqa: F401
    import torchvision  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (dedented text) to a temporary file and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write
