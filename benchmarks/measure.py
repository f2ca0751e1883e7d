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
    """Median seconds per call; the calls run in rounds so drift hits all of them alike, and
    each round starts with the next call so none always runs first (after a pause) or last."""
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
    return {name: statistics.median(values) for name, values in samples.items()}


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
