"""PyTorch backend: ``build`` compiles the emitted classes in memory; ``emit`` returns source.

``optimize="inference"`` gives the inference build: BatchNorms folded into the convs when a plain
state_dict loads (``rescompiler.fold`` decides which), ReLUs in place, eval mode only.
"""

from __future__ import annotations

import types
from typing import Any

from .emit import OPTIMIZE, emit_source
from .weights import export_weights, import_weights  # noqa: F401  (torch imported on use)


def emit(spec: Any, optimize: str | None = None, **options: Any) -> str:
    """Standalone torch module source for ``spec``; ``optimize``: None or ``"inference"``."""
    if options:
        raise TypeError(f"unknown options for the torch backend: {sorted(options)}")
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize must be one of {list(OPTIMIZE)}, got {optimize!r}")
    return emit_source(spec, optimize)


def module(spec: Any, optimize: str | None = None) -> types.ModuleType:
    """The emitted source of ``spec`` executed as a (new) module."""
    source = emit(spec, optimize)
    suffix = f"_{optimize}" if optimize else ""
    module = types.ModuleType(f"rescompiler_generated.{spec.name}_torch{suffix}")
    module.__file__ = f"<rescompiler {spec.name}_torch{suffix}>"
    code = compile(source, module.__file__, "exec")
    exec(code, module.__dict__)  # our own emitted source, from a validated spec
    return module


def build(spec: Any, optimize: str | None = None, **options: Any) -> Any:
    """A ``torch.nn.Module`` for ``spec`` with the spec's params (after overrides).

    With ``optimize="inference"`` load a plain model's state_dict into it (BN folds on load).
    """
    if options:
        raise TypeError(f"unknown options for the torch backend: {sorted(options)}")
    params = dict(spec.params)
    return module(spec, optimize).build(**params, input_shape=tuple(spec.graph.input_shape))
