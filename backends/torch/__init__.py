"""PyTorch backend: ``build`` compiles the emitted classes in memory; ``emit`` returns source."""

from __future__ import annotations

import types
from typing import Any

from .emit import emit_source
from .weights import export_weights, import_weights  # noqa: F401  (torch imported on use)


def emit(spec: Any, **options: Any) -> str:
    """Standalone torch module source for ``spec``."""
    if options:
        raise TypeError(f"unknown options for the torch backend: {sorted(options)}")
    return emit_source(spec)


def build(spec: Any, **options: Any) -> Any:
    """A ``torch.nn.Module`` for ``spec`` with the spec's params (after overrides)."""
    source = emit(spec, **options)
    module = types.ModuleType(f"rescompiler_generated.{spec.name}_torch")
    module.__file__ = f"<rescompiler {spec.name}_torch>"
    code = compile(source, module.__file__, "exec")
    exec(code, module.__dict__)  # our own emitted source, from a validated spec
    params = dict(spec.params)
    return module.build(**params, input_shape=tuple(spec.graph.input_shape))
