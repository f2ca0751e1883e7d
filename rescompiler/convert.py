"""``rescompile SPEC --convert CHECKPOINT --to keras|torch -o OUT``: port weights through a spec.

A torch checkpoint is a ``state_dict`` saved with ``torch.save`` (a torchvision one, or a
training checkpoint that wraps it under ``state_dict``/``model``/``model_state_dict``/
``state_dict_ema``; DataParallel's ``module.`` prefix is removed). It is read with
``weights_only=True``: a checkpoint never runs code. A Keras checkpoint is a ``.weights.h5`` file
from ``model.save_weights``. The source checkpoint must load strictly into the model the spec
builds; the weights then move by IR node (:func:`rescompiler.transfer_weights`) and the result is
written atomically: an interrupted or failed conversion leaves no file behind.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .frameworks import import_keras, import_torch

if TYPE_CHECKING:
    from .api import Spec

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "net")
FORMATS = {"torch": (".pt", ".pth", ".bin", ".ckpt"), "keras": (".weights.h5",)}


class ConvertError(ValueError):
    """The checkpoint cannot be read, or does not belong to the spec."""


def _listing(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def backend_of_file(path: str | os.PathLike[str]) -> str | None:
    """``torch`` or ``keras`` judged by the file name, or None."""
    name = Path(path).name.lower()
    for backend, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return backend
    return None


def unwrap_state_dict(obj: Any, source: str) -> dict[str, Any]:
    """The tensor dict inside a torch checkpoint, without a ``module.`` prefix."""
    import torch

    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ConvertError(f"{source}: not a torch state_dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConvertError(f"{source}: holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def load_torch_checkpoint(spec: Spec, model: Any, path: str | os.PathLike[str]) -> None:
    """Load a torch checkpoint into ``model`` strictly; :class:`ConvertError` names what differs."""
    torch = import_torch()
    source = str(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConvertError(f"{source}: no such file") from None
    except Exception as exc:  # pickle/zip errors, or an object weights_only refuses
        first = str(exc).strip().split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(
            f"{source}: cannot read a torch checkpoint (a state_dict saved with torch.save): "
            f"{first}"
        ) from None
    state = unwrap_state_dict(obj, source)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listing(unexpected)}")
        raise ConvertError(f"{source}: does not match {spec.file}: {'; '.join(parts)}")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ConvertError(
                f"{source}: does not match {spec.file}: {key} has shape "
                f"{tuple(state[key].shape)}, the spec builds {tuple(value.shape)}"
            )
        if state[key].dtype.is_floating_point and not torch.isfinite(state[key]).all():
            raise ConvertError(f"{source}: {key} holds NaN or infinite values")
    model.load_state_dict(state, strict=True)


def _keras_load_problem(exc: Exception) -> str:
    """Keras' multi-line load error, in one line."""
    text = str(exc)
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    layer = re.search(r"for object <\w+ name=([^,>]+)", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if count and layer:
        detail = f", e.g. {layer.group(1)}"
        if shapes:
            detail += f": the spec builds {shapes.group(1)}, the file holds {shapes.group(2)}"
        return f"{count.group(1)} layers could not be loaded{detail}"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_keras_checkpoint(spec: Spec, model: Any, path: str | os.PathLike[str]) -> None:
    """Load a ``.weights.h5`` file into ``model``; :class:`ConvertError` when it does not fit.

    A partial load (Keras warns that some layers keep fresh weights) is an error too.
    """
    source = str(path)
    if not Path(path).is_file():
        raise ConvertError(f"{source}: no such file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as exc:  # h5py/keras raise several kinds on a foreign file
            problem = _keras_load_problem(exc)
            raise ConvertError(f"{source}: does not match {spec.file}: {problem}") from None
    skipped = [w for w in caught if "freshly-initialized" in str(w.message)]
    if skipped:
        raise ConvertError(
            f"{source}: does not match {spec.file}: {len(skipped)} parts of the model "
            "are not in the file"
        )
    for w in caught:
        if "freshly-initialized" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _write_atomically(target: Path, save: Any) -> None:
    """``save(tmp_path)`` next to ``target``, then rename; nothing is left on failure."""
    from .api import file_mode

    suffix = ".weights.h5" if target.name.endswith(".weights.h5") else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        os.unlink(tmp)  # keras refuses to overwrite without asking
        save(tmp)
        os.chmod(tmp, file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be a checkpoint to read (missing, not a regular file), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as exc:
        return f"cannot read: {getattr(exc, 'strerror', None) or exc}"
    if not stat.S_ISREG(info.st_mode):
        return "is a directory" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
    return None


def convert_weights(
    spec: Spec,
    source: str | os.PathLike[str],
    to: str,
    out: str | os.PathLike[str],
) -> Path:
    """Port the checkpoint ``source`` to backend ``to`` through ``spec``; returns the written path.

    torch → keras writes a ``.weights.h5`` file (``model.load_weights`` reads it); keras → torch
    writes a ``state_dict`` with ``torch.save``.
    """
    from .api import build, transfer_weights

    if to not in FORMATS:
        raise ValueError(f"--to must be torch or keras, got {to!r}")
    src_backend = "keras" if to == "torch" else "torch"
    target = Path(out)
    if to == "keras" and not target.name.endswith(".weights.h5"):
        raise ValueError(f"{target}: a Keras weights file must end in .weights.h5")
    if not target.parent.is_dir():
        raise ValueError(f"{target.parent}: no such directory")
    if target.resolve() == Path(source).resolve():
        raise ValueError(f"{target}: would overwrite the checkpoint being converted")
    problem = checkpoint_problem(source)  # checked before the frameworks load (seconds)
    if problem is not None:
        raise ConvertError(f"{source}: {problem}")
    torch = import_torch()  # the torch stack always loads before tensorflow
    import_keras()
    if src_backend == "torch":
        model = build(spec, "torch")
        load_torch_checkpoint(spec, model, source)
        dst = build(spec, "keras")
        transfer_weights(spec, model, dst)
        _write_atomically(target, dst.save_weights)
    else:
        model = build(spec, "keras")
        load_keras_checkpoint(spec, model, source)
        dst = build(spec, "torch")
        transfer_weights(spec, model, dst)
        _write_atomically(target, lambda p: torch.save(dst.state_dict(), p))
    return target
