"""``rescompile``: validate, summarise, draw, or compile a spec.

Exit codes: 0 success, 1 invalid spec (``file:line:col: path: message`` on stderr, nothing
written), 2 usage error. ``--check``, ``--summary`` and ``--graph`` never import a framework.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import sys
from pathlib import Path
from typing import Any


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
    parser.add_argument(
        "spec",
        help="spec file (.yaml, .yml or .json) or a library spec's name (resnet50); "
        "'list' lists the library, 'schema' prints the JSON Schema",
    )
    parser.add_argument("--backend", help="compile with this backend (torch, keras)")
    parser.add_argument(
        "-o",
        "--out",
        help="output directory (default generated), or - for stdout; with --convert the file",
    )
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--check", action="store_true", help="validate only; write nothing")
    actions.add_argument("--summary", action="store_true", help="layer table with totals")
    actions.add_argument("--graph", choices=["mermaid", "dot"], help="diagram source to stdout")
    actions.add_argument(
        "--verify",
        action="store_true",
        help="build torch and keras, directly and from source; compare outputs on random weights",
    )
    actions.add_argument(
        "--convert", metavar="CHECKPOINT", help="port a checkpoint to the framework --to names"
    )
    parser.add_argument("--to", choices=["torch", "keras"], help="--convert: target framework")
    parser.add_argument("--device", default="cpu", help="--verify: torch device (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0, help="--verify: random seed")
    parser.add_argument(
        "--optimize",
        choices=["inference"],
        help="with --backend: emit a deployment module (BatchNorm folded, ...)",
    )
    parser.add_argument(
        "--format", choices=["text", "json"], default="text", help="--summary/--verify format"
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


def parse_overrides(items: list[str], origin: str = "--set") -> dict[str, Any]:
    """``["num_classes=10", "depths=[3,4,23,3]"]`` → dict; raises ValueError on bad syntax.

    Values are read by the spec loader's rules: a value no spec may hold (``.nan``, ``.inf``,
    an integer beyond 2**62, a bad tag such as ``!!int abc``) raises ``SpecError`` located at
    ``origin`` (the spec file) with spec path ``overrides.KEY``.
    """
    from .loader import parse_value

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = parse_value(raw, origin, f"overrides.{key.strip()}") if raw.strip() else ""
        except ValueError:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}") from None
        overrides[key.strip()] = value
    return overrides


def _print_schema() -> int:
    from .schema import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return Exit.OK


def _print_library() -> int:
    """``rescompile list``: the library's specs with their parameter counts and references."""
    from .api import load_spec
    from .errors import SpecError
    from .library import library_names
    from .summary import summarize

    rows = [("name", "params", "with BN stats", "reference")]
    for name in library_names():
        try:
            spec = load_spec(name)
        except SpecError as exc:  # a broken library file is reported, the rest still listed
            print(str(exc), file=sys.stderr)
            continue
        info = summarize(spec)
        reference = spec.model.reference
        shown = reference if len(reference) <= 60 else reference[:57] + "..."
        rows.append((name, f"{info.trainable_params:,}", f"{info.total_params:,}", shown))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")
    return Exit.OK


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = make_parser().parse_args(argv)
    if args.spec == "schema" and not Path("schema").is_file():
        return _print_schema()
    if args.spec == "list" and not Path("list").is_file():
        return _print_library()
    from . import api
    from .errors import SpecError
    from .library import find_spec, present

    if not present(find_spec(args.spec)):  # a usage error, not an invalid spec
        print(f"rescompile: error: {api.missing_spec_message(args.spec)}", file=sys.stderr)
        return Exit.USAGE

    try:
        overrides = parse_overrides(args.set, args.spec)
    except ValueError as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    except SpecError as exc:  # a value no spec may hold: reported after usage problems
        overrides, bad_override = {}, exc
    else:
        bad_override = None
    problem = _usage_problem(args)
    if problem:
        print(f"rescompile: error: {problem}", file=sys.stderr)
        return Exit.USAGE
    try:
        if bad_override is not None:
            raise bad_override
        spec = api.load_spec(args.spec, overrides)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return Exit.SPEC_ERROR
    for warning in spec.warnings:
        print(str(warning), file=sys.stderr)
    if args.check:
        try:  # every backend must be able to emit it (emitting imports no framework)
            api.check_backends(spec)
        except SpecError as exc:
            print(str(exc), file=sys.stderr)
            return Exit.SPEC_ERROR
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
    if args.verify:
        return _verify(spec, args.device, args.seed, args.format)
    if args.convert:
        return _convert(spec, args.convert, args.to, args.out)
    options = {"optimize": args.optimize} if args.optimize else {}
    return _compile(spec, args.backend, args.out or "generated", options)


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot work here, judged without importing a framework, or None."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        return f"--device takes cpu, cuda or cuda:N, got {device!r}"
    if device.startswith("cuda") and not any(
        os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
    ):
        return f"--device {device}: this machine has no GPU driver (no /dev/nvidiactl or /dev/kfd)"
    return None


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of options, or None."""
    if not any((args.check, args.summary, args.graph, args.backend, args.verify, args.convert)):
        return "give --backend, --check, --summary, --graph, --verify or --convert"
    if args.backend and (args.check or args.summary or args.graph or args.verify or args.convert):
        return "--backend cannot be combined with --check/--summary/--graph/--verify/--convert"
    if args.convert and not (args.to and args.out):
        return "--convert needs --to torch|keras and -o OUTPUT_FILE"
    if args.to and not args.convert:
        return "--to only goes with --convert"
    if args.optimize and not args.backend:
        return "--optimize only goes with --backend"
    if args.convert and args.out == "-":
        return "--convert writes a binary file: give -o FILE, not -"
    if args.convert:  # cheap checks first: the frameworks take seconds to import
        from .convert import checkpoint_problem

        why = checkpoint_problem(args.convert)
        if why is not None:
            return f"--convert {args.convert}: {why}"
    if args.verify:
        why = device_problem(args.device)
        if why is not None:
            return why
    out = Path(args.out) if args.backend and args.out and args.out != "-" else None
    if out is not None and out.suffix in (".py", ".h5", ".keras") and not out.is_dir():
        return f"-o takes a directory (the file is named after the spec) or -, got {args.out!r}"
    return None


def _verify(spec: Any, device: str, seed: int, fmt: str) -> int:
    from .registry import BackendError
    from .verifier import VerifyError, verify

    try:
        report = verify(spec, device=device, seed=seed)
    except (VerifyError, BackendError) as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    except ImportError as exc:
        print(f"rescompile: error: --verify needs torch and keras ({exc})", file=sys.stderr)
        return Exit.USAGE
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(report.to_text())
    return Exit.OK if report.ok else Exit.SPEC_ERROR


def _convert(spec: Any, checkpoint: str, to: str, out: str) -> int:
    from .convert import ConvertError, convert_weights
    from .registry import BackendError

    try:
        target = convert_weights(spec, checkpoint, to, out)
    except ConvertError as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.SPEC_ERROR
    except (ValueError, BackendError) as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    except ImportError as exc:
        print(f"rescompile: error: --convert needs torch and keras ({exc})", file=sys.stderr)
        return Exit.USAGE
    except OSError as exc:
        print(f"rescompile: error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return Exit.USAGE
    print(target)
    return Exit.OK


def _compile(spec: Any, backend: str, out: str, options: dict[str, Any]) -> int:
    from . import api
    from .errors import SpecError
    from .registry import BackendError

    try:
        source = api.emit(spec, backend, **options)
    except BackendError as exc:
        print(f"rescompile: error: {exc}", file=sys.stderr)
        return Exit.USAGE
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return Exit.SPEC_ERROR
    if out == "-":
        sys.stdout.write(source)
        return Exit.OK
    target = Path(out) / api.output_name(spec.name, backend, **options)
    try:
        api.write_atomic(target, source)
    except OSError as exc:
        print(f"rescompile: error: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return Exit.USAGE
    print(target)
    return Exit.OK


def main() -> None:
    """Console-script entry point. A reader that stops early (``| head``) ends the run
    quietly with 141, as a process killed by SIGPIPE would."""
    try:
        code = run()
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # Python flushes stdout again at exit
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    raise SystemExit(code)


if __name__ == "__main__":
    main()
