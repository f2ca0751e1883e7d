"""Several named outputs: a backbone spec returns a dict in torch (as torchvision's
``create_feature_extractor``) and a Keras model with named outputs; summary, graph, fold,
verify and transfer_weights handle every output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import rescompiler
from rescompiler.graph import to_mermaid
from rescompiler.summary import summarize

ROOT = Path(__file__).resolve().parent.parent

BACKBONE = """\
version: 1
extends: resnet50
name: resnet50_features
description: ResNet-50 feature maps for an FPN
input_shape: [3, 64, 64]
outputs: {c2: layer1, c3: layer2, c4: layer3, c5: layer4}
edit:
  body:
    avgpool: {delete: true}
    flatten: {delete: true}
    fc: {delete: true}
"""

SMALL = """\
version: 1
name: two_heads
input_shape: [3, 16, 16]
outputs: [stem, head]
body:
  - {op: conv, name: stem, out: 4, kernel: 3, stride: 2, padding: 1}
  - {op: bn, name: norm}
  - {op: relu}
  - {op: conv, name: mid, out: 4, kernel: 3, padding: 1}
  - {op: bn}
  - {op: add, name: head, inputs: [bn, relu]}
"""


def test_backbone_equals_torchvision_feature_extractor(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = rescompiler.load_spec(write_spec(BACKBONE))
    torch.manual_seed(0)
    reference = create_feature_extractor(
        torchvision.models.resnet50().eval(),
        {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
    )
    state = {k: v for k, v in reference.state_dict().items()}
    source = rescompiler.emit(spec, "torch")
    assert "-> dict[str, torch.Tensor]:" in source
    path = tmp_path / "resnet50_features_torch.py"
    path.write_text(source)
    namespace: dict[str, object] = {}
    exec(compile(source, str(path), "exec"), namespace)  # the file a user imports
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        for model in (rescompiler.build(spec, "torch"), namespace["build"]()):  # type: ignore[operator]
            model.load_state_dict(state, strict=True)  # type: ignore[attr-defined]
            got = model.eval()(x)  # type: ignore[attr-defined]
            assert list(got) == ["c2", "c3", "c4", "c5"]
            for key in expected:
                assert torch.equal(got[key], expected[key]), key
    # an FPN on top, as torchvision's detection models put it
    fpn = torchvision.ops.FeaturePyramidNetwork([256, 512, 1024, 2048], 64).eval()
    with torch.no_grad():
        pyramid = fpn(rescompiler.build(spec, "torch").eval()(x))
    assert [tuple(v.shape) for v in pyramid.values()] == [
        (2, 64, 16, 16),
        (2, 64, 8, 8),
        (2, 64, 4, 4),
        (2, 64, 2, 2),
    ]


def test_summary_and_graph_show_the_outputs(write_spec: Callable[..., Path]) -> None:
    spec = rescompiler.load_spec(write_spec(SMALL))
    assert dict(spec.graph.outputs) == {"stem": "stem", "head": "head"}
    text = summarize(spec).to_text()
    assert "outputs: stem 4×8×8, head 4×8×8" in text
    mermaid = to_mermaid(spec.graph)
    assert "output stem" in mermaid and "output head" in mermaid


def test_named_outputs_in_both_frameworks(write_spec: Callable[..., Path]) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("keras")
    import numpy as np

    spec = rescompiler.load_spec(write_spec(SMALL))
    source = rescompiler.build(spec, "torch").eval()
    keras_model = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, keras_model)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in source(torch.from_numpy(x)).items()}
    got = keras_model(x.transpose(0, 2, 3, 1), training=False)
    assert sorted(got) == ["head", "stem"]
    for key, value in expected.items():
        y = np.asarray(got[key]).transpose(0, 3, 1, 2)
        assert np.max(np.abs(y - value)) <= 1e-4 * np.max(np.abs(value)) + 1e-5
    # the stem's BN is folded in the inference build, and both outputs stay as they were
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(source.state_dict())
    with torch.no_grad():
        out = fast(torch.from_numpy(x))
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, rtol=1e-4, atol=1e-5)


def test_verify_compares_every_output(write_spec: Callable[..., Path]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from rescompiler.verifier import verify

    report = verify(rescompiler.load_spec(write_spec(SMALL)))
    assert report.ok
    assert {pair.output for pair in report.pairs} == {"stem", "head"}


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ("[stme]", "unknown node 'stme' of the model body (did you mean 'stem'?)"),
        ("{a: input}", "output 'a' is the model input"),
        ("{a-b: stem}", "outputs"),
    ],
)
def test_bad_outputs_are_located(
    outputs: str, message: str, write_spec: Callable[..., Path]
) -> None:
    text = SMALL.replace("outputs: [stem, head]", f"outputs: {outputs}")
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(write_spec(text))
    assert message in str(info.value)
    assert ":4:" in str(info.value)


GROUPED = """\
version: 1
name: grouped
input_shape: [3, 16, 16]
params: {extra: true}
outputs: {low: features.0.1, mid: features.1, high: features.2}
body:
  - group: features
    body:
      - group: 0
        body:
          - {op: conv, out: 4, kernel: 3, stride: 2, padding: 1, bias: false}
          - {op: bn}
          - {op: relu}
          - {op: conv, out: 4, kernel: 3, padding: 1}
      - {op: relu}
      - group: 2
        body:
          - {op: relu}
          - {op: conv, out: 8, kernel: 3, stride: 2, padding: 1}
  - {op: global_avgpool}
"""


def test_children_of_groups_are_outputs_in_both_frameworks(
    write_spec: Callable[..., Path],
) -> None:
    """``features.0.1`` (a BN inside a nested nn.Sequential, before an in-place ReLU) and
    ``features.1``: the torch forward runs the groups child by child and keeps each output
    before the next child could overwrite it; Keras returns the same tensors; the inference
    build folds that BN into its conv and still returns its value."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("keras")
    import numpy as np

    spec = rescompiler.load_spec(write_spec(GROUPED))
    assert dict(spec.graph.outputs) == {
        "low": "features.0.1",
        "mid": "features.1",
        "high": "features.2.1",
    }
    source = rescompiler.build(spec, "torch").eval()
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.bias.uniform_(-1, 1)  # negative values: a ReLU in place would show
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32")
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in source(torch.from_numpy(x)).items()}
        seq = source.features
        stem = seq[0][1](seq[0][0](torch.from_numpy(x)))
        mid = torch.relu(seq[0][3](torch.relu(stem)))
    assert np.array_equal(expected["low"], stem.numpy())
    assert expected["low"].min() < 0  # the BN's output, not the ReLU's
    assert np.array_equal(expected["mid"], mid.numpy())
    namespace: dict[str, object] = {}
    exec(compile(rescompiler.emit(spec, "torch"), "grouped_torch.py", "exec"), namespace)
    generated = namespace["build"]().eval()  # type: ignore[operator]
    generated.load_state_dict(source.state_dict(), strict=True)
    fast = rescompiler.build(spec, "torch", optimize="inference")
    fast.load_state_dict(source.state_dict())
    keras_model = rescompiler.build(spec, "keras")
    rescompiler.transfer_weights(spec, source, keras_model)
    with torch.no_grad():
        again = generated(torch.from_numpy(x))
        folded = fast(torch.from_numpy(x))
    got = keras_model(x.transpose(0, 2, 3, 1), training=False)
    assert sorted(got) == sorted(expected) == sorted(again) == sorted(folded)
    for key, value in expected.items():
        assert torch.equal(again[key], torch.from_numpy(value)), key
        np.testing.assert_allclose(folded[key].numpy(), value, rtol=1e-4, atol=1e-5)
        y = np.asarray(got[key]).transpose(0, 3, 1, 2)
        assert np.max(np.abs(y - value)) <= 1e-4 * np.max(np.abs(value)) + 1e-5, key


def test_convnext_stage_outputs_equal_torchvision_feature_extractor() -> None:
    """examples/specs/convnext_tiny_features.yaml: torchvision's convnext_tiny weights load
    strictly (classifier left out) and every stage output equals create_feature_extractor's."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.feature_extraction import create_feature_extractor

    path = ROOT / "examples" / "specs" / "convnext_tiny_features.yaml"
    spec = rescompiler.load_spec(path, {"input_shape": [3, 64, 64]})
    assert not spec.warnings, [str(w) for w in spec.warnings]
    torch.manual_seed(0)
    reference = torchvision.models.convnext_tiny().eval()
    returned = {"features.1": "stage1", "features.3": "stage2", "features.5": "stage3"}
    extractor = create_feature_extractor(reference, {**returned, "features.7": "stage4"})
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("classifier")}
    x = torch.randn(2, 3, 64, 64)
    namespace: dict[str, object] = {}
    exec(compile(rescompiler.emit(spec, "torch"), "features_torch.py", "exec"), namespace)
    with torch.no_grad():
        expected = extractor(x)
        for model in (rescompiler.build(spec, "torch"), namespace["build"]()):  # type: ignore[operator]
            model.load_state_dict(state, strict=True)  # type: ignore[attr-defined]
            got = model.eval()(x)  # type: ignore[attr-defined]
            assert list(got) == ["stage1", "stage2", "stage3", "stage4"]
            for key, value in expected.items():
                assert torch.equal(got[key], value), key


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ("{a: features.9}", "unknown child '9' of group features"),
        ("{a: features.0.1.2}", "features.0.1 is not a group"),
        ("{a: featurs.1}", "unknown node 'featurs' of the model body (did you mean 'features'?)"),
        ("{a: features.2.1}", "features.1 has 'when'"),
    ],
)
def test_bad_group_outputs_are_located(
    outputs: str, message: str, write_spec: Callable[..., Path]
) -> None:
    text = GROUPED.replace("outputs: {low: features.0.1, mid: features.1, high: features.2}", "")
    text = text.replace("version: 1\n", f"version: 1\noutputs: {outputs}\n")
    text = text.replace(
        "      - {op: relu}\n      - group: 2", "      - {op: relu, when: extra}\n      - group: 2"
    )
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(write_spec(text))
    assert message in str(info.value)
    assert ":2:" in str(info.value)
