"""Fuzz: mutate valid specs (delete, duplicate, retype keys, random values, random bytes).
Every outcome is a loaded spec or a SpecError; no other exception escapes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from library import SPECS

import rescompiler

MALFORMED = Path(__file__).parent / "malformed"
BASES = [
    (MALFORMED / "20_unknown_name_in_expr.yaml").read_text().replace("plane,", "planes,"),
    (SPECS / "resnet50.yaml").read_text(),
]
SMALL_SPECS = ["cifar_resnet20.yaml", "unet.yaml", "densenet121.yaml", "resnet50v2.yaml"]
BASES += [(SPECS / name).read_text() for name in SMALL_SPECS if (SPECS / name).exists()]
BASE_DATA = [yaml.safe_load(text) for text in BASES]

SCALARS = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(
        [
            "",
            "x",
            "planes * 4",
            "1 // 0",
            "depths[9]",
            "__import__('os')",
            "().__class__",
            "same",
            "a" * 600,
            "2 ** 99",
            "[1] * 3",
            "in_channels",
            "i",
            "relu",
            "conv",
            "input",
            "{i}",
            "zeros",
            "-1",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += paths(value, (*prefix, index))
    return out


def mutate(data: Any, path: tuple[Any, ...], action: str, value: Any, key: str) -> Any:
    data = copy.deepcopy(data)
    if not path:
        return value if action == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif action == "rename" and isinstance(parent, dict):
        parent[key or "k"] = parent.pop(last)
    elif action == "wrap":
        parent[last] = [parent[last]]
    return data


def check(path: Path) -> None:
    try:
        rescompiler.load_spec(path)
    except rescompiler.SpecError as err:
        assert err.diagnostics and all(d.location.file for d in err.diagnostics)
        assert str(err)


FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(
    st.data(),
    st.sampled_from(["delete", "replace", "duplicate", "rename", "wrap"]),
    VALUES,
    st.text(max_size=8),
)
def test_structural_mutations_never_crash(
    tmp_path: Path, data: st.DataObject, action: str, value: Any, key: str
) -> None:
    index = data.draw(st.integers(0, len(BASE_DATA) - 1))
    base = BASE_DATA[index]
    path = data.draw(st.sampled_from(paths(base)))
    mutated = mutate(base, path, action, value, key)
    target = tmp_path / "fuzz.yaml"
    target.write_text(yaml.safe_dump(mutated, allow_unicode=True))
    check(target)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data(), st.binary(min_size=1, max_size=12))
def test_random_bytes_never_crash(tmp_path: Path, data: st.DataObject, noise: bytes) -> None:
    text = BASES[data.draw(st.integers(0, len(BASES) - 1))].encode()
    at = data.draw(st.integers(0, len(text)))
    target = tmp_path / "bytes.yaml"
    target.write_bytes(text[:at] + noise + text[at:])
    check(target)
