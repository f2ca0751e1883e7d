"""Inference builds (``optimize="inference"``): BatchNorm folding computes the plain model's
function on every spec of the library, in both backends, and folds only where it is exact."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from library import ROOT, library, small_input, spec_path

import rescompiler
from rescompiler.fold import fold_report, plan_folds


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Small inputs gain nothing from threads, and ``-n 2`` on two cores with two torch threads
    per worker oversubscribes the cores (OpenMP spin-waits): one thread each here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(a: Any, b: Any) -> None:
    """The equivalence policy: ``max|a-b| <= 1e-4 * max|ref| + 1e-5`` (b is the reference)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert np.isfinite(b).all()
    diff = np.abs(a - b).max()
    assert diff <= 1e-4 * np.abs(b).max() + 1e-5, diff


def load(name: str, shape: list[int] | None = None) -> rescompiler.Spec:
    return rescompiler.load_spec(spec_path(name), {"input_shape": shape} if shape else None)


def randomise_torch_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine params, so folding really changes the weights."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                uniform(module.running_mean, -0.5, 0.5)
                uniform(module.running_var, 0.5, 2.0)
                if module.affine:
                    uniform(module.weight, 0.5, 1.5)
                    uniform(module.bias, -0.5, 0.5)


def randomise_keras_bn(model: Any, seed: int = 0) -> None:
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = []
            for variable in layer.weights:  # gamma, beta, moving_mean, moving_variance
                low, high = {
                    "gamma": (0.5, 1.5),
                    "beta": (-0.5, 0.5),
                    "moving_mean": (-0.5, 0.5),
                    "moving_variance": (0.5, 2.0),
                }[variable.name]
                weights.append(rng.uniform(low, high, variable.shape).astype("float32"))
            layer.set_weights(weights)


def inference_builds_agree(spec: rescompiler.Spec, x: torch.Tensor) -> tuple[Any, ...]:
    """Plain and inference builds of ``spec`` in both backends with the same weights (BN
    statistics randomised); asserts that both inference builds compute the plain torch model
    on ``x``. Returns (plain, fast, keras_plain, keras_fast) for further checks."""
    from rescompiler.backends.keras import load_plain_weights

    torch.manual_seed(0)
    plain = rescompiler.build(spec, "torch").eval()
    randomise_torch_bn(plain)
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(plain.state_dict())
    with torch.no_grad():
        expected = plain(x)
        close(fast(x), expected)
    keras_plain = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, plain, keras_plain)
    keras_fast = rescompiler.build(spec, "keras", optimize="inference")
    load_plain_weights(keras_fast, keras_plain)
    y = np.asarray(keras_fast(x.permute(0, 2, 3, 1).numpy(), training=False))
    close(y.transpose(0, 3, 1, 2) if y.ndim == 4 else y, expected.numpy())  # maps: NHWC
    return plain, fast, keras_plain, keras_fast


def bn_counts(spec: rescompiler.Spec) -> tuple[int, int]:
    """(folded, kept) BatchNorms of the expanded graph."""
    rows = fold_report(spec)
    folded = sum(row.folded_into is not None for row in rows)
    return folded, len(rows) - folded


@pytest.mark.parametrize("name", library())
def test_torch_inference_build_computes_the_plain_model(name: str) -> None:
    shape = small_input(name)
    spec = load(name, shape)
    torch.manual_seed(0)
    plain = rescompiler.build(spec, "torch").eval()
    randomise_torch_bn(plain)
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(plain.state_dict(), strict=True)
    assert not fast.training
    state = fast.state_dict()
    for row in fold_report(spec):
        assert (f"{row.bn}.running_var" in state) == (row.folded_into is None), row
        if row.folded_into is not None:
            assert f"{row.folded_into}.bias" in state
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == bn_counts(spec)[1]
    x = torch.randn(2, *shape)
    with torch.no_grad():
        y = fast(x)
        expected = plain(x)
        close(y, expected)
        chunked = [m for m in fast.modules() if type(m).__name__ == "ChunkedSequential"]
        for module in chunked:  # row-wise runs (MLPs, classifier heads) in blocks of 3 rows
            module.LIMIT, module.BLOCK = 0, 3 * max(module.widest, 1) * 4
        if chunked:
            close(fast(x), expected)
    assert y.is_contiguous()  # channels-last inside, the usual layout outside


@pytest.mark.parametrize("name", library())
def test_keras_inference_build_computes_the_plain_model(name: str) -> None:
    from rescompiler.backends.keras import folded_layers, load_plain_weights

    shape = small_input(name)
    spec = load(name, shape)
    plain = rescompiler.build(spec, "keras")
    randomise_keras_bn(plain)
    fast = rescompiler.build(spec, "keras", optimize="inference")
    load_plain_weights(fast, plain)
    folded, _kept = bn_counts(spec)
    assert len(plain.layers) - len(fast.layers) == folded == len(folded_layers(fast))
    x = np.random.default_rng(1).standard_normal((2, shape[1], shape[2], shape[0]))
    x = x.astype("float32")
    close(fast(x, training=False), plain(x, training=False))


@pytest.mark.parametrize(
    ("name", "folded", "kept"),
    [
        ("resnet50v2", 32, 17),
        ("preact_resnet164", 108, 55),
        ("densenet121", 59, 62),
        ("d2l_densenet", 1, 20),
        ("resnet50", 53, 0),
        ("unet_original", 0, 0),
        ("efficientnet_b0_keras", 49, 0),  # the expand BNs share their conv's `when`
    ],
)
def test_fold_report_names_what_stays_a_batchnorm(name: str, folded: int, kept: int) -> None:
    spec = load(name)
    rows = fold_report(spec)
    assert bn_counts(spec) == (folded, kept)
    readers = collections.defaultdict(list)
    for node in spec.graph.nodes:
        for source in node.inputs:
            readers[source].append(node)
    for row in rows:
        node = spec.graph.node(row.bn)
        if row.folded_into is None:
            # pre-activation: each kept BN feeds a ReLU (or leaves its group into one)
            assert [r.op for r in readers[row.bn]] == ["relu"], row
            assert "nonlinearity" in row.reason or "leaves the body" in row.reason, row
            assert "kept" in str(row)
        else:
            conv = spec.graph.node(row.folded_into)
            assert row.side == "after" and node.inputs == (conv.id,)
            assert conv.op == "conv" and [r.id for r in readers[conv.id]] == [row.bn]
    for backend in ("torch", "keras"):
        source = " ".join(rescompiler.emit(spec, backend, optimize="inference").split())
        assert f"{folded} of {folded + kept} BatchNorms are folded" in source
        for entry in plan_folds(spec.model).kept.values():
            assert str(entry) in source


TOGETHER_SPEC = """
version: 1
name: together
input_shape: [4, 8, 8]
blocks:
  b:
    params: {e: 1}
    body:
      - {op: conv, name: expand, out: 8, kernel: 1, when: e != 1}
      - {op: bn, name: expand_bn, when: e != 1}
      - {op: relu, name: act, when: e != 1}
      - {op: conv, name: other, out: 8, kernel: 1, when: e != 1}
      - {op: bn, name: other_bn, when: e > 2}
      - {op: conv, name: project, out: 4, kernel: 1}
body:
  - {block: b, name: b1, args: {e: 1}}
  - {block: b, name: b2, args: {e: 2}}
  - {block: b, name: b3, args: {e: 3}}
"""


def test_a_conditional_bn_folds_into_a_conv_built_with_it(write_spec) -> None:
    """EfficientNet's expand conv and its BN share ``when: expand != 1``: they exist in the
    same blocks, so the BN folds; a BN under another condition stays."""
    spec = rescompiler.load_spec(write_spec(TOGETHER_SPEC))
    rows = {row.bn: row for row in fold_report(spec)}
    assert rows["b2.expand_bn"].folded_into == "b2.expand"
    assert rows["b3.expand_bn"].folded_into == "b3.expand"
    assert rows["b3.other_bn"].folded_into is None
    assert "conditional" in rows["b3.other_bn"].reason
    _plain, fast, keras_plain, keras_fast = inference_builds_agree(spec, torch.randn(2, 4, 8, 8))
    assert "b2.expand_bn.running_var" not in fast.state_dict()
    assert len(keras_plain.layers) - len(keras_fast.layers) == 2


BEFORE_SPEC = """
version: 1
name: folds
input_shape: [4, 9, 9]
defaults:
  bn: {eps: 0.001}
body:
  - {op: conv, name: stem, out: 8, kernel: 3}
  - {op: relu, name: act}
  - {op: bn, name: pre1}
  - {op: conv, name: conv1, out: 8, kernel: 1, groups: 2}
  - {op: relu, name: act1}
  - {op: bn, name: pre2}
  - {op: conv, name: conv2, out: 8, kernel: 3, padding: 1, bias: false}
  - {op: conv, name: conv3, out: 6, kernel: 3, stride: 2, bias: false}
  - {op: bn, name: post3}
  - {op: relu, name: act3, inputs: post3}
  - {op: conv, name: conv4, out: 6, kernel: 1, inputs: act3}
  - {op: bn, name: shared, inputs: conv4}
  - {op: add, name: sum, inputs: [shared, conv4]}
  - {op: flatten, name: flat}
  - {op: bn, name: pre5}
  - {op: linear, name: fc, out: 5}
"""


@pytest.fixture
def before_spec(write_spec) -> rescompiler.Spec:
    return rescompiler.load_spec(write_spec(BEFORE_SPEC))


def test_bn_before_a_conv_folds_only_where_the_conv_does_not_pad(before_spec) -> None:
    plan = plan_folds(before_spec.model)
    folds = {fold.bn_local: (fold.target_local, fold.side) for fold in plan.folds.values()}
    assert folds == {
        "pre1": ("conv1", "before"),  # grouped 1x1, no padding: exact
        "post3": ("conv3", "after"),
        "pre5": ("fc", "before"),  # BatchNorm1d into the linear layer
    }
    kept = {entry.label: entry.reason for entry in plan.kept.values()}
    assert "zero-pads" in kept["pre2 of the model"]
    assert "also read elsewhere" in kept["shared of the model"]
    source = rescompiler.emit(before_spec, "torch", optimize="inference")
    assert '("conv1", "pre1", 0.001, "before")' in source


def test_bn_before_a_conv_torch_and_keras(before_spec) -> None:
    x = torch.randn(3, 4, 9, 9)
    plain, *_ = inference_builds_agree(before_spec, x)
    # the reason pre2 stays: folding its shift into the padded conv2 is wrong at the borders
    conv2, bn = plain.conv2, plain.pre2
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    with torch.no_grad():
        h = plain.act1(plain.conv1(plain.pre1(plain.act(plain.stem(x)))))
        naive = (
            torch.nn.functional.conv2d(h, conv2.weight * scale[None, :, None, None], padding=1)
            + (conv2.weight * shift[None, :, None, None]).sum((1, 2, 3))[None, :, None, None]
        )
        exact = conv2(bn(h))
    assert (naive - exact).abs().max() > 1e-2
    assert (naive - exact)[:, :, 1:-1, 1:-1].abs().max() < 1e-4  # only the borders differ


def test_torchvision_weights_load_into_the_inference_build() -> None:
    for name in ("resnet50", "densenet121"):
        torch.manual_seed(0)
        reference = getattr(torchvision.models, name)(weights=None).eval()
        randomise_torch_bn(reference)
        fast = rescompiler.build(load(name), "torch", optimize="inference")
        fast.load_state_dict(reference.state_dict(), strict=True)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            close(fast(x), reference(x))


def test_channels_last_mlp_runs_in_blocks_of_rows_with_the_same_result() -> None:
    """ConvNeXt's LayerNorm, Linear, GELU, Linear (channels-last) run over blocks of rows when
    their widest output outgrows the cache: forced here at a small size, the output equals the
    plain model's and each Linear ran once per block."""
    spec = load("convnext_tiny", [3, 64, 64])
    torch.manual_seed(0)
    plain = rescompiler.build(spec, "torch").eval()
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(plain.state_dict(), strict=True)
    chunked = [m for m in fast.modules() if type(m).__name__ == "ChunkedSequential"]
    assert len(chunked) == 18  # every block's MLP, not the downsampling or the classifier
    assert [type(m).__name__ for m in chunked[0][chunked[0].start : chunked[0].stop]] == [
        "LayerNorm",
        "Linear",
        "GELU",
        "Linear",
    ]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = fast(x)
        for module in chunked:
            module.LIMIT, module.BLOCK = 0, 100 * module.widest * 4  # 100 rows per block
        calls = collections.Counter()
        first = chunked[0][chunked[0].start + 1]
        first.register_forward_hook(lambda *_: calls.update(["first"]))
        blocks = fast(x)
        expected = plain(x)
    assert calls["first"] == 6  # the 512 rows of stage 1 (2×16×16) in blocks of 100
    close(blocks, expected)
    close(whole, expected)
    assert type(chunked[0][1:3]).__name__ == "ChunkedSequential"  # a slice runs as it is
    z = torch.randn(2, 96, 16, 16)
    with torch.no_grad():
        assert torch.equal(chunked[0][1:3](z), chunked[0][2](z.permute(0, 2, 3, 1)))


def test_inference_module_fold_helper_state_dict_and_eval_only() -> None:
    spec = load("cifar_resnet20")
    source = rescompiler.emit(spec, "torch", optimize="inference")
    namespace: dict[str, Any] = {}
    exec(compile(source, "cifar_resnet20_torch_inference", "exec"), namespace)
    torch.manual_seed(0)
    plain = rescompiler.build(spec, "torch").eval()
    randomise_torch_bn(plain)
    fast = namespace["build"]()
    fast.load_state_dict(plain.state_dict())
    folded = namespace["fold"](plain.state_dict())
    assert list(folded) == list(fast.state_dict())
    assert all(torch.equal(folded[k], v) for k, v in fast.state_dict().items())
    again = namespace["build"]()
    again.load_state_dict(fast.state_dict(), strict=True)  # a folded state_dict loads as is
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), fast(x))
        assert torch.equal(torch.fx.symbolic_trace(fast)(x), fast(x))
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="cannot train"):
        fast.train()
    assert fast.eval() is fast


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_unknown_optimize_value_names_the_allowed_ones(backend: str) -> None:
    spec = load("cifar_resnet20")
    with pytest.raises(ValueError, match="inference"):
        rescompiler.emit(spec, backend, optimize="speed")
    assert rescompiler.emit(spec, backend, optimize=None) == rescompiler.emit(spec, backend)


def test_keras_inference_model_config_round_trips() -> None:
    import keras

    spec = load("cifar_resnet20")
    fast = rescompiler.build(spec, "keras", optimize="inference")
    clone = keras.Model.from_config(fast.get_config())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in fast.layers]
    folded = {layer.name: layer.folded_bn for layer in clone.layers if hasattr(layer, "folded_bn")}
    assert folded["conv1"] == "bn1"


def test_inference_builds_are_lint_clean(tmp_path) -> None:
    import subprocess
    import sys

    for name in ("resnet50", "densenet121", "resnet50v2", "unet", "convnext_tiny"):
        for backend in ("torch", "keras"):
            source = rescompiler.emit(load(name), backend, optimize="inference")
            (tmp_path / f"{name}_{backend}_inference.py").write_text(source)
    ruff = [sys.executable, "-m", "ruff"]
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        result = subprocess.run(
            [*ruff, *args, "--config", str(ROOT / "pyproject.toml")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "resnet50v1",
        "resnet50v2",
        "preact_resnet164",
        "densenet121",
        "cifar_resnet20",
        "mobilenet_v2",  # ReLU6 in place, as torchvision's
        "mobilenet_v3_large",  # Hardswish in place too; ReLU where the other branch of a `when`
        "regnet_y_400mf",  # `x += proj` into the group output (owned: it ends in a BN)
    ],
)
def test_in_place_relu_and_add_keep_training_exact(name: str) -> None:
    """The plain build's in-place ReLUs and ``+=`` (where the value dies there) change neither
    the caller's input nor any gradient: the same model with out-of-place ReLUs agrees bit for
    bit, and autograd would raise had a saved tensor been overwritten."""
    shape = small_input(name)
    spec = load(name, shape)
    torch.manual_seed(0)
    model = rescompiler.build(spec, "torch").train()
    relus = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardswish)
    inplace = [m for m in model.modules() if isinstance(m, relus) and m.inplace]
    assert inplace
    source = rescompiler.emit(spec, "torch")
    assert " += " in source or name == "densenet121"
    reference = rescompiler.build(spec, "torch").train()
    reference.load_state_dict(model.state_dict())
    for module in reference.modules():
        if isinstance(module, relus):
            module.inplace = False
    x = torch.randn(2, *shape)
    before = x.clone()
    outputs = []
    for net in (model, reference):
        torch.manual_seed(1)  # the same dropout masks (mobilenet_v2's classifier)
        y = net(x)
        y.square().sum().backward()
        outputs.append(y)
    assert torch.equal(x, before)
    assert torch.equal(outputs[0], outputs[1])
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)


INPLACE_SPEC = """
version: 1
name: inplace_rules
input_shape: [4, 6, 6]
blocks:
  unit:
    body:
      - {op: relu, name: pre}  # reads the block input: never in place
      - {op: conv, name: conv, out: 4, kernel: 3, padding: 1}
      - {op: relu, name: act}  # conv is read again below: not in place
      - {op: add, name: sum, inputs: [conv, act]}  # conv read again, act saved by autograd
      - {op: add, name: sum2, inputs: [act, conv]}
      - {op: add, name: out, inputs: [input, sum, sum2]}
      - {op: conv, name: proj, out: 4, kernel: 1}
      - {op: bn, name: bn}
      - {op: add, name: res, inputs: [out, bn]}  # both die here: +=
      - {op: relu, name: act2}  # in place
body:
  - {block: unit, name: u1}
  - {op: relu, name: last}  # reads a block's output: not in place
"""


def test_in_place_only_where_the_value_dies_and_no_backward_reads_it(write_spec) -> None:
    spec = rescompiler.load_spec(write_spec(INPLACE_SPEC))
    source = rescompiler.emit(spec, "torch")
    assert source.count("inplace=True") == 1 and "self.act2 = nn.ReLU(inplace=True)" in source
    assert source.count(" += ") == 1
    torch.manual_seed(0)
    model = rescompiler.build(spec, "torch").eval()
    randomise_torch_bn(model)
    unit = model.u1
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    before = x.detach().clone()
    y = model(x)
    y.square().sum().backward()
    grads = [x.grad, *(p.grad for p in model.parameters())]
    x.grad = None
    model.zero_grad()

    def expected(x: torch.Tensor) -> torch.Tensor:  # the spec, written out of place
        conv = torch.nn.functional.conv2d(x.relu(), unit.conv.weight, unit.conv.bias, padding=1)
        act = conv.relu()
        out = x + (conv + act) + (act + conv)
        bn = unit.bn(unit.proj(out))
        return (out + bn).relu().relu()

    z = expected(x)
    z.square().sum().backward()
    assert torch.equal(x.detach(), before)
    assert torch.equal(y, z)
    for a, b in zip(grads, [x.grad, *(p.grad for p in model.parameters())], strict=True):
        assert torch.equal(a, b)
