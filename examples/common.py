"""Shared by the example scripts: the digits data, compiling a spec into a generated module and
importing it, argument types and clean command-line failures.

Imports neither torch nor tensorflow: the Keras path must not load torch (and vice versa), since
importing triton after tensorflow segfaults with torch 2.14.1 + tensorflow-cpu 2.21.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import yaml

EXAMPLES = Path(__file__).resolve().parent
SPECS = EXAMPLES / "specs"
GENERATED = EXAMPLES / "generated"
DIGITS_SHAPE = (1, 8, 8)


class ExampleError(Exception):
    """A problem the user can fix (bad input, missing package); printed as one line."""


def fail(prog: str, message: str, code: int = 1) -> NoReturn:
    """Print ``prog: error: message`` (first line only) on stderr and exit with ``code``."""
    lines = str(message).strip().splitlines() or ["unknown error"]
    more = f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else ""
    print(f"{prog}: error: {lines[0]}{more}", file=sys.stderr)
    raise SystemExit(code)


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def param_override(text: str) -> tuple[str, Any]:
    """argparse type for ``--set KEY=VALUE``; VALUE is read as YAML (``depth=20``, ``[1,8,8]``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r}") from None
    return key, value


def require(*modules: str) -> None:
    """Raise ExampleError naming the extra to install when one of ``modules`` is missing."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ExampleError(f"{name} is not installed: pip install -e '.[examples]'")


def load_digits_split(
    test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 grey 8×8 images, no download), scaled to [0, 1].

    Returns ``x_train, y_train, x_test, y_test``: images as float32 N×1×8×8 (channels first),
    labels as int64, from a stratified split with a fixed ``seed``.
    """
    require("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    return x_train, y_train, x_test, y_test


def compile_module(spec: str | os.PathLike[str], backend: str, out_dir: Path) -> ModuleType:
    """Compile ``spec`` with rescompiler into ``out_dir/<name>_<backend>.py`` and import it.

    The generated module depends only on its framework; it is imported from its file, as a user
    would import it, under the name ``<name>_<backend>``. Raises ExampleError for an invalid spec
    or a file that cannot be written.
    """
    import rescompiler

    try:
        path = rescompiler.compile_spec(spec, backend=backend, out_dir=out_dir)
    except rescompiler.SpecError as exc:
        raise ExampleError(str(exc)) from None
    except OSError as exc:
        raise ExampleError(f"cannot write the generated module to {out_dir}: {exc}") from None
    return import_file(path)


def import_file(path: Path) -> ModuleType:
    """Import a Python file as a module named after its stem (registered in ``sys.modules``)."""
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    if module_spec is None or module_spec.loader is None:
        raise ExampleError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[path.stem] = module
    module_spec.loader.exec_module(module)
    return module


def build_model(module: ModuleType, overrides: dict[str, Any]) -> Any:
    """Call the generated ``build(**overrides)`` and check the model fits the digits.

    The spec's input shape must be 1×8×8 and its ``num_classes`` (if any) 10.
    """
    shape = tuple(overrides.get("input_shape", module.INPUT_SHAPE))
    if shape != DIGITS_SHAPE:
        raise ExampleError(
            f"the model takes {shape} inputs, the digits are {DIGITS_SHAPE}; "
            "use a spec with input_shape [1, 8, 8] or --set input_shape=[1,8,8]"
        )
    classes = overrides.get("num_classes", module.DEFAULTS.get("num_classes", 10))
    if classes != 10:
        raise ExampleError(f"the digits have 10 classes, the model {classes}")
    try:
        return module.build(**overrides)
    except (TypeError, ValueError) as exc:
        raise ExampleError(f"build(**{overrides}) failed: {exc}") from None
