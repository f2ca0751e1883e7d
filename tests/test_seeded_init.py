"""Seeded initialisation equals the reference's: with one seed, torchvision and the built and
generated torch models give bit-identical state_dicts and leave the random stream in the same
place; keras.applications and the Keras build give identical weights under
``keras.utils.set_random_seed``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from library import HEAVY, flat_layers

import rescompiler

ROOT = Path(__file__).resolve().parent.parent


def references(prefix: str) -> list[tuple[str, str]]:
    """(spec name, reference attribute) of the library specs whose reference starts so."""
    found = []
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        reference = str(yaml.safe_load(path.read_text()).get("reference", ""))
        if reference.startswith(prefix):
            found.append((path.stem, reference[len(prefix) :]))
    return found


# seeding a HEAVY RegNet three times costs 1-80 s (regnet_y_128gf: 3 x 645M parameters); all
# fifteen are params-only variants of regnet_y_400mf and each passed here when it was added, so
# regnet_x_400mf and regnet_y_400mf stand for the family
TORCHVISION = [
    case
    for case in references("torchvision.models.")
    if not (case[0].startswith("regnet_") and case[0] in HEAVY)
]
# a Keras build of a HEAVY one costs 10-30 s; each is a params-only variant of a spec checked here
KERAS = [case for case in references("keras.applications.") if case[0] not in HEAVY]


def test_the_library_has_references_to_check() -> None:
    assert len(TORCHVISION) >= 11 and len(KERAS) >= 6


@pytest.mark.parametrize(("name", "builder"), TORCHVISION)
def test_torch_seeded_init_equals_torchvision(name: str, builder: str) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.set_num_threads(1)
    spec = rescompiler.load_spec(ROOT / "specs" / f"{name}.yaml")
    generated = importlib.import_module(f"generated.{name}_torch")
    makers = {
        "torchvision": lambda: getattr(torchvision.models, builder)(),
        "built": lambda: rescompiler.build(spec, "torch"),
        "generated": generated.build,
    }
    states, after = {}, {}
    for who, make in makers.items():
        torch.manual_seed(0)
        states[who] = make().state_dict()
        after[who] = torch.rand(4)  # where each left the random stream
    reference = states.pop("torchvision")
    for who, state in states.items():
        assert list(state) == list(reference), who
        differ = [k for k in reference if not torch.equal(state[k], reference[k])]
        assert not differ, (who, differ[:5])
        assert torch.equal(after[who], after["torchvision"]), who


# keras.applications draws initial weights in an order a spec cannot state (known, measured)
KERAS_ORDER_DIFFERS = {
    "convnext_tiny_keras": "keras.applications' ConvNeXt builds the stem and the downsampling "
    "Sequentials before any block; ours builds layers in the order they run (48 of 182 "
    "weights differ under one seed; outputs with copied weights are identical)",
}


@pytest.mark.parametrize(
    ("name", "application"),
    [
        pytest.param(
            *case,
            marks=pytest.mark.xfail(reason=KERAS_ORDER_DIFFERS[case[0]], strict=True),
        )
        if case[0] in KERAS_ORDER_DIFFERS
        else case
        for case in KERAS
    ],
)
def test_keras_seeded_init_equals_keras_applications(name: str, application: str) -> None:
    keras = pytest.importorskip("keras")
    import numpy as np

    spec = rescompiler.load_spec(
        ROOT / "specs" / f"{name}.yaml", overrides={"input_shape": [3, 32, 32]}
    )
    keras.utils.set_random_seed(0)
    reference = getattr(keras.applications, application)(weights=None, input_shape=(32, 32, 3))
    keras.utils.set_random_seed(0)
    ours = rescompiler.build(spec, "keras")

    mine = {layer.name: layer for layer in flat_layers(ours)}
    theirs = [layer for layer in flat_layers(reference) if layer.weights]
    # a layer keras.applications leaves unnamed (EfficientNet's Normalization) is named by a
    # per-process counter ("normalization_2"): pair those with ours of that type, in order
    named = {layer.name for layer in theirs}
    spare = [layer for layer in flat_layers(ours) if layer.weights and layer.name not in named]
    compared = 0
    for layer in theirs:
        if layer.name in mine:
            match = mine[layer.name]
        else:
            match = next(m for m in spare if isinstance(m, type(layer)))
            spare.remove(match)
        for a, b in zip(layer.get_weights(), match.get_weights(), strict=True):
            assert a.shape == b.shape and np.array_equal(a, b), layer.name
            compared += 1
    assert compared == len(reference.weights)
