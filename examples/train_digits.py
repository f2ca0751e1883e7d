"""Train a generated model on scikit-learn's digits (1797 grey 8×8 images, bundled, no download).

The spec (default ``examples/specs/digits_resnet.yaml``: cifar_resnet20 sized for 1×8×8) is
compiled by rescompiler into a standalone module, which is imported from its file and built
with its own ``build()``: the model trained here is the generated source, not rescompiler.

    python examples/train_digits.py                          # PyTorch, one process
    python examples/train_digits.py --backend keras          # the generated Keras model, model.fit
    torchrun --nproc_per_node=2 examples/train_digits.py     # DistributedDataParallel, 2 ranks

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) every rank trains on its shard of each
global batch (DistributedSampler; ``--batch-size`` is the global batch, so one process and N
ranks step through the same batches), with gloo on CPU and NCCL on GPU. At the end the ranks
compare SHA-256 digests of their parameters and BN statistics (exit status 1 if they differ).
``--metrics PATH`` writes the figures (accuracy, loss per epoch, time, digests) as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
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

PROG = "train_digits.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (argparse exits with status 2 and one line on bad input)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--backend", choices=["torch", "keras"], default="torch")
    parser.add_argument(
        "--spec", type=Path, default=SPECS / "digits_resnet.yaml", help="spec to compile"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=param_override,
        default=[],
        metavar="KEY=VALUE",
        help="a param for the generated build(), e.g. --set depth=20 (repeatable)",
    )
    parser.add_argument("--epochs", type=positive_int, default=15)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="global batch size")
    parser.add_argument("--lr", type=positive_float, default=0.05, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--test-size", type=fraction, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads per process (torch default 1: these models are tiny, and on a busy "
        "machine extra OpenMP threads spin and slow training many times over; keras: TF's own)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--gen-dir", type=Path, default=GENERATED, help="where the generated module is written"
    )
    parser.add_argument("--metrics", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.overrides = dict(args.overrides)
    if args.weight_decay < 0:
        parser.error("--weight-decay must be ≥ 0")
    return args


def seed_everything(seed: int) -> None:
    """Seed Python's and NumPy's generators (each framework is seeded where it is used)."""
    random.seed(seed)
    np.random.seed(seed)


def epoch_line(epoch: int, epochs: int, row: dict[str, float]) -> str:
    """One line of per-epoch figures, the same for both backends."""
    return (
        f"epoch {epoch:>3}/{epochs}  train loss {row['train_loss']:.4f}  "
        f"train acc {row['train_accuracy']:.2%}  test loss {row['test_loss']:.4f}  "
        f"test acc {row['test_accuracy']:.2%}  {row['seconds']:.1f}s"
    )


def digest(arrays: list[Any]) -> str:
    """SHA-256 over the raw bytes of a list of NumPy arrays (bit-exact comparison)."""
    hasher = hashlib.sha256()
    for array in arrays:
        hasher.update(np.ascontiguousarray(array).tobytes())
    return hasher.hexdigest()


def train_torch(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train the generated torch module, alone or as one rank of torchrun (DDP).

    Returns the metrics on rank 0, None on the other ranks.
    """
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    require("tqdm")
    from tqdm import tqdm

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.batch_size % world:
        raise ExampleError(f"--batch-size {args.batch_size} is not divisible by {world} ranks")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ExampleError("--device cuda, but no CUDA device is available")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    torch.set_num_threads(args.threads or 1)

    # Every rank compiles (atomic write, identical bytes) before the process group exists, so
    # an invalid spec stops every rank with one line instead of leaving the others waiting.
    module = compile_module(args.spec, "torch", args.gen_dir)
    x_train, y_train, x_test, y_test = load_digits_split(args.test_size, args.seed)
    seed_everything(args.seed)
    torch.manual_seed(args.seed)
    model = build_model(module, args.overrides).to(device)

    if distributed:
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        net: torch.nn.Module = DistributedDataParallel(
            model, device_ids=[local_rank] if use_cuda else None
        )
    else:
        net = model
    show = rank == 0

    train_set = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, seed=args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size // world, sampler=sampler)
    x_test_t, y_test_t = torch.from_numpy(x_test).to(device), torch.from_numpy(y_test).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=args.weight_decay,
    )
    steps = args.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    def sync_bn_statistics() -> None:
        """Average BN running statistics over the ranks (DDP keeps parameters in step, but
        each rank's statistics follow its own shard until the next forward broadcasts)."""
        if not distributed:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer /= world

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x) for x in x_test_t.split(256)])
            loss = F.cross_entropy(logits, y_test_t).item()
            accuracy = (logits.argmax(1) == y_test_t).float().mean().item()
        return loss, accuracy

    history: list[dict[str, float]] = []
    shard_sizes: list[int] = []
    if show:
        print(
            f"{module.__name__}: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{len(x_train)} train / {len(x_test)} test images, {world} process(es) on "
            f"{device.type}, global batch {args.batch_size}",
            flush=True,
        )
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        tick = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{args.epochs}",
            unit="batch",
            leave=False,
            disable=not show or args.no_progress,
            file=sys.stderr,
        )
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            logits = net(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            batch, value = labels.numel(), loss.item()
            correct = (logits.argmax(1) == labels).sum().item()
            totals += torch.tensor([value * batch, correct, batch], dtype=totals.dtype).to(device)
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        if distributed:
            counts = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(world)]
            dist.all_gather(counts, totals[2:3].clone())
            shard_sizes = [int(c.item()) for c in counts]  # images each rank saw this epoch
            dist.all_reduce(totals)
        else:
            shard_sizes = [int(totals[2].item())]
        sync_bn_statistics()
        test_loss, test_accuracy = evaluate()
        loss_sum, correct, count = totals.tolist()
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / count,
            "train_accuracy": correct / count,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "seconds": time.perf_counter() - tick,
        }
        history.append(row)
        if show:
            print(epoch_line(epoch, args.epochs, row), flush=True)
    seconds = time.perf_counter() - start

    params = digest([p.detach().cpu().numpy() for p in model.parameters()])
    buffers = digest([b.detach().cpu().numpy() for b in model.buffers()])
    mine = {"rank": rank, "params_sha256": params, "buffers_sha256": buffers}
    mine["test_accuracy"] = history[-1]["test_accuracy"]
    ranks = [mine]
    if distributed:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        ranks = gathered
        dist.destroy_process_group()
    if not show:
        return None
    identical = len({r["params_sha256"] for r in ranks}) == 1
    buffers_identical = len({r["buffers_sha256"] for r in ranks}) == 1
    if distributed:
        verdict = "identical" if identical and buffers_identical else "DIFFERENT"
        print(f"parameters and BN statistics on the {world} ranks: {verdict} ({params[:16]})")
    return {
        "backend": "torch",
        "module": module.__name__,
        "world_size": world,
        "device": device.type,
        "ranks": ranks,
        "params_identical": identical,
        "buffers_identical": buffers_identical,
        "shard_sizes": shard_sizes,
        "history": history,
        "train_seconds": seconds,
    }


def train_keras(args: argparse.Namespace) -> dict[str, Any]:
    """Train the generated Keras module with ``model.fit`` (one process, channels-last)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        raise ExampleError("--backend keras runs in one process; use torch for torchrun/DDP")
    if args.device == "cuda":
        raise ExampleError("--device cuda applies to --backend torch only")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        import keras
    except ImportError:
        raise ExampleError("keras is not installed: pip install -e '.[keras]'") from None
    if args.threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    module = compile_module(args.spec, "keras", args.gen_dir)
    x_train, y_train, x_test, y_test = load_digits_split(args.test_size, args.seed)
    x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)  # NHWC
    seed_everything(args.seed)
    keras.utils.set_random_seed(args.seed)
    model = build_model(module, args.overrides)
    steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=keras.optimizers.schedules.CosineDecay(args.lr, steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=args.weight_decay or None,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history: list[dict[str, float]] = []

    class EpochLine(keras.callbacks.Callback):
        """Prints the same per-epoch line as the torch path and records it."""

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.tick = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            row = {
                "epoch": epoch + 1,
                "train_loss": float(logs["loss"]),
                "train_accuracy": float(logs["accuracy"]),
                "test_loss": float(logs["val_loss"]),
                "test_accuracy": float(logs["val_accuracy"]),
                "seconds": time.perf_counter() - self.tick,
            }
            history.append(row)
            print(epoch_line(epoch + 1, args.epochs, row), flush=True)

    print(
        f"{module.__name__}: {model.count_params():,} weights (with BN statistics), "
        f"{len(x_train)} train / {len(x_test)} test images, keras {keras.__version__} "
        f"({keras.backend.backend()})",
        flush=True,
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        shuffle=True,
        verbose=0 if args.no_progress else 1,
        # Keras' own progress bar first, so it ends its line before ours is printed.
        callbacks=[*([] if args.no_progress else [keras.callbacks.ProgbarLogger()]), EpochLine()],
    )
    seconds = time.perf_counter() - start
    return {
        "backend": "keras",
        "module": module.__name__,
        "world_size": 1,
        "device": "cpu",
        "history": history,
        "train_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: train, print the summary line, write ``--metrics``; returns the exit code."""
    args = parse_args(argv)
    try:
        metrics = train_torch(args) if args.backend == "torch" else train_keras(args)
    except ExampleError as exc:
        fail(PROG, str(exc))
    except KeyboardInterrupt:
        fail(PROG, "interrupted", 130)
    if metrics is None:  # a DDP rank other than 0
        return 0
    final = metrics["history"][-1]
    metrics.update(
        spec=str(args.spec),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        test_accuracy=final["test_accuracy"],
        final_train_loss=final["train_loss"],
    )
    print(
        f"test accuracy {final['test_accuracy']:.2%} after {args.epochs} epochs, "
        f"{metrics['train_seconds']:.1f}s training ({args.backend}, "
        f"{metrics['world_size']} process(es))",
        flush=True,
    )
    if args.metrics is not None:
        try:
            args.metrics.parent.mkdir(parents=True, exist_ok=True)
            args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        except OSError as exc:
            fail(PROG, f"cannot write --metrics {args.metrics}: {exc}")
    if metrics["world_size"] > 1 and not metrics["params_identical"]:
        fail(PROG, "the ranks ended with different parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
