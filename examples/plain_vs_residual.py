"""Plain vs residual: the same deep network with and without its residual merge, trained alike.

``examples/specs/deep_residual.yaml`` is a 44-layer CIFAR ResNet for 8×8 digits;
``examples/specs/deep_plain.yaml`` extends it and drops the shortcut and the ``add`` of its
block, nothing else. Both have the same layers and parameter names, so one seed gives them the
same initial weights; both see the same batches in the same order with the same optimiser.
The script compiles both specs to standalone torch modules, trains each, plots the training
loss and the test accuracy of both to a PNG and prints the final losses: the plain stack of the
same depth trains far worse (He et al. 2015, fig. 6).

    python examples/plain_vs_residual.py            # writes examples/plain_vs_residual.png
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    EXAMPLES,
    GENERATED,
    SPECS,
    ExampleError,
    build_model,
    compile_module,
    fail,
    fraction,
    load_digits_split,
    param_override,
    positive_float,
    positive_int,
    require,
)

PROG = "plain_vs_residual.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (argparse exits with status 2 and one line on bad input)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--plain", type=Path, default=SPECS / "deep_plain.yaml", help="spec")
    parser.add_argument("--residual", type=Path, default=SPECS / "deep_residual.yaml", help="spec")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=param_override,
        default=[],
        metavar="KEY=VALUE",
        help="a param for both generated build() calls, e.g. --set depth=56 (repeatable)",
    )
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="epochs of linear learning-rate warm-up"
    )
    parser.add_argument("--test-size", type=fraction, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="CPU threads (see train_digits.py)"
    )
    parser.add_argument(
        "--out", type=Path, default=EXAMPLES / "plain_vs_residual.png", help="the PNG to write"
    )
    parser.add_argument(
        "--gen-dir", type=Path, default=GENERATED, help="where the generated modules are written"
    )
    parser.add_argument("--metrics", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.overrides = dict(args.overrides)
    if not 0 <= args.warmup < float("inf"):
        parser.error(f"--warmup must be a number of epochs ≥ 0, got {args.warmup}")
    if args.out.suffix.lower() != ".png":
        parser.error(f"--out must name a .png file, got {str(args.out)!r}")
    return args


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(
    model: Any, data: tuple[np.ndarray, ...], args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """Train ``model`` with SGD (Nesterov momentum, warm-up then cosine decay) on the digits.

    Returns the training loss of every step, and per epoch the mean training loss and the test
    accuracy. The batch order depends only on ``args.seed``, so two models see the same batches.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    order = torch.Generator().manual_seed(args.seed)
    batches = -(-len(x_train) // args.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    total, warmup = args.epochs * batches, int(min(args.warmup, args.epochs) * batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total)
    )
    steps: list[float] = []
    epochs: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        permutation = torch.randperm(len(x_train), generator=order)
        losses = []
        bar = tqdm(
            permutation.split(args.batch_size),
            desc=f"{label} {epoch}/{args.epochs}",
            unit="batch",
            leave=False,
            disable=args.no_progress,
            file=sys.stderr,
        )
        for index in bar:
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        sizes = [len(i) for i in permutation.split(args.batch_size)]
        row = {
            "epoch": epoch,
            "train_loss": float(np.average(losses, weights=sizes)),
            "test_accuracy": accuracy,
        }
        epochs.append(row)
        steps.extend(losses)
        print(
            f"{label:>8} epoch {epoch:>2}/{args.epochs}  train loss {row['train_loss']:.4f}  "
            f"test acc {accuracy:.2%}",
            flush=True,
        )
    return {"steps": steps, "epochs": epochs, "seconds": time.perf_counter() - start}


def plot(results: dict[str, dict[str, Any]], layers: int, batches: int, out: Path) -> None:
    """Draw the training loss per step (and its per-epoch mean) and the test accuracy per epoch
    of each model, side by side, to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = {"plain": "#d62728", "residual": "#1f77b4"}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for label, result in results.items():
        steps = np.asarray(result["steps"])
        epochs = result["epochs"]
        x = np.arange(1, len(steps) + 1) / batches
        colour = colours.get(label)
        left.plot(x, steps, color=colour, alpha=0.25, linewidth=0.8)
        ends = [row["epoch"] for row in epochs]
        means = [row["train_loss"] for row in epochs]
        left.plot(ends, means, "o-", color=colour, label=f"{label} (final {means[-1]:.3f})")
        accuracy = [100 * row["test_accuracy"] for row in epochs]
        right.plot(ends, accuracy, "o-", color=colour, label=f"{label} ({accuracy[-1]:.1f}%)")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (per step; dots: epoch mean)")
    left.set_title("training loss")
    left.legend()
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy (%)")
    right.set_ylim(0, 100)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title("test accuracy")
    right.legend(loc="lower right")
    for axes in (left, right):
        axes.grid(True, alpha=0.3)
    figure.suptitle(
        f"{layers}-layer plain vs residual network on 8×8 digits (same weights at start)"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Compile both specs, check they have the same parameters, train both, plot; the metrics."""
    require("torch", "tqdm", "matplotlib")
    import torch

    torch.set_num_threads(args.threads)
    modules = {
        "plain": compile_module(args.plain, "torch", args.gen_dir),
        "residual": compile_module(args.residual, "torch", args.gen_dir),
    }
    data = load_digits_split(args.test_size, args.seed)
    models = {}
    for label, module in modules.items():
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        models[label] = build_model(module, args.overrides)
    shapes = {
        label: {k: tuple(v.shape) for k, v in model.state_dict().items()}
        for label, model in models.items()
    }
    if shapes["plain"] != shapes["residual"]:
        raise ExampleError("the two specs differ in more than the merge: parameters differ")
    same_start = all(
        torch.equal(a, b)
        for a, b in zip(
            models["plain"].state_dict().values(),
            models["residual"].state_dict().values(),
            strict=True,
        )
    )
    layers = sum(
        isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in models["plain"].modules()
    )
    params = sum(p.numel() for p in models["plain"].parameters())
    print(
        f"{layers} weight layers, {params:,} parameters each; identical initial weights: "
        f"{same_start}",
        flush=True,
    )
    results = {label: train(model, data, args, label) for label, model in models.items()}
    batches = -(-len(data[0]) // args.batch_size)
    plot(results, layers, batches, args.out)
    return {
        "layers": layers,
        "parameters": params,
        "same_initial_weights": same_start,
        "epochs": args.epochs,
        "png": str(args.out),
        "final_train_loss": {k: r["epochs"][-1]["train_loss"] for k, r in results.items()},
        "final_test_accuracy": {k: r["epochs"][-1]["test_accuracy"] for k, r in results.items()},
        "train_seconds": {k: r["seconds"] for k, r in results.items()},
        "history": {k: r["epochs"] for k, r in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: train both, write the PNG (and ``--metrics``), print the final losses."""
    args = parse_args(argv)
    try:
        metrics = run(args)
        if args.metrics is not None:
            args.metrics.parent.mkdir(parents=True, exist_ok=True)
            args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    except ExampleError as exc:
        fail(PROG, str(exc))
    except OSError as exc:
        fail(PROG, f"cannot write the output: {exc}")
    except KeyboardInterrupt:
        fail(PROG, "interrupted", 130)
    loss = metrics["final_train_loss"]
    verdict = "lower" if loss["residual"] < loss["plain"] else "NOT lower"
    print(
        f"final training loss: plain {loss['plain']:.4f}, residual {loss['residual']:.4f} "
        f"(residual {verdict}); plot: {args.out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
