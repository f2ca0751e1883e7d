"""Keras 3 backend: ``build`` compiles the emitted functions in memory (so built and generated
models have the same layer names and compute bit for bit the same); ``emit`` returns source.
``export_weights``/``import_weights`` move weights in torch layout (``transfer_weights``).

``optimize="inference"`` gives the inference build: BatchNorms folded into the conv or dense
layer next to them; ``load_plain_weights(model, plain)`` fills it from a plain model."""

from __future__ import annotations

import hashlib
import types
from typing import Any

from .emit import OPTIMIZE, emit_source
from .fold import folded_layers, load_plain_weights
from .weights import export_weights, flat_layers, import_weights

_MODULES: dict[str, types.ModuleType] = {}


def emit(spec: Any, optimize: str | None = None, **options: Any) -> str:
    """Standalone Keras module source for ``spec``; ``optimize``: None or ``"inference"``."""
    if options:
        raise TypeError(f"unknown options for the keras backend: {sorted(options)}")
    if optimize not in OPTIMIZE:
        raise ValueError(f"optimize must be one of {list(OPTIMIZE)}, got {optimize!r}")
    return emit_source(spec, optimize)


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


def build(spec: Any, optimize: str | None = None, **options: Any) -> Any:
    """A functional ``keras.Model`` for ``spec`` with the spec's params (after overrides).

    The model is channels-last: it takes (batch, H, W, C) for the spec's (C, H, W). With
    ``optimize="inference"`` fill it with ``load_plain_weights(model, plain)``.
    """
    module = _module(spec, emit(spec, optimize, **options))
    return module.build(**dict(spec.params), input_shape=tuple(spec.graph.input_shape))


__all__ = [
    "build",
    "emit",
    "export_weights",
    "flat_layers",
    "folded_layers",
    "import_weights",
    "load_plain_weights",
]
