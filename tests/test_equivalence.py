"""Cross-backend equivalence for the whole library, ``rescompile --verify`` and ``--convert``.

Every spec: the torch model (its initialisers plus non-trivial BatchNorm statistics) moves to
Keras with ``transfer_weights`` and both compute the same function within DESIGN.md's policy, at
a small input size, on every device present (CUDA runs with TF32 off in both frameworks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from library import ROOT, library, small_input, spec_path

import rescompiler
from rescompiler import cli
from rescompiler.verifier import randomize_batchnorm

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def device_or_skip(device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return device


@pytest.fixture(autouse=True)
def no_tf32() -> Any:
    """TF32 off in both frameworks (it changes float32 results on Ampere+ GPUs)."""
    import tensorflow as tf

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_within_policy(ours: np.ndarray, ref: np.ndarray) -> float:
    """DESIGN.md: max|a-b| <= 1e-4 * max|ref| + 1e-5 (never sorted or signed differences)."""
    assert ours.shape == ref.shape
    assert np.isfinite(ref).all() and np.isfinite(ours).all()
    diff = float(np.abs(ours.astype(np.float64) - ref).max())
    bound = 1e-4 * float(np.abs(ref).max()) + 1e-5
    assert diff <= bound, f"max|a-b| = {diff:.3g} > {bound:.3g}"
    return diff


def keras_to_torch_layout(y: np.ndarray) -> np.ndarray:
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", library())
def test_torch_and_keras_compute_the_same_function(name: str, device: str) -> None:
    device = device_or_skip(device)
    shape = small_input(name)
    spec = rescompiler.load_spec(spec_path(name), {"input_shape": shape})
    torch.manual_seed(0)
    source = rescompiler.build(spec, "torch")
    randomize_batchnorm(source, seed=1)
    target = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, target)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    source = source.to(device).eval()
    with torch.no_grad():
        expected = source(torch.from_numpy(x).to(device)).cpu().numpy()
    import tensorflow as tf

    gpu = device == "cuda" and tf.config.list_physical_devices("GPU")
    with tf.device("/GPU:0" if gpu else "/CPU:0"):
        got = keras_to_torch_layout(np.asarray(target(x.transpose(0, 2, 3, 1), training=False)))
    assert_within_policy(got, expected)
    # and back: keras → torch restores every tensor bit for bit
    back = rescompiler.build(spec, "torch")
    rescompiler.transfer_weights(spec, target, back)
    reference = source.cpu().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in back.state_dict().items())


# -- --verify ----------------------------------------------------------------------------------
VERIFY_JSON = ["specs/cifar_resnet20.yaml", "--verify", "--format", "json"]


def test_verify_cli_reports_every_pair_as_json() -> None:
    """A process of its own, as a user runs it (torch and Keras load in the right order)."""
    done = subprocess.run(
        [sys.executable, "-m", "rescompiler", *VERIFY_JSON],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["round_trip_identical"] is True
    models = {"torch built", "torch generated", "keras built", "keras generated"}
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert len(pairs) == 6 and {m for pair in pairs for m in pair} == models
    for (a, b), pair in pairs.items():
        assert pair["max_abs"] <= pair["bound"]
        if a.split()[0] == b.split()[0]:
            assert pair["max_abs"] == 0.0 and pair["bound"] == 0.0
        else:
            assert pair["bound"] > 0
    assert report["input_shape"] == [3, 32, 32] and report["output_shape"] == [10]


def test_verify_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(["specs/unet.yaml", "--verify", "--set", "input_shape=[3,42,42]"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("specs/unet.yaml: batch 2 of 3×42×42")
    assert sum(line.endswith("  yes") for line in lines) == 6
    assert lines[-2] == "weights torch→keras→torch: identical" and lines[-1] == "verified"


def test_verify_fails_when_a_backend_computes_something_else(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong weight in the Keras import must show as a failing pair and exit 1."""
    from rescompiler.backends.keras import weights

    original = weights.import_weights
    calls: list[Any] = []

    def skewed(spec: Any, model: Any, data: dict[str, dict[str, Any]]) -> None:
        if not calls:  # torch → keras built only; keras built → generated copies it as it is
            data = {k: dict(v) for k, v in data.items()}
            data["linear"]["bias"] = data["linear"]["bias"] + 0.01
        calls.append(model)
        original(spec, model, data)

    monkeypatch.setattr("rescompiler.backends.keras.import_weights", skewed)
    code = cli.run(["specs/cifar_resnet20.yaml", "--verify", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    failing = {(p["a"], p["b"]) for p in report["pairs"] if not p["ok"]}
    assert ("torch built", "keras built") in failing
    assert ("keras built", "keras generated") not in failing
    assert ("torch built", "torch generated") not in failing
    assert report["round_trip_identical"] is False


def test_verify_on_a_missing_device_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = cli.run(["specs/cifar_resnet20.yaml", "--verify", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().startswith("rescompile: error: --device cuda: ")
    # without a GPU driver this is known before torch loads; with one, torch is asked
    assert "no GPU driver" in err or "torch sees no CUDA device" in err


@pytest.mark.cuda
def test_verify_on_cuda() -> None:
    device_or_skip("cuda")
    spec = rescompiler.load_spec(spec_path("resnet50"), {"input_shape": [3, 64, 64]})
    report = rescompiler.verify(spec, device="cuda")
    assert report.device["torch"] == "cuda" and report.ok, report.to_text()


def test_verify_from_a_process_that_loaded_tensorflow_first() -> None:
    """tensorflow first, then verify: it runs in a subprocess instead of importing triton late."""
    code = (
        "import tensorflow, rescompiler, sys\n"
        "r = rescompiler.verify(rescompiler.load_spec('specs/cifar_resnet20.yaml'))\n"
        "print(r.ok, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False"]


# -- --convert ---------------------------------------------------------------------------------
def random_torchvision(name: str) -> Any:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    randomize_batchnorm(model, seed=3)
    return model.eval()


def convert(spec: str, source: Path, to: str, out: Path) -> int:
    return cli.run([f"specs/{spec}.yaml", "--convert", str(source), "--to", to, "-o", str(out)])


def test_resnet18_state_dict_to_keras_and_back_is_bit_identical(tmp_path: Path) -> None:
    original = random_torchvision("resnet18").state_dict()
    torch.save(original, tmp_path / "resnet18.pt")
    h5 = tmp_path / "resnet18.weights.h5"
    assert convert("resnet18", tmp_path / "resnet18.pt", "keras", h5) == 0
    assert convert("resnet18", h5, "torch", tmp_path / "back.pt") == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back) == list(original)
    for key, value in original.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def test_torchvision_resnet50_checkpoint_runs_in_keras_as_in_torchvision(tmp_path: Path) -> None:
    reference = random_torchvision("resnet50")
    checkpoint = tmp_path / "resnet50.pth"
    # a training checkpoint around a DataParallel state_dict
    wrapped = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 90, "state_dict": wrapped}, checkpoint)
    h5 = tmp_path / "resnet50.weights.h5"
    assert convert("resnet50", checkpoint, "keras", h5) == 0
    spec = rescompiler.load_spec(spec_path("resnet50"), {"input_shape": [3, 64, 64]})
    model = rescompiler.build(spec, "keras")
    model.load_weights(h5)
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
    assert_within_policy(got, expected)


def test_a_checkpoint_of_another_model_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(random_torchvision("resnet18").state_dict(), tmp_path / "r18.pt")
    out = tmp_path / "r50.weights.h5"
    assert convert("resnet50", tmp_path / "r18.pt", "keras", out) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rescompile: error: {tmp_path / 'r18.pt'}: does not match specs/")
    assert "missing layer1.0.conv3.weight" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pt"]

    keras_file = tmp_path / "r18.weights.h5"
    assert convert("resnet18", tmp_path / "r18.pt", "keras", keras_file) == 0
    assert convert("resnet50", keras_file, "torch", tmp_path / "r50.pt") == 1
    err = capsys.readouterr().err.strip()
    assert "layers could not be loaded, e.g. layer1_0_conv1" in err and "\n" not in err
    assert not (tmp_path / "r50.pt").exists()


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (b"not a checkpoint", 1, "cannot read a torch checkpoint"),
        (None, 2, "no such file"),  # a usage error, found before any framework loads
    ],
)
def test_unreadable_checkpoints(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    code: int,
    message: str,
) -> None:
    source = tmp_path / "bad.pt"
    if content is not None:
        source.write_bytes(content)
    assert convert("cifar_resnet20", source, "keras", tmp_path / "x.weights.h5") == code
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x.weights.h5").exists()


def test_a_checkpoint_with_nan_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = rescompiler.load_spec(spec_path("cifar_resnet20"))
    state = rescompiler.build(spec, "torch").state_dict()
    state["linear.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    assert convert("cifar_resnet20", tmp_path / "nan.pt", "keras", tmp_path / "x.weights.h5") == 1
    assert "linear.weight holds NaN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "keras", "-o", "x.h5"], "must end in .weights.h5"),
        (["--to", "keras"], "--convert needs --to torch|keras and -o OUTPUT_FILE"),
        (["-o", "x.weights.h5"], "--convert needs --to torch|keras and -o OUTPUT_FILE"),
        (["--to", "keras", "-o", "no/such/dir/x.weights.h5"], "no/such/dir: no such directory"),
    ],
)
def test_convert_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    source = tmp_path / "w.pt"
    source.write_bytes(b"")
    code = cli.run(["specs/cifar_resnet20.yaml", "--convert", str(source), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err


def test_transfer_refuses_models_of_another_spec() -> None:
    small = rescompiler.load_spec(spec_path("resnet18"))
    big = rescompiler.load_spec(spec_path("resnet34"))
    a, b = rescompiler.build(small, "torch"), rescompiler.build(big, "torch")
    before = {k: v.clone() for k, v in a.state_dict().items()}
    with pytest.raises(rescompiler.api.TransferError, match="source torch model was not built"):
        rescompiler.transfer_weights(small, b, a)
    with pytest.raises(rescompiler.api.TransferError, match="target torch model was not built"):
        rescompiler.transfer_weights(small, a, b)
    keras_small = rescompiler.build(small, "keras")
    with pytest.raises(rescompiler.api.TransferError, match="target keras model"):
        rescompiler.transfer_weights(big, b, keras_small)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in before.items())


def test_convert_moves_the_new_ops_weights(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """--convert carries layernorm, groupnorm, layer_scale, channels-last linear and stored
    normalization statistics torch → Keras → torch unchanged."""
    text = """\
    version: 1
    name: newops
    input_shape: [3, 16, 16]
    blocks:
      cn:
        body:
          - group: block
            body:
              - {op: conv, out: in_channels, kernel: 3, padding: 1, groups: in_channels}
              - {op: permute, to: channels_last}
              - {op: layernorm}
              - {op: linear, out: 8}
              - {op: gelu}
              - {op: linear, out: in_channels}
              - {op: permute, to: channels_first}
          - {op: layer_scale, name: gamma, value: 0.5}
          - {op: add, inputs: [gamma, input]}
    body:
      - {op: normalize, mean: [0.4, 0.5, 0.6], variance: [0.1, 0.2, 0.3]}
      - {op: conv, out: 4, kernel: 3, stride: 2, padding: 1}
      - {op: groupnorm, groups: 2}
      - {block: cn, repeat: 2}
    """
    path = write_spec(text)
    model = rescompiler.build(rescompiler.load_spec(path), "torch")
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    h5 = tmp_path / "w.weights.h5"
    run = ["--convert", str(tmp_path / "w.pt"), "--to", "keras", "-o", str(h5)]
    assert cli.run([str(path), *run]) == 0
    back = tmp_path / "back.pt"
    assert cli.run([str(path), "--convert", str(h5), "--to", "torch", "-o", str(back)]) == 0
    again = torch.load(back)
    original = model.state_dict()
    assert set(again) == set(original)
    assert all(torch.equal(again[k], original[k]) for k in original)
