"""A feature pyramid on a spec backbone: compile a multi-output spec, load torchvision's
weights into the generated module, and put ``torchvision.ops.FeaturePyramidNetwork`` on its
named outputs, as torchvision's detection models do on ``create_feature_extractor``.

    python examples/fpn_backbone.py                        # resnet50_features, 224×224
    python examples/fpn_backbone.py --spec examples/specs/convnext_tiny_features.yaml
    python examples/fpn_backbone.py --size 64 --check      # and compare with torchvision

``--check`` runs torchvision's ``create_feature_extractor`` on the same weights and input and
fails unless every feature map is bit-identical. The weights are torchvision's randomly
initialised ones (seeded): this machine has no download; with a network, pass ``--pretrained``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import GENERATED, SPECS, ExampleError, compile_module, fail, positive_int

PROG = "fpn_backbone.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPECS / "resnet50_features.yaml")
    parser.add_argument(
        "--model",
        help="the torchvision model whose weights load (default: the spec's name without "
        "'_features')",
    )
    parser.add_argument("--size", type=positive_int, default=224, help="input height and width")
    parser.add_argument("--channels", type=positive_int, default=256, help="FPN width")
    parser.add_argument("--check", action="store_true", help="compare with torchvision")
    parser.add_argument("--pretrained", action="store_true", help="torchvision's ImageNet weights")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Compile, load, run the pyramid; print the shapes (and the check)."""
    args = parse_args(argv)
    try:
        import torch
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor
        from torchvision.ops import FeaturePyramidNetwork
    except ImportError as exc:
        raise ExampleError(f"this example needs torch and torchvision: {exc}") from None
    import rescompiler

    try:
        spec = rescompiler.load_spec(args.spec, {"input_shape": [3, args.size, args.size]})
    except rescompiler.SpecError as exc:
        raise ExampleError(str(exc)) from None
    if not spec.graph.outputs:
        raise ExampleError(f"{args.spec}: the spec has no named outputs (`outputs:`)")
    name = args.model or spec.name.removesuffix("_features")
    if not hasattr(torchvision.models, name):
        raise ExampleError(f"torchvision.models has no {name!r}: pass --model")
    module = compile_module(args.spec, "torch", GENERATED)
    backbone = module.build(input_shape=(3, args.size, args.size)).eval()

    torch.manual_seed(0)
    weights = "DEFAULT" if args.pretrained else None
    reference = getattr(torchvision.models, name)(weights=weights).eval()
    wanted = backbone.state_dict().keys()
    state = {k: v for k, v in reference.state_dict().items() if k in wanted}
    backbone.load_state_dict(state, strict=True)  # every tensor of the backbone, by name

    graph = spec.graph
    widths = [graph.shape_of(node)[0] for node in graph.outputs.values()]
    fpn = FeaturePyramidNetwork(widths, args.channels).eval()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = backbone(x)
        pyramid = fpn(features)
    print(f"{spec.name} ({module.__file__}): {len(state)} tensors of torchvision's {name}")
    for (key, feature), level in zip(features.items(), pyramid.values(), strict=True):
        print(f"  {key:8} {tuple(feature.shape)!s:22} -> FPN {tuple(level.shape)}")
    if args.check:
        returned = {node: key for key, node in graph.outputs.items()}
        extractor = create_feature_extractor(reference, returned).eval()
        with torch.no_grad():
            expected = extractor(x)
        for key, value in expected.items():
            if not torch.equal(features[key], value):
                diff = (features[key] - value).abs().max().item()
                raise ExampleError(f"{key} differs from torchvision's by up to {diff:.3g}")
        print(f"check: every feature map equals create_feature_extractor({name}) bit for bit")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ExampleError as error:
        fail(PROG, str(error))
