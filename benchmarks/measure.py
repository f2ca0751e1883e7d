"""Measurement primitives: interleaved timing with warm-up and medians, and the peak of live
tensor bytes during a call (tracked op by op, independent of allocator caching)."""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any


def interleaved_medians(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call (see ``interleaved_samples``)."""
    samples = interleaved_samples(calls, repeats, warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def paired_ratios(samples: dict[str, list[float]], reference: str) -> dict[str, float]:
    """Per call, the median over rounds of its time divided by the reference's time in the
    same round. A round's calls run back to back, so a slow spell of the machine (another
    tenant's load) scales both sides of a ratio: the measured control, the reference against a
    copy of itself, stays within ±2% where the ratio of medians moved ±10%."""
    return {
        name: statistics.median(t / r for t, r in zip(values, samples[reference], strict=True))
        for name, values in samples.items()
    }


def medians_and_ratios(
    samples: dict[str, list[float]], reference: str
) -> tuple[dict[str, float], dict[str, float]]:
    """(median seconds, paired ratio to ``reference``) per call of ``interleaved_samples``."""
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return medians, paired_ratios(samples, reference)


def interleaved_samples(
    calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds of each call in each of ``repeats`` rounds; the calls run in rounds so drift
    hits all of them alike, and each round starts with the next call so none always runs
    first (after a pause) or last."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def peak_tensor_bytes(call: Callable[[], Any]) -> int:
    """Peak bytes of tensor storages alive during ``call`` that it allocated (torch)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    state = {"live": 0, "peak": 0}
    seen: set[int] = set()

    def release(key: int, size: int) -> None:
        seen.discard(key)
        state["live"] -= size

    class Tracker(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in torch.utils._pytree.tree_leaves(out):
                if not isinstance(tensor, torch.Tensor):
                    continue
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key in seen or storage.nbytes() == 0:
                    continue
                seen.add(key)
                size = storage.nbytes()
                state["live"] += size
                state["peak"] = max(state["peak"], state["live"])
                weakref.finalize(tensor, release, key, size)
            return out

    with Tracker():
        result = call()
    del result
    return state["peak"]
