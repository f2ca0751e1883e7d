"""Backend registry: built-in backends plus the ``rescompiler.backends`` entry-point group.

A backend is a module (or object) with ``build(spec, **options)`` and ``emit(spec, **options)``;
weight transfer uses ``export_weights(spec, model)`` / ``import_weights(spec, model, weights)``.
Backends are imported only when asked for, so the core never imports a framework.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

BUILTIN: dict[str, str] = {
    "torch": "rescompiler.backends.torch",
    "keras": "rescompiler.backends.keras",
}
EXTRAS: dict[str, str] = {"torch": "torch", "keras": "keras"}
# the top-level modules each built-in backend's framework brings
FRAMEWORK_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "numpy"),
    "keras": ("keras", "tensorflow", "numpy", "h5py"),
}
_loaded: dict[str, Any] = {}


class BackendError(RuntimeError):
    """A backend is unknown, or its framework is not installed."""


def available_backends() -> list[str]:
    """Names of built-in and entry-point backends."""
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group="rescompiler.backends"))
    return sorted(names)


def get_backend(name: str) -> Any:
    """Import (once) and return the backend called ``name``."""
    if name in _loaded:
        return _loaded[name]
    target = None
    for ep in entry_points(group="rescompiler.backends"):
        if ep.name == name:
            target = ep.value
    target = target or BUILTIN.get(name)
    if target is None:
        raise BackendError(
            f"unknown backend {name!r}; available: {', '.join(available_backends())}"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} ({module_name}) cannot be imported: {exc}") from None
    backend = getattr(module, attr) if attr else module
    for needed in ("build", "emit"):
        if not hasattr(backend, needed):
            raise BackendError(f"backend {name!r} ({target}) does not implement {needed}()")
    _loaded[name] = backend
    return backend


def missing_framework(name: str, exc: ModuleNotFoundError) -> str | None:
    """The message for a backend whose framework is not installed (``exc`` names the missing
    module), or None when the missing module is not the framework's."""
    missing = (exc.name or "").split(".")[0]
    if missing not in FRAMEWORK_MODULES.get(name, ()):
        return None
    extra = EXTRAS.get(name, name)
    return (
        f"building with the {name} backend needs {missing}, which is not installed; "
        f"install it with: pip install 'rescompiler[{extra}]' (emitting source needs no framework)"
    )


def backend_of(model: Any) -> str:
    """Which backend a model object belongs to, judged by its class's module."""
    module = type(model).__module__
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("keras", "tensorflow", "tf_keras"):
            return "keras"
    raise BackendError(f"cannot tell which backend built a {type(model).__name__} ({module})")
