"""Keras forward latency and peak memory against keras.applications, printed as JSON rows.

    python -m benchmarks.keras_rows [--quick]

Run in its own process (``python -m benchmarks`` does): importing triton after tensorflow
segfaults, and the torch rows import it. Each model runs as a ``tf.function`` of
``model(x, training=False)`` (graph mode, as ``predict`` runs it; eager calls are twice as slow
for every model alike), the reference and ours called the same way, interleaved. Weights are the
reference's, copied by layer name, so the outputs are compared too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from .measure import interleaved_samples, medians_and_ratios

ROOT = Path(__file__).resolve().parent.parent
# spec -> keras.applications model it reproduces (its layer names: weights copy by name)
MODELS = {
    "resnet50v2": "ResNet50V2",
    "resnet50v1": "ResNet50",
    "convnext_tiny_keras": "ConvNeXtTiny",
    "mobilenet_v2_keras": "MobileNetV2",
    "mobilenet_v3_large_keras": "MobileNetV3Large",
    "efficientnet_b0_keras": "EfficientNetB0",
    "densenet121_keras": "DenseNet121",
}


def keras_models(name: str) -> dict[str, Any]:
    """keras.applications' model and ours (built, generated, and the inference build: BNs
    folded), all with the reference weights (BN statistics made non-trivial first)."""
    import keras
    import numpy as np
    from rescompiler.backends.keras import flat_layers, load_plain_weights

    import rescompiler

    reference = getattr(keras.applications, MODELS[name])(weights=None)
    rng = np.random.default_rng(0)
    for layer in flat_layers(reference):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.uniform(-0.2, 0.2, beta.shape).astype("float32"),
                    rng.uniform(-0.5, 0.5, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, variance.shape).astype("float32"),
                ]
            )
    spec = rescompiler.load_spec(ROOT / "specs" / f"{name}.yaml")
    built = rescompiler.build(spec, "keras")
    generated = importlib.import_module(f"generated.{name}_keras").build()
    for model in (built, generated):
        layers = {layer.name: layer for layer in flat_layers(model)}
        for layer in flat_layers(reference):
            if layer.weights:
                layers[layer.name].set_weights(layer.get_weights())
    inference = rescompiler.build(spec, "keras", optimize="inference")
    load_plain_weights(inference, built)
    # a control: keras.applications' model again; its ratio (ideally 1.000) shows this run's noise
    again = getattr(keras.applications, MODELS[name])(weights=None)
    again.set_weights(reference.get_weights())
    return {
        "keras.applications": reference,
        "built": built,
        "generated": generated,
        "inference": inference,
        "keras.applications again": again,
    }


def peak_bytes(call: Any) -> int:
    """Peak bytes TF allocates on the CPU during ``call``, above what was live before it."""
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    call()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def forward_rows(name: str, repeats: dict[int, int]) -> list[dict[str, Any]]:
    """Latency and peak memory of each variant at each batch size, as ratios to the reference."""
    import numpy as np
    import tensorflow as tf

    models = keras_models(name)
    functions = {
        key: tf.function(lambda x, model=model: model(x, training=False))
        for key, model in models.items()
    }
    rows = []
    for batch, count in repeats.items():
        x = tf.constant(np.random.default_rng(0).standard_normal((batch, 224, 224, 3)), tf.float32)
        outputs = {key: np.asarray(fn(x)) for key, fn in functions.items()}
        calls = {k: (lambda f=f, x=x: f(x)) for k, f in functions.items()}
        timed = interleaved_samples(calls, count)
        times, ratios = medians_and_ratios(timed, "keras.applications")
        # the allocator's peak varies by a few hundred kB from call to call: median of 5,
        # taken in interleaved rounds like the times
        samples: dict[str, list[int]] = {k: [] for k in functions}
        for _ in range(5):
            for k, f in functions.items():
                samples[k].append(peak_bytes(lambda f=f, x=x: f(x)))
        peaks = {k: statistics.median(v) for k, v in samples.items()}
        ref = "keras.applications"
        for variant in ("built", "generated", "inference", "keras.applications again"):
            rows.append(
                {
                    "benchmark": f"keras forward {name} b{batch} 224",
                    "variant": variant,
                    "reference_ms": round(times[ref] * 1e3, 2),
                    "ms": round(times[variant] * 1e3, 2),
                    "time_ratio": round(ratios[variant], 3),
                    "memory_ratio": round(peaks[variant] / peaks[ref], 3),
                    "peak_mb": round(peaks[variant] / 2**20, 1),
                    "reference_peak_mb": round(peaks[ref] / 2**20, 1),
                    "max_abs_diff": float(np.abs(outputs[variant] - outputs[ref]).max()),
                }
            )
    return rows


def main() -> None:
    """Print the Keras rows as one JSON document on stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keras_rows")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="a subset")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # the CPU allocator keeps the statistics peak_bytes reads only when it is TF's BFC one
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    import keras
    import tensorflow as tf

    repeats = {1: 5 if args.quick else 21, 8: 3 if args.quick else 9}
    rows = []
    parser_models = args.models or list(MODELS)
    for name in parser_models:
        if (ROOT / "specs" / f"{name}.yaml").exists():
            rows += forward_rows(name, repeats)
    versions = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    json.dump({"versions": versions, "rows": rows}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
