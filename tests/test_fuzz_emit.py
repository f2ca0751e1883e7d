"""Fuzz the emitters: mutants of library specs aimed at code generation either fail with the
project's own error, or give torch and Keras sources that compile and hold no spec text as code.

Each case is a seed (see ``fuzz_mutants.py``): a small library spec (cifar_resnet20, resnet18,
densenet121, unet, resnet50v2, d2l_densenet at a 32×32 input, fewer repeats) gets one to three
mutations — hostile text in descriptions, references and docs (triple quotes of both kinds,
backslashes at line ends, line separators, NULs, very long words, injection attempts carrying a
marker identifier), Python-hostile renames of params, lets, block params and inputs, nodes,
groups, blocks and the spec itself, done consistently so the mutant stays valid (``nn``,
``layers``, ``range``, ``Any``, ``build``, ``forward``, ``to``, generated class names...),
``child_name`` and ``names:`` templates, numeric edge values, calls the evaluator allows with a
param named like the function, quoted hostile strings as param values, hostile overrides,
``test_fuzz.py``'s structural mutations and hostile file names — and is written as YAML or JSON.
A second, systematic set puts every hostile identifier into each kind of name of a tiny spec.

``load_spec`` must succeed or raise ``SpecError`` whose diagnostics each have a file and one
line; then ``emit`` for both backends (a tenth of the cases also the inference builds) must
return source or raise ``SpecError``. The source is compiled, never run, and its AST checked
(``fuzz_mutants.check_module``): only a docstring, the known imports, literal ``DEFAULTS`` and
``INPUT_SHAPE``, classes and functions at the top, each name bound once; no identifier from
spec text; no local hiding a module function it calls, an import or global it dereferences or
a builtin it calls; no spec param or Keras ``name`` prefix assigned over; no torch submodule
named like an ``nn.Module`` member; no Keras layer name with ``/``; ``DEFAULTS`` equal to the
spec's params and each accepted by the model ``build()`` calls.

The run is seeded, so CI sees the same cases every time: ``RESCOMPILER_FUZZ_EMIT_CASES``
(default 2,000), ``RESCOMPILER_FUZZ_EMIT_SEED`` and ``RESCOMPILER_FUZZ_EMIT_SWEEP_STEP`` (default
11; 1 runs the whole sweep) explore further. ``python tests/fuzz_mutants.py --start S --count N``
(or ``--sweep``) runs many more and minimises each distinct failure to a small spec; those
become ``REGRESSIONS`` below.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path

import pytest
from fuzz_mutants import (
    BASES,
    MARKER,
    ROOT,
    SWEEP_KINDS,
    TINY,
    Case,
    Failure,
    check_module,
    make_case,
    run_case,
    run_file,
    sweep_case,
    sweep_names,
)

CASES = int(os.environ.get("RESCOMPILER_FUZZ_EMIT_CASES", "2000"))
SEED = int(os.environ.get("RESCOMPILER_FUZZ_EMIT_SEED", "0"))
CHUNK = 100
CHUNKS = range(SEED, SEED + CASES, CHUNK)
SWEEP_TOTAL = len(sweep_names()) * len(SWEEP_KINDS)
SWEEP_STEP = next(
    k
    for k in count(int(os.environ.get("RESCOMPILER_FUZZ_EMIT_SWEEP_STEP", "11")))
    if math.gcd(k, SWEEP_TOTAL) == 1
)
SWEEP = range(0, SWEEP_TOTAL, SWEEP_STEP)
SWEEP_PARTS = 4
GENERATED = sorted((ROOT / "generated").glob("*_torch.py")) + sorted(
    (ROOT / "generated").glob("*_keras.py")
)


def report(failures: dict[str, tuple[Failure, Case]]) -> str:
    """One paragraph per distinct failure: what, which seed and mutations, the mutant."""
    out = []
    for signature, (failure, case) in sorted(failures.items()):
        text = case.text()
        text = text if len(text) < 1500 else text[:1500] + "\n[...]"
        out.append(
            f"[{failure.kind}] {signature}\n  {failure.detail}\n  seed {case.seed}, base "
            f"{case.base}, file {case.stem}.{case.fmt}, optimize={case.optimize}, "
            f"overrides={case.overrides!r}\n  " + "\n  ".join(case.steps) + f"\n{text}"
        )
    return f"{len(out)} distinct failure(s):\n\n" + "\n\n".join(out)


def run_cases(tmp_path: Path, make: Callable[[int], Case], indices: Sequence[int]) -> None:
    """Run the cases ``make`` draws for ``indices``; fail listing each distinct failure."""
    failures: dict[str, tuple[Failure, Case]] = {}
    outcomes: dict[str, int] = {}
    for index in indices:
        case = make(index)
        directory = tmp_path / str(index)
        directory.mkdir()
        outcome, found = run_case(case, directory)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for failure in found:
            failures.setdefault(failure.signature, (failure, case))
    if failures:
        pytest.fail(report(failures), pytrace=False)
    # the fuzz is not vacuous: a good share of the mutants reach both emitters
    assert outcomes.get("emitted", 0) >= len(indices) // 4, outcomes


@pytest.mark.parametrize("start", CHUNKS, ids=lambda s: f"seeds{s}")
def test_mutants_fail_cleanly_or_emit_inert_code(tmp_path: Path, start: int) -> None:
    run_cases(tmp_path, make_case, range(start, min(start + CHUNK, SEED + CASES)))


@pytest.mark.parametrize("part", range(SWEEP_PARTS), ids=lambda p: f"part{p}")
def test_hostile_names_in_every_kind_of_name(tmp_path: Path, part: int) -> None:
    """Each hostile identifier as a param, let, block param, block let, block input, node,
    group, stage, block, inner block and spec name of a tiny spec (a coprime stride of the
    full sweep, so each name meets several kinds)."""
    run_cases(tmp_path, sweep_case, SWEEP[part::SWEEP_PARTS])


@pytest.mark.parametrize("name", [*sorted(BASES), "tiny"])
@pytest.mark.parametrize("optimize", [False, True])
def test_bases_emit_cleanly(tmp_path: Path, name: str, optimize: bool) -> None:
    case = Case(0, name, BASES.get(name, TINY), optimize=optimize)
    outcome, failures = run_case(case, tmp_path)
    assert (outcome, failures) == ("emitted", [])


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: p.stem)
def test_oracle_accepts_the_committed_modules(path: Path) -> None:
    """The allowed top level (imports, globals, bases...) is what the emitters write."""
    assert check_module(path.read_text(encoding="utf-8"), str(path)) == []


GOOD = '''"""Doc."""

from __future__ import annotations

from typing import Any

from torch import nn

DEFAULTS: dict[str, Any] = {"width": 4}
INPUT_SHAPE = (3, 8, 8)


class Model(nn.Module):
    """Model."""

    def __init__(self, width: int = 4, input_shape: Any = (3, 8, 8)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], width, 3)

    def forward(self, x: Any) -> Any:
        return self.conv(x)


def build(**params: Any) -> Model:
    """Build."""
    return Model(**params)
'''
KERAS = GOOD.replace("from torch import nn", "from torch import nn\nfrom keras import layers")
# what the oracle must report: (category of the problem, module source)
BAD = {
    "docstring broken out": (
        "injected",
        GOOD.replace('"""Model."""', f'"""Model."""\n    {MARKER}()\n    """"""'),
    ),
    "statement at the top": ("top-level", GOOD + "\nprint(1)\n"),
    "code in a method": (
        "injected",
        GOOD.replace("super().__init__()", f"super().__init__()\n        {MARKER}"),
    ),
    "unknown import": (
        "top-level",
        GOOD.replace("from typing import Any", "from typing import Any\nimport os"),
    ),
    "non-literal DEFAULTS": ("top-level", GOOD.replace('{"width": 4}', '{"width": len("ab")}')),
    "unknown global": ("top-level", GOOD + "\nx = 1\n"),
    "class bound twice": ("rebound-global", GOOD + "\n\nclass Model(nn.Module):\n    pass\n"),
    "import rebound": ("rebound-global", GOOD + "\n\ndef nn():\n    pass\n"),
    "param hides an import": ("shadow-global", GOOD.replace("width: int = 4", "nn: int = 4")),
    "param hides a module function": (
        "shadow-function",
        GOOD + "\n\ndef other(Model: int = 1) -> Any:\n    return Model()\n",
    ),
    "local hides a builtin": (
        "shadow-builtin",
        GOOD.replace("return self.conv(x)", "len = 1\n        return len(x)"),
    ),
    "param assigned over": (
        "param-overwritten",
        GOOD.replace("super().__init__()", "super().__init__()\n        width = 3"),
    ),
    "submodule named like a Module member": ("nn-member", GOOD.replace("self.conv", "self.to")),
    "keras layer name with a slash": (
        "keras-name",
        KERAS.replace("self.conv(x)", 'layers.Dense(2, name=f"a/{x}")(x)'),
    ),
    "param build() cannot pass": (
        "build-contract",
        GOOD.replace("width: int = 4", "width_: int = 4"),
    ),
    "syntax error": ("compile", GOOD.replace('"""Model."""', '"""Model.""""')),
    "NUL byte": ("compile", GOOD.replace("Doc.", "Doc.\x00")),
}


def test_oracle_accepts_a_clean_module() -> None:
    assert check_module(GOOD, params={"width": 4}) == []


@pytest.mark.parametrize("params", [{"width": 5}, {"width": True}, {"depth": 4}, {}])
def test_oracle_compares_defaults_with_the_params(params: dict[str, object]) -> None:
    assert check_module(GOOD, params=params)[0].startswith("defaults: ")


@pytest.mark.parametrize(("category", "source"), BAD.values(), ids=list(BAD))
def test_oracle_catches(category: str, source: str) -> None:
    problems = check_module(source, values=frozenset({"width"}))
    assert any(p.startswith(f"{category}: ") for p in problems), problems


# minimised failures found by ``fuzz_mutants.py``: (id, file name, inference builds too, text)
HEAD = "version: 1\nname: r\ninput_shape: [3, 8, 8]\n"
RELU = "    body:\n    - {op: relu}\n"
REGRESSIONS: list[tuple[str, str, bool, str]] = [
    (  # was: AssertionError "fold plan disagrees with the graph" (children named alike)
        "child names alike",
        "r.yaml",
        True,
        HEAD + "blocks:\n  b:\n    body:\n    - {op: conv, out: 4, kernel: 1}\n"
        "    - {op: bn}\nbody:\n- {block: b, name: s, repeat: 2, child_name: '{i * 0}'}\n",
    ),
    (  # KeyError: 'stride' from attrs._conv_padding
        "zeropad padding same",
        "r.yaml",
        False,
        HEAD + "body:\n- {op: zeropad, padding: same}\n",
    ),
    (  # keras: inputs = keras.Input(...) hides def inputs(); the model calls inputs(x)
        "block named inputs",
        "r.yaml",
        False,
        HEAD + "blocks:\n  inputs:\n" + RELU + "body:\n- {block: inputs}\n",
    ),
    (  # keras: the model's input_shape argument hides def input_shape()
        "block named input_shape",
        "r.yaml",
        False,
        HEAD + "blocks:\n  input_shape:\n" + RELU + "body:\n- {block: input_shape}\n",
    ),
    (  # keras: a block's keyword-only name argument hides def name()
        "inner block named name",
        "r.yaml",
        False,
        HEAD + "blocks:\n  name:\n" + RELU + "  outer:\n    body:\n    - {block: name}\n"
        "body:\n- {block: outer}\n",
    ),
    (  # keras: in_channels = x.shape[-1] hides def in_channels()
        "inner block named in_channels",
        "r.yaml",
        False,
        HEAD + "blocks:\n  in_channels:\n" + RELU + "  outer:\n    body:\n"
        "    - {op: conv, out: in_channels, kernel: 1}\n    - {block: in_channels}\n"
        "body:\n- {block: outer}\n",
    ),
    (  # torch: forward(self, torch) then torch.cat(...)
        "block input named torch",
        "r.yaml",
        False,
        HEAD + "blocks:\n  b:\n    inputs: [torch]\n    body:\n"
        "    - {op: conv, out: 4, kernel: 1}\n    - {op: concat, inputs: [torch, conv]}\n"
        "body:\n- {block: b}\n",
    ),
    (  # torch: torch = self.torch(x) ... torch.cat([torch, x], 1) in forward()
        "node named torch",
        "r.yaml",
        True,
        HEAD + "body:\n- {op: conv, name: stem, out: 4, kernel: 1}\n"
        "- {op: conv, name: torch, out: 4, kernel: 1}\n"
        "- {op: conv, name: side, inputs: stem, out: 4, kernel: 1}\n"
        "- {op: concat, inputs: [torch, side]}\n",
    ),
    (  # torch and keras: in_channels = input_shape[0] overwrites the param the conv reads
        "model param named in_channels",
        "r.yaml",
        False,
        HEAD + "params: {in_channels: 2}\nbody:\n- {op: conv, out: in_channels, kernel: 1}\n",
    ),
    (  # class Any(nn.Module) / def Any() rebinds typing.Any (get_type_hints, ruff F811)
        "block named Any",
        "r.yaml",
        True,
        HEAD + "blocks:\n  Any:\n" + RELU + "body:\n- {block: Any}\n",
    ),
    (  # the model class Sequence rebinds collections.abc.Sequence
        "spec named sequence",
        "r.yaml",
        False,
        HEAD.replace("name: r", "name: sequence") + "body:\n- {op: relu}\n",
    ),
]


@pytest.mark.parametrize(
    ("file", "optimize", "text"), [r[1:] for r in REGRESSIONS], ids=[r[0] for r in REGRESSIONS]
)
def test_regressions(tmp_path: Path, file: str, optimize: bool, text: str) -> None:
    path = tmp_path / file
    path.write_text(text, encoding="utf-8")
    _, failures = run_file(path, optimize)
    assert [failure.detail for failure in failures] == []
