"""Import torch and Keras in the one order that works, quietly.

With torch 2.14.1 and tensorflow-cpu 2.21 in one process, importing triton (torchvision,
torch.compile) after tensorflow segfaults, so torch and triton always load first. TensorFlow
writes start-up lines to file descriptor 2 from C++ before its logging is configured; they are
held back and shown only when the import fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


def import_torch() -> Any:
    """``torch``, with triton imported too when installed (it must precede tensorflow)."""
    import torch

    if importlib.util.find_spec("triton") is not None:
        with contextlib.suppress(Exception):
            import triton  # noqa: F401
    return torch


@contextlib.contextmanager
def _held_stderr() -> Iterator[None]:
    """Redirect fd 2 to a temporary file; replay it if the block raises."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def import_keras() -> Any:
    """``keras`` (TensorFlow backend), after the torch stack, without start-up noise."""
    import_torch()
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _held_stderr():
        import keras
        import tensorflow  # noqa: F401
    return keras
