"""``rescompile SPEC --verify``: one spec, four models, one function.

Builds the torch model directly and from its emitted source, and the Keras model both ways;
draws one set of random weights (the spec's initialisers plus non-trivial BatchNorm statistics),
moves it to the other three models with :func:`rescompiler.transfer_weights` (torch→torch,
torch→keras, keras→keras), runs one random batch through all four in eval mode and compares every
pair. Within a framework the outputs must be bit-identical; across frameworks DESIGN.md's policy
applies: ``max|a-b| <= 1e-4 * max|ref| + 1e-5``. The weights also make a torch→keras→torch round
trip that must be bit-identical.

The frameworks are imported only here, torch (and triton, when installed) before tensorflow:
importing triton after tensorflow segfaults with torch 2.14.1 + tensorflow-cpu 2.21. A process
that has already loaded tensorflow runs the check in a subprocess instead.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .frameworks import import_keras, import_torch

if TYPE_CHECKING:
    import numpy as np

    from .api import Spec

MODELS = ("torch built", "torch generated", "keras built", "keras generated")
REL_TOL = 1e-4
ABS_TOL = 1e-5


class VerifyError(RuntimeError):
    """The check could not run (a framework or the device is missing)."""


@dataclass
class Pair:
    """The difference between two models' outputs; ``a`` is the reference."""

    a: str
    b: str
    max_abs: float
    max_rel: float
    bound: float
    ok: bool
    output: str = ""  # which of a model's named outputs ("" for a model's one output)


@dataclass
class Report:
    """What ``verify`` measured: one row per pair of models, plus the weight round trip."""

    spec: str
    input_shape: list[int]
    batch: int
    seed: int
    device: dict[str, str]
    output_shape: list[int]
    pairs: list[Pair] = field(default_factory=list)
    round_trip_identical: bool = False

    @property
    def ok(self) -> bool:
        """Every pair within its bound and the round trip exact."""
        return self.round_trip_identical and all(p.ok for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ok`` included)."""
        out = asdict(self)
        out["ok"] = self.ok
        out["policy"] = {
            "same framework": "bit-identical",
            "across frameworks": f"max|a-b| <= {REL_TOL:g} * max|ref| + {ABS_TOL:g}",
            "max_rel": "max|a-b| / max|ref|",
        }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Inverse of :meth:`to_dict`."""
        fields = {k: v for k, v in data.items() if k not in ("ok", "policy", "pairs")}
        return cls(**fields, pairs=[Pair(**p) for p in data["pairs"]])

    def to_text(self) -> str:
        """A table of the pairs, then a verdict line."""
        shape = "×".join(map(str, self.input_shape))
        devices = ", ".join(f"{k} on {v}" for k, v in self.device.items())
        named = any(p.output for p in self.pairs)
        width = max([len(p.output) for p in self.pairs] + [6]) + 1 if named else 0
        column = f"{'output':<{width}}" if named else ""
        lines = [
            f"{self.spec}: batch {self.batch} of {shape}, seed {self.seed}, {devices}",
            f"{column}{'a':<16} {'b':<16} {'max|a-b|':>11} {'max rel':>11} {'bound':>11}  ok",
        ]
        for p in self.pairs:
            lines.append(
                (f"{p.output:<{width}}" if named else "")
                + f"{p.a:<16} {p.b:<16} {p.max_abs:>11.3g} {p.max_rel:>11.3g} {p.bound:>11.3g}  "
                + ("yes" if p.ok else "NO")
            )
        lines.append(
            "weights torch→keras→torch: " + ("identical" if self.round_trip_identical else "DIFFER")
        )
        lines.append("verified" if self.ok else "FAILED: beyond the equivalence policy")
        return "\n".join(lines) + "\n"


def compare(a: str, b: str, ref: np.ndarray, out: np.ndarray, exact: bool) -> Pair:
    """One pair's differences; ``exact`` demands bit-identical outputs."""
    import numpy as np

    if ref.shape != out.shape:
        inf = float("inf")
        return Pair(a, b, inf, inf, 0.0, False)
    diff = float(np.abs(ref.astype(np.float64) - out.astype(np.float64)).max(initial=0.0))
    scale = float(np.abs(ref).max(initial=0.0))
    bound = 0.0 if exact else REL_TOL * scale + ABS_TOL
    finite = bool(np.isfinite(ref).all() and np.isfinite(out).all())
    same = bool(np.array_equal(ref, out)) if exact else diff <= bound
    return Pair(a, b, diff, diff / scale if scale else diff, bound, finite and same)


def _import_frameworks() -> tuple[Any, Any]:
    """torch (and triton) first, then keras."""
    try:
        torch = import_torch()
        keras = import_keras()
    except ImportError as exc:
        raise VerifyError(
            f"--verify needs torch and Keras ({exc}); "
            "install them with: pip install 'rescompiler[torch,keras]'"
        ) from None
    return torch, keras


def _import_file(path: Path) -> Any:
    """Import an emitted module from its file, as a user would."""
    module_spec = importlib.util.spec_from_file_location(f"_rescompiler_verify_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def randomize_batchnorm(model: Any, seed: int) -> None:
    """Give a torch model's BatchNorm layers non-trivial affine parameters and statistics."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                for name, low, high in (
                    ("weight", 0.5, 1.5),
                    ("bias", -0.2, 0.2),
                    ("running_mean", -0.2, 0.2),
                    ("running_var", 0.5, 1.5),
                ):
                    tensor = getattr(module, name, None)
                    if isinstance(tensor, torch.Tensor):
                        values = torch.rand(n, generator=generator) * (high - low) + low
                        tensor.copy_(values.to(tensor.device))


def _run_in_process(spec: Spec, device: str, seed: int, batch: int) -> Report:
    torch, keras = _import_frameworks()
    import numpy as np

    from . import api

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VerifyError("--device cuda: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
    gpu = device.startswith("cuda") and bool(tf.config.list_physical_devices("GPU"))
    keras_device = "gpu" if gpu else "cpu"
    params = dict(spec.params)
    shape = tuple(spec.graph.input_shape)

    with tempfile.TemporaryDirectory(prefix="rescompile-verify-") as tmp:
        sources = {}
        for backend in ("torch", "keras"):
            path = Path(tmp) / f"{spec.name}_{backend}.py"
            path.write_text(api.emit(spec, backend))
            sources[backend] = _import_file(path)

        torch.manual_seed(seed)
        models: dict[str, Any] = {"torch built": api.build(spec, "torch")}
        randomize_batchnorm(models["torch built"], seed + 1)
        models["torch generated"] = sources["torch"].build(**params, input_shape=shape)
        with tf.device(f"/{keras_device.upper()}:0"):
            keras.utils.set_random_seed(seed + 2)
            models["keras built"] = api.build(spec, "keras")
            models["keras generated"] = sources["keras"].build(**params, input_shape=shape)
        api.transfer_weights(spec, models["torch built"], models["torch generated"])
        api.transfer_weights(spec, models["torch built"], models["keras built"])
        api.transfer_weights(spec, models["keras built"], models["keras generated"])

        back = sources["torch"].build(**params, input_shape=shape)
        api.transfer_weights(spec, models["keras generated"], back)
        reference = models["torch built"].state_dict()
        round_trip = all(
            torch.equal(value, reference[key]) for key, value in back.state_dict().items()
        ) and set(back.state_dict()) == set(reference)

        x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
        outputs: dict[str, dict[str, np.ndarray]] = {}  # model -> output name -> NCHW array
        for name in MODELS[:2]:
            model = models[name].to(device).eval()
            with torch.no_grad():
                y = model(torch.from_numpy(x).to(device))
            named = y if isinstance(y, dict) else {"": y}
            outputs[name] = {k: v.cpu().numpy() for k, v in named.items()}
        x_keras = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.ERROR)  # eager grouped convs warn about retracing
        try:
            for name in MODELS[2:]:
                with tf.device(f"/{keras_device.upper()}:0"):
                    y = models[name](x_keras, training=False)
                named = y if isinstance(y, dict) else {"": y}
                arrays = {k: np.asarray(v) for k, v in named.items()}
                outputs[name] = {
                    k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for k, v in arrays.items()
                }
        finally:
            tf_logger.setLevel(level)

    report = Report(
        spec=spec.file,
        input_shape=list(shape),
        batch=batch,
        seed=seed,
        device={"torch": device, "keras": keras_device},
        output_shape=list(next(iter(outputs["torch built"].values())).shape[1:]),
        round_trip_identical=round_trip,
    )
    for i, a in enumerate(MODELS):
        for b in MODELS[i + 1 :]:
            exact = a.split()[0] == b.split()[0]
            for key, ref in outputs[a].items():
                missing = np.full((0,), np.nan, dtype=np.float32)  # a shape no output has
                pair = compare(a, b, ref, outputs[b].get(key, missing), exact)
                pair.output = key
                report.pairs.append(pair)
    return report


def _tensorflow_first() -> bool:
    """True when this process loaded tensorflow but not triton: importing it now may crash."""
    return (
        "tensorflow" in sys.modules
        and "triton" not in sys.modules
        and importlib.util.find_spec("triton") is not None
    )


def verify(spec: Spec, device: str = "cpu", seed: int = 0, batch: int = 2) -> Report:
    """Check that torch and Keras, built and generated, compute the same function for ``spec``.

    ``device`` places the torch models (``cpu``, ``cuda``, ``cuda:1``); the Keras models run on a
    GPU when one is asked for and TensorFlow sees one. TF32 is disabled in both frameworks.
    Raises :class:`VerifyError` when a framework or the device is missing.
    """
    if not _tensorflow_first():
        return _run_in_process(spec, device, seed, batch)
    command = [
        sys.executable,
        "-m",
        "rescompiler.verifier",
        spec.file,
        json.dumps(spec.overrides),
        device,
        str(seed),
        str(batch),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        raise VerifyError(f"the verify subprocess failed: {lines[-1]}")
    return Report.from_dict(json.loads(done.stdout))


def _main(argv: list[str]) -> int:
    """Subprocess entry: ``python -m rescompiler.verify SPEC OVERRIDES_JSON DEVICE SEED BATCH``."""
    from .api import load_spec

    path, overrides, device, seed, batch = argv
    spec = load_spec(path, json.loads(overrides))
    report = _run_in_process(spec, device, int(seed), int(batch))
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
