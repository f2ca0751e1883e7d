"""The spec library and its reference figures (DESIGN.md), shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# name -> (count as the reference counts it, whether that count includes BN statistics)
REFERENCE_PARAMS: dict[str, tuple[int, bool]] = {
    "resnet18": (11_689_512, False),
    "resnet34": (21_797_672, False),
    "resnet50": (25_557_032, False),
    "resnet101": (44_549_160, False),
    "resnet152": (60_192_808, False),
    "resnext50_32x4d": (25_028_904, False),
    "wide_resnet50_2": (68_883_240, False),
    "densenet121": (7_978_856, False),
    "densenet161": (28_681_000, False),
    "densenet169": (14_149_480, False),
    "densenet201": (20_013_928, False),
    "resnet50v2": (25_613_800, True),
    "resnet101v2": (44_675_560, True),
    "resnet152v2": (60_380_648, True),
    "resnet50v1": (25_636_712, True),
    "resnet101v1": (44_707_176, True),
    "resnet152v1": (60_419_944, True),
    "d2l_resnet18": (11_178_378, False),
    "d2l_densenet": (758_226, False),
    "cifar_residual_net": (5_027_210, False),
    "cifar_resnet20": (269_722, False),
    "cifar_resnet56": (853_018, False),
    "cifar_resnet110": (1_727_962, False),
    "preact_resnet164": (1_703_258, False),
    "preact_resnet1001": (10_327_706, False),
    "unet": (31_037_698, False),
    "unet_original": (31_030_658, False),
    "resnet50d": (25_576_264, False),
    "resnet26d": (16_014_408, False),
    "seresnet50": (28_088_024, False),
    "seresnext50_32x4d": (27_559_896, False),
    "cbam_resnet50": (28_073_576, False),
    "convnext_tiny": (28_589_128, False),
    "convnext_small": (50_223_688, False),
    "convnext_base": (88_591_464, False),
    "convnext_large": (197_767_336, False),
    "mobilenet_v2": (3_504_872, False),
    "mobilenet_v3_large": (5_483_032, False),
    "mobilenet_v3_small": (2_542_856, False),
    "efficientnet_b0": (5_288_548, False),
    "efficientnet_b1": (7_794_184, False),
    "efficientnet_b2": (9_109_994, False),
    "efficientnet_b3": (12_233_232, False),
    "efficientnet_b4": (19_341_616, False),
    "efficientnet_b5": (30_389_784, False),
    "efficientnet_b6": (43_040_704, False),
    "efficientnet_b7": (66_347_960, False),
    "efficientnet_v2_s": (21_458_488, False),
    "efficientnet_v2_m": (54_139_356, False),
    "efficientnet_v2_l": (118_515_272, False),
    "regnet_x_400mf": (5_495_976, False),
    "regnet_x_800mf": (7_259_656, False),
    "regnet_x_1_6gf": (9_190_136, False),
    "regnet_x_3_2gf": (15_296_552, False),
    "regnet_x_8gf": (39_572_648, False),
    "regnet_x_16gf": (54_278_536, False),
    "regnet_x_32gf": (107_811_560, False),
    "regnet_y_400mf": (4_344_144, False),
    "regnet_y_800mf": (6_432_512, False),
    "regnet_y_1_6gf": (11_202_430, False),
    "regnet_y_3_2gf": (19_436_338, False),
    "regnet_y_8gf": (39_381_472, False),
    "regnet_y_16gf": (83_590_140, False),
    "regnet_y_32gf": (145_046_770, False),
    "regnet_y_128gf": (644_812_894, False),
    "convnext_tiny_keras": (28_589_128, True),
    "convnext_small_keras": (50_223_688, True),
    "convnext_base_keras": (88_591_464, True),
    "convnext_large_keras": (197_767_336, True),
    "convnext_xlarge_keras": (350_196_968, True),
    "densenet121_keras": (8_062_504, True),
    "densenet169_keras": (14_307_880, True),
    "densenet201_keras": (20_242_984, True),
    "mobilenet_v2_keras": (3_538_984, True),
    "mobilenet_v3_large_keras": (5_507_432, True),
    "mobilenet_v3_small_keras": (2_554_968, True),
    "efficientnet_b0_keras": (5_330_571, True),
    "efficientnet_b1_keras": (7_856_239, True),
    "efficientnet_b2_keras": (9_177_569, True),
    "efficientnet_b3_keras": (12_320_535, True),
    "efficientnet_b4_keras": (19_466_823, True),
    "efficientnet_b5_keras": (30_562_527, True),
    "efficientnet_b6_keras": (43_265_143, True),
    "efficientnet_b7_keras": (66_658_687, True),
    "efficientnet_v2_b0_keras": (7_200_312, True),
    "efficientnet_v2_b1_keras": (8_212_124, True),
    "efficientnet_v2_b2_keras": (10_178_374, True),
    "efficientnet_v2_b3_keras": (14_467_622, True),
    "efficientnet_v2_s_keras": (21_612_360, True),
    "efficientnet_v2_m_keras": (54_431_388, True),
    "efficientnet_v2_l_keras": (119_027_848, True),
}
# left out of the per-spec build tests (torch/Keras built vs generated, equivalence, inference
# builds) to keep the suite in budget on 2 cores: too big to build several times per test, or a
# variant that only changes params of a sibling that runs the same code. Their counts, headers,
# generated files and seeded init (torchvision's state_dict key by key) are still checked, but
# not a Keras seeded init (two Keras builds of a keras.applications model: 10-30 s each);
# tests/test_library_efficientnet.py loads torchvision's weights into b1 and checks all on meta;
# tests/test_library_densenet_keras.py checks densenet169/201_keras layer by layer against
# keras' DenseNet written out.
HEAVY = {
    "convnext_base",
    "convnext_large",
    # params of convnext_tiny_keras (depths, dims, the Keras model name);
    # tests/test_library_convnext_keras_sizes.py checks all four counts against keras' and
    # small layer by layer (its per-spec tests: ~130 s)
    "convnext_small_keras",
    "convnext_base_keras",
    "convnext_large_keras",
    "convnext_xlarge_keras",
    "densenet169_keras",
    "densenet201_keras",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    # params of efficientnet_b0_keras / efficientnet_v2_b0_keras, which
    # tests/test_library_efficientnet_keras.py checks layer by layer against keras (and all
    # counts against keras' count_params()); v2_b0 is checked there only (seeded init, names,
    # outputs, torch<->Keras): its code paths are b0's (same padding, depthwise, SE, init)
    "efficientnet_v2_b0_keras",
    "efficientnet_b1_keras",
    "efficientnet_b2_keras",
    "efficientnet_b3_keras",
    "efficientnet_b4_keras",
    "efficientnet_b5_keras",
    "efficientnet_b6_keras",
    "efficientnet_b7_keras",
    "efficientnet_v2_b1_keras",
    "efficientnet_v2_b2_keras",
    "efficientnet_v2_b3_keras",
    "efficientnet_v2_s_keras",
    "efficientnet_v2_m_keras",
    "efficientnet_v2_l_keras",
    # RegNets: every one a params-only variant of regnet_y_400mf; x_400mf (no SE) and y_400mf
    # run the per-spec tests, tests/test_library_regnet.py checks all fifteen on meta and loads
    # torchvision's weights into y_1_6gf too
    "regnet_x_800mf",
    "regnet_x_1_6gf",
    "regnet_x_3_2gf",
    "regnet_x_8gf",
    "regnet_x_16gf",
    "regnet_x_32gf",
    "regnet_y_800mf",
    "regnet_y_1_6gf",
    "regnet_y_3_2gf",
    "regnet_y_8gf",
    "regnet_y_16gf",
    "regnet_y_32gf",
    "regnet_y_128gf",
}
TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "convnext_tiny",
    "convnext_small",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_v2_s",
]
# timm models (timm counts parameters only); each spec's reference is timm.<name>
TIMM = ["resnet50d", "resnet26d", "seresnet50", "seresnext50_32x4d"]
# small inputs that keep the suite fast but still exercise every layer
SMALL_INPUT: dict[str, list[int]] = {
    "d2l_resnet18": [1, 64, 64],
    "d2l_densenet": [1, 64, 64],
    "cifar_residual_net": [3, 32, 32],
    "cifar_resnet20": [3, 32, 32],
    "cifar_resnet56": [3, 32, 32],
    "cifar_resnet110": [3, 32, 32],
    "preact_resnet164": [3, 32, 32],
    "preact_resnet1001": [3, 32, 32],
    "unet": [3, 64, 64],
    "unet_original": [1, 188, 188],
}


def spec_path(name: str) -> Path:
    """Path of a library spec."""
    return SPECS / f"{name}.yaml"


def library() -> list[str]:
    """The library specs the suite builds (every spec but the HEAVY ones)."""
    return [name for name in REFERENCE_PARAMS if name not in HEAVY]


def every_spec() -> list[str]:
    """Every spec in the library (DESIGN.md's table), heavy ones included."""
    return list(REFERENCE_PARAMS)


def small_input(name: str) -> list[int]:
    """A small C×H×W input for equivalence tests of ``name``."""
    return SMALL_INPUT.get(name, [3, 64, 64])


def flat_layers(model: Any) -> list[Any]:
    """A Keras model's layers, nested models (ConvNeXt's Sequentials) flattened."""
    from rescompiler.backends.keras import flat_layers as flatten

    return flatten(model)
