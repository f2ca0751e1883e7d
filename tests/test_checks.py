"""``checks``: conditions on the params, each a located error when false; inherited by variants."""

from __future__ import annotations

import pytest

import rescompiler

BASE = r"""
version: 1
name: base
input_shape: [3, 16, 16]
params: {widths: [8, 16], only_checked: 2}
let:
  stages: len(widths)
checks:
  - that: stages == 2
    message: the body builds two stages
  - {that: only_checked > 0, message: only_checked must be positive}
  - {that: only_checked < 100, message: 'keep it "small" \ a quote, a backslash: text only'}
body:
  - {op: conv, name: stage1, out: "widths[0]", kernel: 3}
  - {op: conv, name: stage2, out: "widths[1]", kernel: 3}
"""


def errors(path, overrides=None) -> list[str]:
    with pytest.raises(rescompiler.SpecError) as info:
        rescompiler.load_spec(path, overrides)
    return [str(d) for d in info.value.diagnostics]


def test_checks_pass_and_fail_at_their_line(write_spec) -> None:
    path = write_spec(BASE)
    spec = rescompiler.load_spec(path)  # holds; a param read only by a check is read
    assert spec.params["only_checked"] == 2
    found = errors(path, {"widths": [8, 16, 32]})
    # the failed check alone: the body is not expanded with params known to be wrong for it
    assert found == [
        f"{path}:8:5: checks[0].that: check failed: the body builds two stages (stages == 2)"
    ]
    assert "only_checked must be positive" in errors(path, {"only_checked": 0})[0]


def test_a_variant_inherits_the_checks_and_stating_them_replaces_them(write_spec) -> None:
    base = write_spec(BASE, "base.yaml")
    variant = write_spec(
        "version: 1\nextends: base.yaml\nname: wide\nparams: {widths: [8, 16, 32]}\n", "wide.yaml"
    )
    found = errors(variant)
    assert len(found) == 1 and found[0].startswith(f"{base}:8:5: checks[0].that: check failed")
    replaced = write_spec(
        "version: 1\nextends: base.yaml\nname: one\nparams: {widths: [8]}\nchecks: []\n"
        "edit:\n  body:\n    stage2: {delete: true}\n",
        "one.yaml",
    )
    assert rescompiler.load_spec(replaced).graph.nodes[-1].shape[0] == 8


def test_regnet_params_giving_five_stages_are_refused() -> None:
    found = errors("regnet_x_8gf", {"w_a": 5.0})
    assert len(found) == 1 and "regnet_y_400mf.yaml" in found[0]
    assert "check failed: the body builds four stages" in found[0]


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_generated_modules_refuse_what_the_spec_refuses(write_spec, backend: str) -> None:
    """``build(**params)`` of an emitted module runs the checks too, with the same words; a
    message is text, never code."""
    spec = rescompiler.load_spec(write_spec(BASE))
    namespace: dict = {}
    exec(compile(rescompiler.emit(spec, backend), f"base_{backend}", "exec"), namespace)
    namespace["build"]()  # the defaults hold
    with pytest.raises(ValueError, match=r"check failed: the body builds two stages \(stages"):
        namespace["build"](widths=[8, 16, 32])
    with pytest.raises(ValueError) as info:
        namespace["build"](only_checked=200)
    expected = 'keep it "small" \\ a quote, a backslash: text only (only_checked < 100)'
    assert str(info.value) == f"check failed: {expected}"
