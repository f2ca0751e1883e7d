"""Run every benchmark and write benchmarks/results.{json,md}.

    python -m benchmarks            # everything (several minutes on 2 cores)
    python -m benchmarks --quick    # fewer repeats; prints, writes nothing

Ratios compare against the hand-written reference measured in the same run, interleaved. The
Keras rows run in a subprocess (``python -m benchmarks.keras_rows``): this process has the torch
stack loaded, and importing triton after tensorflow segfaults.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch  # the torch stack before anything that may load tensorflow
import torchvision

import rescompiler

from .measure import interleaved_medians, interleaved_samples, medians_and_ratios, peak_tensor_bytes

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine params (as training would), so
    BN folding in the inference build changes the weights for real."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                uniform(module.running_mean, -0.1, 0.1)
                uniform(module.running_var, 0.5, 1.5)
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.1, 0.1)
    return model


# torchvision specs whose eval forward is measured against torchvision
FORWARD = (
    "resnet50",
    "densenet121",
    "convnext_tiny",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_1_6gf",
)


def torch_models(name: str, inference: bool = False) -> dict[str, torch.nn.Module]:
    """torchvision's model and ours (built, generated; the inference build too when asked),
    all with torchvision's weights."""
    torch.manual_seed(0)
    spec = rescompiler.load_spec(ROOT / "specs" / f"{name}.yaml")
    reference = trained_like(getattr(torchvision.models, name)(weights=None).eval())
    models = {
        "torchvision": reference,
        "built": rescompiler.build(spec, "torch").eval(),
        "generated": importlib.import_module(f"generated.{name}_torch").build().eval(),
    }
    if inference:
        models["inference"] = rescompiler.build(spec, "torch", optimize="inference")
        # a control: torchvision's model again, measured like ours; its ratio (ideally 1.000)
        # shows how far this run's noise moves a ratio
        models["torchvision again"] = getattr(torchvision.models, name)(weights=None).eval()
    state = reference.state_dict()
    for model in list(models.values())[1:]:
        model.load_state_dict(state, strict=True)
    return models


def forward_rows(name: str, repeats: dict[int, int]) -> list[dict[str, Any]]:
    """Eval forward time and peak memory of each variant (ratios to torchvision) at each batch
    size (``{batch: repeats}``), and the largest difference from torchvision's output."""
    models = torch_models(name, inference=True)
    rows = []
    for batch, count in repeats.items():
        x = torch.randn(batch, 3, 224, 224)

        def run(model: torch.nn.Module, x: torch.Tensor = x) -> Any:
            with torch.no_grad():
                return model(x)

        outputs = {k: run(m) for k, m in models.items()}
        samples = interleaved_samples({k: (lambda m=m: run(m)) for k, m in models.items()}, count)
        times, ratios = medians_and_ratios(samples, "torchvision")
        peaks = {k: peak_tensor_bytes(lambda m=m: run(m)) for k, m in models.items()}
        reference = outputs["torchvision"]
        tolerance = 1e-4 * reference.abs().max().item() + 1e-5
        for variant in list(models)[1:]:
            diff = (outputs[variant] - reference).abs().max().item()
            rows.append(
                {
                    "benchmark": f"torch forward {name} b{batch} 224",
                    "variant": variant,
                    "reference_ms": round(times["torchvision"] * 1e3, 2),
                    "ms": round(times[variant] * 1e3, 2),
                    "time_ratio": round(ratios[variant], 3),
                    "memory_ratio": round(peaks[variant] / peaks["torchvision"], 3),
                    "peak_mb": round(peaks[variant] / 2**20, 1),
                    "reference_peak_mb": round(peaks["torchvision"] / 2**20, 1),
                    "max_abs_diff": float(f"{diff:.3g}"),
                    "tolerance": float(f"{tolerance:.3g}"),
                }
            )
    return rows


def keras_rows(quick: bool) -> tuple[list[dict[str, Any]], str]:
    """The Keras forward rows, measured by ``python -m benchmarks.keras_rows`` in a subprocess
    (tensorflow must not load in this process); (rows, versions)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.keras_rows", *(["--quick"] if quick else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks.keras_rows failed:\n{result.stderr[-3000:]}")
    document = json.loads(result.stdout.strip().splitlines()[-1])
    return document["rows"], document["versions"]


def train_rows(name: str, repeats: int) -> list[dict[str, Any]]:
    """Time of one SGD step (forward, backward, update) in training mode, b8 at 128×128."""
    models = torch_models(name)
    x = torch.randn(8, 3, 128, 128)
    y = torch.randint(0, 1000, (8,))
    optimisers = {
        k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()
    }

    def step(key: str) -> None:
        model, optimiser = models[key], optimisers[key]
        model.train()
        optimiser.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()

    samples = interleaved_samples({k: (lambda k=k: step(k)) for k in models}, repeats, warmup=2)
    times, ratios = medians_and_ratios(samples, "torchvision")
    return [
        {
            "benchmark": f"torch train step {name} b8 128",
            "variant": variant,
            "reference_ms": round(times["torchvision"] * 1e3, 1),
            "ms": round(times[variant] * 1e3, 1),
            "time_ratio": round(ratios[variant], 3),
        }
        for variant in ("built", "generated")
    ]


def build_rows(name: str, repeats: int) -> list[dict[str, Any]]:
    """Time to construct the model (parameters initialised), ours against torchvision's."""
    spec = rescompiler.load_spec(ROOT / "specs" / f"{name}.yaml")
    module = importlib.import_module(f"generated.{name}_torch")
    constructor = getattr(torchvision.models, name)
    samples = interleaved_samples(
        {
            "torchvision": lambda: constructor(weights=None),
            "built": lambda: rescompiler.build(spec, "torch"),
            "generated": module.build,
        },
        repeats,
        warmup=1,
    )
    times, ratios = medians_and_ratios(samples, "torchvision")
    return [
        {
            "benchmark": f"build {name}",
            "variant": variant,
            "reference_ms": round(times["torchvision"] * 1e3, 1),
            "ms": round(times[variant] * 1e3, 1),
            "time_ratio": round(ratios[variant], 3),
        }
        for variant in ("built", "generated")
    ]


def deep_spec(layers: int, folder: Path) -> Path:
    """A plain stack of ``layers`` conv/relu layers, to show how cost grows with depth."""
    path = folder / f"deep{layers}.yaml"
    path.write_text(
        "version: 1\nname: deep\ninput_shape: [8, 16, 16]\n"
        f"params: {{n: {layers // 2}}}\n"
        "blocks:\n  unit:\n    body:\n"
        "      - {op: conv, name: conv, out: 8, kernel: 3, padding: 1}\n"
        "      - {op: relu}\n"
        "body:\n  - {block: unit, name: stack, repeat: n}\n"
    )
    return path


def front_end_rows(repeats: int) -> list[dict[str, Any]]:
    """Time of load_spec (front end) and emit for specs of growing depth."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = [
            ROOT / "specs" / f"{n}.yaml"
            for n in ("cifar_resnet20", "resnet152", "preact_resnet1001")
        ]
        targets += [deep_spec(10_000, Path(tmp))]
        for path in targets:
            if not path.exists():
                continue
            spec = rescompiler.load_spec(path)
            times = interleaved_medians(
                {
                    "front end": lambda path=path: rescompiler.load_spec(path),
                    "emit": lambda spec=spec: rescompiler.emit(spec, "torch"),
                },
                repeats,
                warmup=1,
            )
            label = "10,000-layer spec" if path.stem == "deep10000" else spec.name
            rows.append(
                {
                    "benchmark": f"front end + emit {label}",
                    "layers": len(spec.graph.nodes),
                    "front_end_ms": round(times["front end"] * 1e3, 1),
                    "emit_ms": round(times["emit"] * 1e3, 1),
                    "total_ms": round((times["front end"] + times["emit"]) * 1e3, 1),
                }
            )
    return rows


def cold_start_rows(repeats: int) -> list[dict[str, Any]]:
    """Wall time of a fresh ``rescompile --check`` / ``--summary`` process."""
    rows = []
    for flag in ("--check", "--summary"):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "rescompiler", "specs/resnet50.yaml", flag],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            samples.append(time.perf_counter() - start)
        samples.sort()
        rows.append(
            {
                "benchmark": f"cold start rescompile {flag}",
                "ms": round(samples[len(samples) // 2] * 1e3, 1),
            }
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables, one per section."""
    lines = [f"Machine: {results['machine']}", ""]
    for section, rows in results["sections"].items():
        if not rows:
            continue
        lines.append(f"### {section}")
        lines.append("")
        keys = list(rows[0])
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for row in rows:
            lines.append("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    """Run every benchmark, write results.{json,md} and print the Markdown."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--forward-only",
        nargs="+",
        metavar="SPEC",
        help="only the torch forward rows of these torchvision specs (printed, not written)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    torch.set_num_threads(os.cpu_count() or 1)
    quick = args.quick
    forward_repeats = {1: 5 if quick else 21, 8: 3 if quick else 9}
    sections: dict[str, list[dict[str, Any]]] = {"torch forward (eval, no_grad, CPU)": []}
    if args.forward_only:
        for name in args.forward_only:
            sections["torch forward (eval, no_grad, CPU)"] += forward_rows(name, forward_repeats)
        print(markdown({"machine": f"{cpu_name()}, {os.cpu_count()} cores", "sections": sections}))
        return
    for name in FORWARD:
        if (ROOT / "specs" / f"{name}.yaml").exists():
            sections["torch forward (eval, no_grad, CPU)"] += forward_rows(name, forward_repeats)
    rows, keras_versions = keras_rows(quick)
    sections["keras forward (eval, tf.function, CPU)"] = rows
    sections["torch training step (forward + backward + SGD)"] = [
        row  # efficientnet_b0 in training mode: dropout and stochastic depth on
        for name in ("resnet50", "efficientnet_b0")
        for row in train_rows(name, 3 if quick else 9)
    ]
    sections["build time"] = build_rows("resnet50", 3 if quick else 11)
    sections["front end + emit"] = front_end_rows(3 if quick else 11)
    sections["cold start"] = cold_start_rows(3 if quick else 9)
    results = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {keras_versions}; 1-minute load average "
        f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        "sections": sections,
    }
    if not quick:
        (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (OUT / "results.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
