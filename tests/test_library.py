"""Every spec of the library reproduces its reference's parameter count (front end only)."""

from __future__ import annotations

import pytest
from library import REFERENCE_PARAMS, every_spec, spec_path

import rescompiler


@pytest.mark.parametrize("name", every_spec())
def test_parameter_count_matches_reference(name: str) -> None:
    spec = rescompiler.load_spec(spec_path(name))
    info = rescompiler.summarize(spec)
    expected, with_stats = REFERENCE_PARAMS[name]
    got = info.total_params if with_stats else info.trainable_params
    assert got == expected
    assert not spec.warnings, [str(w) for w in spec.warnings]


@pytest.mark.parametrize("name", every_spec())
def test_spec_name_matches_file_and_points_at_schema(name: str) -> None:
    path = spec_path(name)
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/spec.schema.json"
    assert rescompiler.load_spec(path).name == name


def test_resnet50_shapes_and_macs() -> None:
    spec = rescompiler.load_spec(spec_path("resnet50"))
    assert spec.graph.node("layer4.2.relu_2").shape == (2048, 7, 7)
    macs = rescompiler.summarize(spec).macs
    assert abs(macs - 4.09e9) <= 0.01 * 4.09e9


def test_variants_are_a_few_lines() -> None:
    text = spec_path("resnet101").read_text()
    assert "extends: resnet50.yaml" in text
    assert len([line for line in text.splitlines() if line.strip()]) <= 10
