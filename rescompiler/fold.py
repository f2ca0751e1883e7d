"""Which BatchNorms fold into which conv for inference-optimised emission (framework-free).

In eval mode a BatchNorm is a per-channel affine map ``y = x * s + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``. It folds into a
conv (or linear) exactly in two cases:

- **after**: conv → BN, the conv's output read by the BN only. ``W'[o] = W[o] * s[o]``,
  ``b'[o] = b[o] * s[o] + t[o]``. Always exact (padding does not matter).
- **before**: BN → conv, the BN's output read by the conv only, and the conv does not pad.
  ``W'[o, i] = W[o, i] * s[i]``, ``b'[o] = b[o] + sum_i,k W[o, i, k] * t[i]``. With zero
  padding this is wrong at the borders (the conv pads ``x * s + t`` with zeros, not ``x``), so
  a padded conv is never a target.

A BN followed by a nonlinearity (pre-activation: BN → ReLU → conv) cannot fold into the next
conv; one after an add or a concat has no conv to fold into. Those stay BatchNorms.

Decisions are taken per body of the spec (a block template's, a group's, the model's), from its
syntax, so the code emitted once per template is right for every instance and for any params:
both nodes unconditional (no ``when``, used in every instance) or built together (the same
``when``, as EfficientNet's expand conv and its BN), in the same body, and the value between
them read by nobody else. ``fold_report`` lists, per BN of the expanded graph, where it
went or why it stayed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from .attrs import BUILTIN_DEFAULTS
from .codegen import liveness, local_name, named_outputs, when_source
from .errors import format_path
from .schema import BlockCall, Group, Reuse, SpecModel

TARGETS = ("conv", "linear")
NONLINEAR = {
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "gelu",
    "silu",
    "hardswish",
    "hardsigmoid",
    "softmax",
    "maxpool",
    "mul",
}
Side = Literal["after", "before"]


@dataclass(frozen=True)
class Fold:
    """One BN folded into a conv or linear node of the same body."""

    bn: str  # spec path of the BN node, e.g. ``blocks.bottleneck.body[1]``
    target: str  # spec path of the conv/linear node that absorbs it
    side: Side  # the BN comes after the target (its output) or before it (its input)
    eps: float
    bn_local: str  # local names in the body: torch attribute names, group positions
    target_local: str


@dataclass(frozen=True)
class Kept:
    """A BN that stays a BatchNorm, and why."""

    bn: str
    reason: str
    label: str = ""  # the BN by name: ``preact_bn of block 'preact_bottleneck'``

    def __str__(self) -> str:
        return f"{self.label or self.bn} ({self.reason})"


@dataclass
class FoldPlan:
    """Every BN node of a spec model: folded (by spec path) or kept, with the reason."""

    folds: dict[str, Fold] = field(default_factory=dict)
    kept: dict[str, Kept] = field(default_factory=dict)

    @cached_property
    def targets(self) -> dict[str, Fold]:
        """The folds by the spec path of the conv/linear that absorbs them."""
        return {fold.target: fold for fold in self.folds.values()}


@dataclass(frozen=True)
class FoldReportRow:
    """What happened to one BN of the expanded graph."""

    bn: str  # IR node id (torch module path)
    folded_into: str | None  # IR node id of the conv/linear, None when kept
    side: Side | None
    reason: str  # why it was kept; empty when folded

    def __str__(self) -> str:
        if self.folded_into is None:
            return f"{self.bn}: kept ({self.reason})"
        return f"{self.bn}: folded into {self.folded_into} ({self.side})"


@dataclass
class _Entry:
    node: Any
    local: str
    inputs: list[str]
    always: bool = True  # built in every block (False: conditional, or used only in some)
    reached: bool = True  # used wherever it is built (its ``when`` may leave it out)


def _op(node: Any) -> str | None:
    """The op of a primitive node; None for block calls and groups."""
    return None if isinstance(node, BlockCall | Group | Reuse) else node.op


def _zero_padding(node: Any) -> bool:
    """The conv pads nothing, whatever the params (literal 0 or ``valid``)."""
    if node.op == "linear":
        return True
    value = node.padding
    if value == "valid":
        return True
    values = value if isinstance(value, list) else [value]
    return all(v == 0 and v is not False for v in values)


def _eps(model: SpecModel, node: Any) -> Any:
    value = node.eps
    if value is None and "bn" in model.defaults:
        value = model.defaults["bn"].eps
    return BUILTIN_DEFAULTS["bn"]["eps"] if value is None else value


def _describe(entry: _Entry | None, name: str) -> str:
    if entry is None:
        return f"the input {name!r}"
    node = entry.node
    if isinstance(node, BlockCall):
        return f"block {entry.local!r}"
    if isinstance(node, Group):
        return f"group {entry.local!r}"
    if isinstance(node, Reuse):
        return f"{entry.local!r} (a reuse of {node.reuse!r})"
    return f"{node.op} {entry.local!r}"


def _plan_body(
    model: SpecModel,
    body: list[Any],
    path: tuple[str | int, ...],
    visible: set[str],
    first: str,
    output: str | list[str] | None,
    where: str,
    plan: FoldPlan,
) -> None:
    in_group = where.startswith("group")
    entries: list[_Entry] = []
    taken = set(visible)
    previous = first
    for index, node in enumerate(body):
        local = local_name(node, index, taken, in_group)
        taken.add(local)
        if node.inputs is None:
            names = [previous]
        else:
            names = [node.inputs] if isinstance(node.inputs, str) else list(node.inputs)
        entries.append(_Entry(node, local, names))
        previous = local
        if isinstance(node, Group):
            inside = f"group {node.group!r} of {where}"
            _plan_body(
                model, node.body, (*path, index, "body"), set(), names[0], None, inside, plan
            )
    reach = (  # groups are sequential: their nodes are used wherever the group is
        [True] * len(entries)
        if in_group
        else liveness(
            (
                (
                    e.local,
                    [*e.inputs, e.node.reuse] if isinstance(e.node, Reuse) else e.inputs,
                    e.node.otherwise or e.inputs[0],
                    when_source(e.node),
                )
                for e in entries
            ),
            output or entries[-1].local,  # a model's named outputs: a list
        )
    )
    for entry, where_used in zip(entries, reach, strict=True):
        entry.always = entry.node.when is None and where_used is True
        entry.reached = where_used is True
    readers: dict[str, list[int]] = defaultdict(list)
    for index, entry in enumerate(entries):
        for name in entry.inputs:
            readers[name].append(index)
        if entry.node.otherwise is not None:
            readers[entry.node.otherwise].append(index)
    for name in output if isinstance(output, list) else [output or entries[-1].local]:
        readers[name].append(len(entries))  # read by the body's user
    at = {entry.local: k for k, entry in enumerate(entries)}
    spec_path = {k: format_path((*path, k)) for k in range(len(entries))}
    bns = [k for k, e in enumerate(entries) if _op(e.node) == "bn"]
    absorbed: set[int] = set()
    decided: dict[int, Kept | Fold] = {}
    after_reasons: dict[int, str | None] = {}
    shared = {e.node.reuse for e in entries if isinstance(e.node, Reuse)}
    # folds after a conv first (always exact), then before the next conv where exact
    for side in ("after", "before"):
        for k in bns:
            if k in decided and isinstance(decided[k], Fold):
                continue
            entry = entries[k]
            eps = _eps(model, entry.node)
            source = at.get(entry.inputs[0])
            source_entry = entries[source] if source is not None and source < k else None
            if side == "after":
                reason = _after_reason(entry, source_entry, readers)
                target = source
            else:
                reason, target = _before_reason(entry, entries, readers, k)
            if reason is None and entry.local in shared:
                reason = "it is reused: its layer runs on another input too"
            if reason is None and target is not None and entries[target].local in shared:
                reason = f"{_describe(entries[target], '')} is reused on another input"
            if side == "after":
                after_reasons[k] = reason
            if reason is None and not isinstance(eps, int | float):
                reason = "its eps is an expression"
            if reason is None and target in absorbed:
                reason = "its conv already absorbs another BN"
            if reason is None:
                assert target is not None
                absorbed.add(target)
                decided[k] = Fold(
                    spec_path[k],
                    spec_path[target],
                    side,  # type: ignore[arg-type]
                    float(eps),
                    entry.local,
                    entries[target].local,
                )
            elif side == "before":
                after = after_reasons.get(k) or _after_reason(entry, source_entry, readers)
                label = f"{entry.local} of {where}"
                decided[k] = Kept(spec_path[k], f"{after}; {reason}", label)
    for decision in decided.values():
        if isinstance(decision, Fold):
            plan.folds[decision.bn] = decision
        else:
            plan.kept[decision.bn] = decision


def _after_reason(
    entry: _Entry, source: _Entry | None, readers: dict[str, list[int]]
) -> str | None:
    """Why ``entry`` (a BN) cannot fold into the node before it; None when it can."""
    together = _built_together(entry, source)
    if not entry.always and not together:
        return "it is conditional or unused in some blocks"
    what = _describe(source, entry.inputs[0])
    if source is None or _op(source.node) not in TARGETS:
        return f"it follows {what}, not a conv or linear layer"
    if not source.always and not together:
        return f"it follows {what}, which is conditional or unused in some blocks"
    if len(readers[source.local]) != 1:
        return f"the output of {what} is also read elsewhere"
    return None


def _built_together(entry: _Entry, source: _Entry | None) -> bool:
    """A conditional BN and the node before it are built in the same block instances: the
    same ``when`` (a condition over the params), each used wherever it is built."""
    if source is None or not (entry.reached and source.reached):
        return False
    when = when_source(entry.node)
    return isinstance(when, str) and when == when_source(source.node)


def _before_reason(
    entry: _Entry, entries: list[_Entry], readers: dict[str, list[int]], index: int
) -> tuple[str | None, int | None]:
    """Why ``entry`` (a BN) cannot fold into the node after it; (None, target) when it can."""
    if not entry.always:
        return "it is conditional or unused in some blocks", None
    users = readers[entry.local]
    if len(users) != 1:
        return "its output is read by several nodes", None
    if users[0] >= len(entries):
        return "its output leaves the body", None
    user = entries[users[0]]
    op = _op(user.node)
    if op not in TARGETS:
        what = _describe(user, "")
        if op in NONLINEAR:
            return f"it feeds {what}, a nonlinearity: no fold into the next conv", None
        return f"it feeds {what}, not a conv or linear layer", None
    if not user.always or user.inputs != [entry.local]:
        return f"it feeds {op} {user.local!r}, which is conditional or reads other inputs", None
    if not _zero_padding(user.node):
        return (
            f"it feeds {op} {user.local!r}, which zero-pads (or may, with other params): "
            "folding the BN's shift would be wrong at the borders",
            None,
        )
    return None, users[0]


def plan_folds(model: SpecModel) -> FoldPlan:
    """Which BN of each body folds into which conv/linear, and why the others stay."""
    plan = FoldPlan()
    for name, template in model.blocks.items():
        visible = {*template.inputs, "input"}
        _plan_body(
            model,
            template.body,
            ("blocks", name, "body"),
            visible,
            template.inputs[0],
            template.output,
            f"block {name!r}",
            plan,
        )
    named = list(named_outputs(model).values()) or None
    _plan_body(model, model.body, ("body",), {"input"}, "input", named, "the model", plan)
    return plan


def fold_report(spec: Any, plan: FoldPlan | None = None) -> list[FoldReportRow]:
    """Per BN of the expanded graph of ``spec`` (a loaded Spec): folded into which node, or
    kept and why. Checks that the graph agrees with the per-body plan."""
    plan = plan or plan_folds(spec.model)
    graph = spec.graph
    readers: dict[str, list[str]] = defaultdict(list)
    for node in graph.nodes:
        for name in node.inputs:
            readers[name].append(node.id)
    rows = []
    for node in graph.nodes:
        if node.op != "bn" or node.shares is not None:  # a reuse applies the BN it names
            continue
        fold = plan.folds.get(node.spec_path)
        if fold is None:
            kept = plan.kept.get(node.spec_path)
            reason = kept.reason if kept else "not planned"
            rows.append(FoldReportRow(node.id, None, None, reason))
            continue
        if fold.side == "after":
            target = node.inputs[0]
            partners = readers[target]
        else:
            partners = [node.id]
            target = readers[node.id][0] if len(readers[node.id]) == 1 else ""
        target_node = graph.node(target) if target and target != "input" else None
        if (
            target_node is None
            or target_node.spec_path != fold.target
            or partners != [node.id]
            or (fold.side == "before" and target_node.inputs != (node.id,))
        ):
            raise AssertionError(f"fold plan disagrees with the graph at {node.id}")
        rows.append(FoldReportRow(node.id, target, fold.side, ""))
    return rows


__all__ = ["Fold", "FoldPlan", "FoldReportRow", "Kept", "fold_report", "plan_folds"]


def fold_notes(spec: Any, plan: FoldPlan, intro: str) -> str:
    """An inference build's header paragraph: ``intro`` (what the backend does), then how many
    BatchNorms fold with the spec's params and why the others stay."""
    rows = fold_report(spec, plan)
    folded = sum(row.folded_into is not None for row in rows)
    text = f"{intro} With the spec's params {folded} of {len(rows)} BatchNorms are folded."
    if plan.kept:
        text += " Kept as BatchNorm:" + ";".join(f" {kept}" for kept in plan.kept.values()) + "."
    return text
