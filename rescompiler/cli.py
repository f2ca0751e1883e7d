"""``rescompile``: validate, summarise, draw, or compile a spec.

Exit codes: 0 success, 1 invalid spec (``file:line:col: path: message`` on stderr, nothing
written), 2 usage error. ``--check``, ``--summary`` and ``--graph`` never import a framework.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from pathlib import Path
from typing import Any

import yaml


class Exit(enum.IntEnum):
    """Process exit codes."""

    OK = 0
    SPEC_ERROR = 1
    USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"rescompile: error: {message}", file=sys.stderr)
        raise SystemExit(Exit.USAGE)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (also documents the CLI)."""
    parser = _Parser(
        prog="rescompile",
        description="Compile a residual-CNN spec (YAML/JSON) to PyTorch or Keras. "
        "Use 'rescompile schema' to print the spec format's JSON Schema.",
    )
    parser.add_argument("spec", help="spec file (.yaml, .yml or .json), or 'schema'")
    parser.add_argument("--backend", help="compile with this backend (torch, keras)")
    parser.add_argument(
        "-o", "--out", default="generated", help="output directory, or - for stdout"
    )
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--check", action="store_true", help="validate only; write nothing")
    actions.add_argument("--summary", action="store_true", help="layer table with totals")
    actions.add_argument("--graph", choices=["mermaid", "dot"], help="diagram source to stdout")
    parser.add_argument(
        "--format", choices=["text", "json"], default="text", help="--summary format"
    )
    parser.add_argument(
        "--collapse", action="store_true", help="--graph: one box per block instance"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param (YAML value)",
    )
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["num_classes=10", "depths=[3,4,23,3]"]`` → dict; raises ValueError on bad syntax."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}") from None
    return overrides


def _print_schema() -> int:
    from .schema import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return Exit.OK


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = make_parser().parse_args(argv)
    if args.spec == "schema" and not Path("schema").is_file():
        return _print_schema()
    from . import api
    from .errors import SpecError

    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    if not (args.check or args.summary or args.graph or args.backend):
        print("rescompile: error: give --backend, --check, --summary or --graph", file=sys.stderr)
        return Exit.USAGE
    if args.backend and (args.check or args.summary or args.graph):
        print(
            "rescompile: error: --backend cannot be combined with --check/--summary/--graph",
            file=sys.stderr,
        )
        return Exit.USAGE
    try:
        spec = api.load_spec(args.spec, overrides)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return Exit.SPEC_ERROR
    for warning in spec.warnings:
        print(str(warning), file=sys.stderr)
    if args.check:
        print(f"{args.spec}: ok ({len(spec.graph.nodes)} layers)", file=sys.stderr)
        return Exit.OK
    if args.summary:
        from .summary import summarize

        info = summarize(spec)
        if args.format == "json":
            print(json.dumps(info.to_dict(), indent=2))
        else:
            sys.stdout.write(info.to_text())
        return Exit.OK
    if args.graph:
        from .graph import to_dot, to_mermaid

        render = to_mermaid if args.graph == "mermaid" else to_dot
        sys.stdout.write(render(spec.graph, collapse=args.collapse))
        return Exit.OK
    return _compile(spec, args.backend, args.out)


def _compile(spec: Any, backend: str, out: str) -> int:
    from . import api
    from .errors import SpecError
    from .registry import BackendError

    try:
        source = api.emit(spec, backend)
    except BackendError as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return Exit.SPEC_ERROR
    if out == "-":
        sys.stdout.write(source)
        return Exit.OK
    target = Path(out) / f"{spec.name}_{backend}.py"
    try:
        api.write_atomic(target, source)
    except OSError as exc:
        print(f"rescompile: error: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return Exit.USAGE
    print(target)
    return Exit.OK


def main() -> None:
    """Console-script entry point."""
    try:
        code = run()
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
