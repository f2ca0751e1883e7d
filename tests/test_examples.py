"""The training examples (examples/), run as subprocesses with few epochs: generated torch and
Keras modules learn the digits, a 2-process DDP run keeps its ranks identical and matches one
process, and the plain stack trains worse than the residual network of the same depth.

Each script runs in its own process (torch and tensorflow never share one: importing triton
after tensorflow segfaults), and DDP runs through ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SPECS

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

EXAMPLES = ROOT / "examples"
EXAMPLE_SPECS = EXAMPLES / "specs"
EPOCHS = "6"  # 98-99% test accuracy; the ≥ 95% bar leaves room
TRAIN_IMAGES = 1437  # 80% of 1797, stratified


def run(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` from the repository root; capture text output.

    Training runs use one thread per process (``--threads 1``, the torch default of the
    scripts): on a busy 2-core machine a second intra-op thread made training 6-30× slower
    (spinning OpenMP workers), not faster.
    """
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> None:
    """Assert a successful run, showing its output when it is not."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def read_metrics(path: Path) -> dict[str, Any]:
    """The ``--metrics`` JSON a script wrote."""
    return json.loads(path.read_text())


def epoch_lines(stdout: str) -> list[str]:
    """The per-epoch lines a training script printed."""
    return [line for line in stdout.splitlines() if line.lstrip().startswith("epoch ")]


def test_specs_extend_the_library_and_differ_only_in_the_merge() -> None:
    import rescompiler

    digits = rescompiler.load_spec(EXAMPLE_SPECS / "digits_resnet.yaml")
    assert digits.input_shape == (1, 8, 8)
    assert digits.document is not None
    assert digits.document.data["extends"] == "../../specs/cifar_resnet20.yaml"
    cifar = rescompiler.load_spec(SPECS / "cifar_resnet20.yaml", {"input_shape": [1, 8, 8]})
    assert [n.op for n in cifar.graph.nodes] == [
        n.op for n in rescompiler.load_spec(SPECS / "cifar_resnet20.yaml").graph.nodes
    ]
    assert digits.graph.nodes[-1].shape == (10,)

    plain = rescompiler.load_spec(EXAMPLE_SPECS / "deep_plain.yaml")
    residual = rescompiler.load_spec(EXAMPLE_SPECS / "deep_residual.yaml")
    merge_ops = {"add", "subsample", "channel_pad"}
    assert not any(n.op in merge_ops for n in plain.graph.nodes)
    adds = [n for n in residual.graph.nodes if n.op == "add"]
    assert len(adds) == 3 * (44 - 2) // 6  # one merge per basic block
    kept = [(n.id, n.op, n.shape, n.params) for n in residual.graph.nodes if n.op not in merge_ops]
    assert kept == [(n.id, n.op, n.shape, n.params) for n in plain.graph.nodes]
    convs = [n for n in plain.graph.nodes if n.op in {"conv", "linear"}]
    assert len(convs) == 44


def test_torch_single_process_and_ddp(tmp_path: Path) -> None:
    """One process reaches ≥ 95%; two DDP ranks end bit-identical, each on its shard, within
    2 points of one process (same global batch, seed and schedule)."""
    import rescompiler

    single = tmp_path / "single.json"
    result = run(
        EXAMPLES / "train_digits.py",
        "--epochs",
        EPOCHS,
        "--gen-dir",
        tmp_path / "gen",
        "--metrics",
        single,
        "--threads",
        "1",
    )
    ok(result)
    one = read_metrics(single)
    assert one["backend"] == "torch" and one["world_size"] == 1
    assert one["test_accuracy"] >= 0.95, result.stdout
    assert len(epoch_lines(result.stdout)) == int(EPOCHS)
    assert one["history"][-1]["train_loss"] < one["history"][0]["train_loss"]
    assert "batch/s" in result.stderr or "s/batch" in result.stderr  # tqdm's bar
    # The model trained is the generated module, written where --gen-dir says.
    generated = tmp_path / "gen" / "digits_resnet_torch.py"
    spec = rescompiler.load_spec(EXAMPLE_SPECS / "digits_resnet.yaml")
    assert generated.read_text() == rescompiler.emit(spec, backend="torch")

    ddp = tmp_path / "ddp.json"
    result = run(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        EXAMPLES / "train_digits.py",
        "--epochs",
        EPOCHS,
        "--gen-dir",
        tmp_path / "gen",
        "--metrics",
        ddp,
        "--no-progress",
    )
    ok(result)
    two = read_metrics(ddp)
    assert two["world_size"] == 2 and [r["rank"] for r in two["ranks"]] == [0, 1]
    digests = {r["params_sha256"] for r in two["ranks"]}
    assert len(digests) == 1 and two["params_identical"], two["ranks"]
    assert two["buffers_identical"], two["ranks"]
    assert two["shard_sizes"] == [math.ceil(TRAIN_IMAGES / 2)] * 2  # each rank its half
    assert two["test_accuracy"] >= 0.95, result.stdout
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.02, (one, two)
    assert len(epoch_lines(result.stdout)) == int(EPOCHS)  # rank 0 prints, rank 1 does not


def test_keras_fit(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    metrics = tmp_path / "keras.json"
    result = run(
        EXAMPLES / "train_digits.py",
        "--backend",
        "keras",
        "--epochs",
        EPOCHS,
        "--gen-dir",
        tmp_path / "gen",
        "--metrics",
        metrics,
        "--no-progress",
        "--threads",
        "1",
    )
    ok(result)
    figures = read_metrics(metrics)
    assert figures["backend"] == "keras"
    assert figures["test_accuracy"] >= 0.95, result.stdout
    assert len(epoch_lines(result.stdout)) == int(EPOCHS)
    assert (tmp_path / "gen" / "digits_resnet_keras.py").is_file()


def test_plain_vs_residual(tmp_path: Path) -> None:
    png, metrics = tmp_path / "curves" / "plain_vs_residual.png", tmp_path / "pvr.json"
    result = run(
        EXAMPLES / "plain_vs_residual.py",
        "--epochs",
        "3",
        "--out",
        png,
        "--gen-dir",
        tmp_path / "gen",
        "--metrics",
        metrics,
        "--no-progress",
        "--threads",
        "1",
    )
    ok(result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    figures = read_metrics(metrics)
    assert figures["same_initial_weights"] and figures["layers"] == 44
    loss = figures["final_train_loss"]
    assert loss["residual"] < loss["plain"], loss
    assert "final training loss: plain" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--epochs", "0"], 2, "expected a positive integer"),
        (["--backend", "jax"], 2, "invalid choice"),
        (["--set", "depth"], 2, "expected KEY=VALUE"),
        (["--spec", "examples/specs/missing.yaml"], 1, "no spec file"),
        (["--spec", "specs/cifar_resnet20.yaml"], 1, "the digits are (1, 8, 8)"),
        (["--set", "width=3"], 1, "unknown params"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = run(EXAMPLES / "train_digits.py", "--epochs", "1", "--gen-dir", tmp_path, *args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train_digits.py: error:") and message in last, result.stderr


def test_plain_vs_residual_rejects_a_non_png_output(tmp_path: Path) -> None:
    result = run(EXAMPLES / "plain_vs_residual.py", "--out", tmp_path / "curves.txt")
    assert result.returncode == 2
    assert "--out must name a .png file" in result.stderr and "Traceback" not in result.stderr


def test_fpn_on_spec_backbones_equals_torchvision() -> None:
    """examples/fpn_backbone.py: the resnet50 and convnext_tiny features specs, compiled and
    imported, hold torchvision's weights, feed an FPN, and (``--check``) equal
    ``create_feature_extractor`` bit for bit; a spec without named outputs is one line."""
    for spec, widths in (
        ("resnet50_features.yaml", (256, 512, 1024, 2048)),
        ("convnext_tiny_features.yaml", (96, 192, 384, 768)),
    ):
        result = run(
            EXAMPLES / "fpn_backbone.py", "--spec", EXAMPLE_SPECS / spec, "--size", "64", "--check"
        )
        ok(result)
        levels = [line.split() for line in result.stdout.splitlines() if "-> FPN" in line]
        shapes = [tuple(int(w.strip("(,)")) for w in words[1:5]) for words in levels]
        pyramid = [tuple(int(w.strip("(,)")) for w in words[7:11]) for words in levels]
        sizes = [16, 8, 4, 2]  # 64 / 4, 8, 16, 32
        assert shapes == [(1, c, s, s) for c, s in zip(widths, sizes, strict=True)]
        assert pyramid == [(1, 256, s, s) for s in sizes]
        assert "bit for bit" in result.stdout
    result = run(EXAMPLES / "fpn_backbone.py", "--spec", SPECS / "resnet18.yaml", "--size", "64")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "has no named outputs" in result.stderr
