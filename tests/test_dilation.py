"""``replace_stride_with_dilation``, torchvision's ResNet argument, is a param of the torchvision
ResNet specs with bottleneck blocks: at output stride 16 or 8 (a backbone for DeepLab heads)
torchvision's weights load strictly into the built and the generated model, and their eval
outputs are bit-identical; the spatial sizes are the ones the flags promise."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
import torch
import torchvision
from library import spec_path

import rescompiler
from rescompiler.verifier import randomize_batchnorm

CASES = [
    ("resnet50", [False, False, True]),  # output stride 16
    ("resnet50", [False, True, True]),  # output stride 8
    ("resnet101", [False, True, True]),
    ("resnext50_32x4d", [True, False, True]),  # any combination torchvision accepts
]
SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("name", "flags"), CASES, ids=lambda v: str(v))
def test_dilated_backbone_equals_torchvision(name: str, flags: list[bool]) -> None:
    overrides = {"replace_stride_with_dilation": flags, "input_shape": [3, SIZE, SIZE]}
    spec = rescompiler.load_spec(spec_path(name), overrides=overrides)
    stride = 32 // 2 ** sum(flags)
    last = [node for node in spec.graph.nodes if node.id.startswith("layer4.")][-1]
    assert last.shape[1:] == (SIZE // stride, SIZE // stride)

    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=flags)
    randomize_batchnorm(reference, seed=1)  # non-trivial BN: a misplaced one shows
    state = reference.state_dict()
    built = rescompiler.build(spec, "torch")
    generated = importlib.import_module(f"generated.{name}_torch")
    emitted = generated.build(replace_stride_with_dilation=flags, input_shape=(3, SIZE, SIZE))
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = reference.eval()(x)
        for model in (built, emitted):
            model.load_state_dict(state, strict=True)
            assert torch.equal(model.eval()(x), want)


def test_dilation_reaches_the_3x3_convs_as_torchvision_s() -> None:
    """Per block of a dilated stage: the first at the dilation before the stage, the others
    after it; the shortcut conv no longer strides."""
    flags = [False, True, True]
    spec = rescompiler.load_spec(
        spec_path("resnet50"), overrides={"replace_stride_with_dilation": flags}
    )
    with torch.device("meta"):
        reference = torchvision.models.resnet50(replace_stride_with_dilation=flags)
    convs = {n.id: n.attrs for n in spec.graph.nodes if n.op == "conv"}
    theirs = {
        name: module
        for name, module in reference.named_modules()
        if isinstance(module, torch.nn.Conv2d)
    }
    assert convs.keys() == theirs.keys()
    for key, module in theirs.items():
        attrs = convs[key]
        assert tuple(attrs["dilation"]) == module.dilation, key
        assert tuple(attrs["stride"]) == module.stride, key
        top, _, left, _ = attrs["padding"]  # top, bottom, left, right
        assert (top, left) == module.padding, key
