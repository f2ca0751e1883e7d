"""The public API: load_spec, build, emit, compile_spec, transfer_weights, summarize."""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import Diagnostic, DiagnosticSink, Location, SpecError
from .expand import Expander
from .identifiers import check_graph_names, check_identifiers
from .ir import Graph
from .library import close_names, find_spec, present
from .loader import LoadedDocument
from .names import check_names, check_unread_params
from .resolve import load_merged, resolve_env, validate_partially
from .schema import SpecModel


@dataclass(frozen=True)
class Spec:
    """A loaded, validated and expanded spec: the template model, resolved params, the IR."""

    name: str
    file: str
    model: SpecModel
    params: dict[str, Any]
    env: dict[str, Any]
    graph: Graph
    overrides: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[Diagnostic, ...] = ()
    document: LoadedDocument | None = field(default=None, repr=False, compare=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The (C, H, W) input shape the graph was inferred for."""
        return self.graph.input_shape


def load_spec(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Spec:
    """Load, validate, resolve and expand a spec file. Raises SpecError listing every problem.

    ``path`` is a spec file, or the name of a library spec (``"resnet50"``); an existing
    file wins. ``overrides`` sets params (``{"num_classes": 10}``) or ``input_shape``.
    """
    path = find_spec(path)
    if not present(path):
        raise SpecError.single(Location(str(path)), "", missing_spec_message(str(path)))
    doc = load_merged(path, str(path))
    model, opaque, invalid = validate_partially(doc)  # goes on past invalid nodes
    sink = DiagnosticSink()
    for diagnostic in invalid:
        sink.error(diagnostic.location, diagnostic.path, diagnostic.message)
    overrides = dict(overrides or {})
    reads = check_names(model, doc.locate, sink)
    if not invalid:  # a node that failed validation reads names that cannot be known
        check_unread_params(model, reads, doc.locate, sink, Location(str(path)).file)
    check_identifiers(model, doc.locate, sink)
    env, input_shape = resolve_env(model, doc, overrides, sink, Location(str(path)))
    if input_shape is None:
        sink.raise_if_errors()
    assert input_shape is not None
    expander = Expander(model, env, doc.locate, sink, opaque)
    graph = expander.run(input_shape)
    if graph is not None:
        check_graph_names(graph, sink)
    sink.raise_if_errors()
    assert graph is not None
    graph.check()
    params = {k: env[k] for k in model.params}
    return Spec(
        name=model.name,
        file=str(path),
        model=model,
        params=params,
        env=env,
        graph=graph,
        overrides=overrides,
        warnings=tuple(sink.warnings),
        document=doc,
    )


def missing_spec_message(name: str) -> str:
    """What to say about a spec path that names no file and no library spec."""
    close = close_names(name)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return f"no spec file {name!r} and no library spec of that name{hint}; see 'rescompile list'"


def _as_spec(spec: Spec | str | os.PathLike[str]) -> Spec:
    return spec if isinstance(spec, Spec) else load_spec(spec)


def _internal_error(spec: Spec, backend: str, exc: SyntaxError) -> SpecError:
    """Our own error for emitted source that does not compile (a bug of rescompiler's, never
    to be shown as a traceback or run half-way)."""
    return SpecError.single(
        Location(spec.file),
        "",
        f"internal error: the emitted {backend} source does not compile "
        f"(line {exc.lineno}: {exc.msg}); please report this spec",
    )


def build(spec: Spec | str | os.PathLike[str], backend: str = "torch", **options: Any) -> Any:
    """Build the model with a backend: a ``torch.nn.Module`` or a ``keras.Model``.

    Raises :class:`~rescompiler.registry.BackendError` naming the extra to install when the
    backend's framework is missing (emitting never needs it)."""
    from .registry import BackendError, get_backend, missing_framework

    spec = _as_spec(spec)
    module = get_backend(backend)
    try:
        return module.build(spec, **options)
    except SyntaxError as exc:
        raise _internal_error(spec, backend, exc) from None
    except ModuleNotFoundError as exc:
        hint = missing_framework(backend, exc)
        if hint is None:
            raise
        raise BackendError(hint) from None


def emit(spec: Spec | str | os.PathLike[str], backend: str = "torch", **options: Any) -> str:
    """Source of a standalone module for ``spec`` (depends only on the backend's framework).
    The source is checked to compile: an emitter bug is a SpecError, never a broken file."""
    from .registry import get_backend

    spec = _as_spec(spec)
    source = get_backend(backend).emit(spec, **options)
    try:
        compile(source, f"<{spec.name}_{backend}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise _internal_error(spec, backend, exc) from None
    return source


def check_backends(spec: Spec, backends: tuple[str, ...] = ("torch", "keras")) -> None:
    """Emit (never build) ``spec`` with each built-in backend and raise one SpecError with
    every backend's refusal (a construct one framework cannot express, a name it reserves), so
    that ``--check`` passing means every backend can emit the spec. Imports no framework."""
    from .registry import BackendError

    found: list[Diagnostic] = []
    for backend in backends:
        try:
            emit(spec, backend)
        except SpecError as exc:
            found += [d for d in exc.diagnostics if d not in found]
        except BackendError:  # a backend that cannot even be imported here is not checked
            continue
    if found:
        raise SpecError(found)


def file_mode(target: Path) -> int:
    """The mode a plain ``open(target, "w")`` would give: the existing file's, else 0666
    less the umask (0644 under umask 022)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file and a rename in the same folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, file_mode(target))  # mkstemp makes 0600; a generated file is ordinary
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_name(name: str, backend: str, optimize: str | None = None, **_: Any) -> str:
    """File name of an emitted module: ``resnet50_torch.py``, ``resnet50_torch_inference.py``."""
    return f"{name}_{backend}{'_' + optimize if optimize else ''}.py"


def compile_spec(
    path: str | os.PathLike[str],
    backend: str = "torch",
    out_dir: str | os.PathLike[str] = "generated",
    overrides: dict[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Emit ``<out_dir>/<name>_<backend>.py`` atomically and return its path.

    With ``optimize="inference"`` the file is ``<name>_<backend>_inference.py``.
    """
    spec = load_spec(path, overrides)
    source = emit(spec, backend, **options)
    target = Path(out_dir) / output_name(spec.name, backend, **options)
    write_atomic(target, source)
    return target


class TransferError(ValueError):
    """A model given to :func:`transfer_weights` was not built from the spec."""


def transfer_weights(spec: Spec | str | os.PathLike[str], src_model: Any, dst_model: Any) -> None:
    """Copy every parameter and BN statistic from ``src_model`` to ``dst_model`` (any backends).

    Weights move by IR node (a torch module path, a Keras layer name), not by layer order.
    Raises :class:`TransferError` when either model does not belong to ``spec``: a layer the
    spec names is missing, has another shape, or the model holds weights the spec does not know.
    """
    from .registry import backend_of, get_backend

    spec = _as_spec(spec)
    src_name, dst_name = backend_of(src_model), backend_of(dst_model)
    src, dst = get_backend(src_name), get_backend(dst_name)
    try:
        weights = src.export_weights(spec, src_model)
    except (KeyError, ValueError) as exc:
        detail = exc.args[0] if exc.args else exc
        raise TransferError(
            f"{spec.file}: the source {src_name} model was not built from this spec: {detail}"
        ) from None
    try:
        dst.import_weights(spec, dst_model, weights)
    except (KeyError, ValueError) as exc:
        detail = exc.args[0] if exc.args else exc
        raise TransferError(
            f"{spec.file}: the target {dst_name} model was not built from this spec: {detail}"
        ) from None


__all__ = [
    "Spec",
    "SpecError",
    "TransferError",
    "build",
    "compile_spec",
    "emit",
    "load_spec",
    "transfer_weights",
]
