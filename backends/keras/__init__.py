"""Keras 3 backend: ``build`` compiles the emitted functions in memory (so built and generated
models have the same layer names and compute bit for bit the same); ``emit`` returns source.
``export_weights``/``import_weights`` move weights in torch layout (``transfer_weights``)."""

from __future__ import annotations

import hashlib
import types
from typing import Any

from .emit import emit_source
from .weights import export_weights, import_weights

_MODULES: dict[str, types.ModuleType] = {}


def emit(spec: Any, **options: Any) -> str:
    """Standalone Keras module source for ``spec``."""
    if options:
        raise TypeError(f"unknown options for the keras backend: {sorted(options)}")
    return emit_source(spec)


def _module(spec: Any, source: str) -> types.ModuleType:
    """The emitted source executed as a module, once per distinct source."""
    key = hashlib.sha256(source.encode()).hexdigest()
    module = _MODULES.get(key)
    if module is None:
        module = types.ModuleType(f"rescompiler_generated.{spec.name}_keras")
        module.__file__ = f"<rescompiler {spec.name}_keras>"
        code = compile(source, module.__file__, "exec")
        exec(code, module.__dict__)  # our own emitted source, from a validated spec
        _MODULES[key] = module
    return module


def build(spec: Any, **options: Any) -> Any:
    """A functional ``keras.Model`` for ``spec`` with the spec's params (after overrides).

    The model is channels-last: it takes (batch, H, W, C) for the spec's (C, H, W).
    """
    module = _module(spec, emit(spec, **options))
    return module.build(**dict(spec.params), input_shape=tuple(spec.graph.input_shape))


__all__ = ["build", "emit", "export_weights", "import_weights"]
