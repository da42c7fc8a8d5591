"""[3 evaluate] Metrics: per-row and per-document records -> every run-level number of metrics.json.

Input:  :class:`MetricInputs` (per-row scores and NLLs, per-document attack features, per-question
        correctness, the reference utility and the floor).
Output: the metrics dict (:func:`run_metrics`), computed by walking the registry :data:`METRICS` in order.

A metric is one decorated function: ``@register_metric(name, direction, description)`` above
``fn(inputs, done) -> value``, where ``done`` holds the metrics registered before it (``final_score``
reads ``task_aggregate``). Its direction ("max", "min", or None for recorded-only values) is written down
here once; the sweep's objectives and the Pareto report read it from the registry. Nothing else lists
metrics: a new one appears in metrics.json, results.parquet and the report's tables by being registered.

The arithmetic is the scoring protocol of SemEval-2025 Task 4 (LUME), docs/protocol.md section 2, in
:mod:`lume_ray.evaluate.protocol` (task scores and aggregates) and :mod:`lume_ray.evaluate.mia` (the attacks);
the utility floor is :class:`lume_ray.evaluate.protocol.Floor` (``EvalConfig.utility_floor`` holds one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lume_ray.data import KINDS, SPLITS, TASKS
from lume_ray.evaluate.mia import mia_score, roc_auc
from lume_ray.evaluate.protocol import (
    TASK_SCORE_NAMES,
    Floor,
    final_score,
    forget_efficacy,
    mean_of,
    retain_score,
    task_aggregate,
    task_score_name,
)
from lume_ray.registry import Registry

Direction = Literal["max", "min"]


@dataclass
class MetricInputs:
    """What every metric is computed from. ``rows``: split, task, kind, score, nll. ``members`` /
    ``nonmembers``: nll, zlib, mink, minkpp per document. ``utility_correct``: one bool per question.
    ``notes``: metrics append a line here when they come out null, saying why."""

    rows: Sequence[Mapping[str, Any]]
    members: Sequence[Mapping[str, Any]] = ()
    nonmembers: Sequence[Mapping[str, Any]] = ()
    utility_correct: Sequence[bool] = ()
    reference_utility: float | None = None
    floor: Floor | None = None
    notes: list[str] = field(default_factory=list)


MetricFn = Callable[[MetricInputs, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Metric:
    """A run-level number in metrics.json. ``direction`` is None for values recorded, never optimized."""

    name: str
    direction: Direction | None
    description: str
    fn: MetricFn
    headline: bool = False  # shown in summaries and the report's leaderboard


METRICS: Registry[Metric] = Registry("metric", sort=True)


def register_metric(name: str, direction: Direction | None, description: str, *,
                    headline: bool = False) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(inputs, done)`` as metric ``name``; metrics are computed in registration order."""
    if direction not in ("max", "min", None):
        raise ValueError(f"metric {name!r}: direction must be 'max', 'min' or None, got {direction!r}")

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.add(name, Metric(name, direction, description, fn, headline))
        return fn

    return deco


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; unknown -> ValueError naming the valid ones."""
    return METRICS.get(name)


def objective_names() -> list[str]:
    """Metrics that can be optimized (those with a direction)."""
    return sorted(n for n, m in METRICS.items() if m.direction)


def direction(name: str) -> Direction:
    """The optimization direction of an objective; raises for unknown or record-only metrics."""
    metric = get_metric(name)
    if metric.direction is None:
        raise ValueError(f"metric {name!r} is recorded only, not an objective (valid: {', '.join(objective_names())})")
    return metric.direction


# ---------------------------------------------------------------------------------------------
# The registry, in computation order. Each function reads the inputs and the metrics computed before it.


def _register_task_score(name: str, split: str, task: str, kind: str) -> None:
    what = "ROUGE-L recall" if kind == "sc" else "exact match"

    @register_metric(name, "min" if split == "forget" else "max", f"mean {what} on {split} {task} {kind} rows")
    def _task_score(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
        return mean_of(float(r["score"]) for r in inp.rows
                     if r["split"] == split and r["task"] == task and r["kind"] == kind)


# The twelve LUME task scores: mean ROUGE-L recall (sc) or exact match (qa) per split x task x kind.
for _split in SPLITS:
    for _task in TASKS:
        for _kind in KINDS:
            _register_task_score(task_score_name(_split, _task, _kind), _split, _task, _kind)


def _scores(done: Mapping[str, Any]) -> dict[str, float | None]:
    return {n: done.get(n) for n in TASK_SCORE_NAMES}


@register_metric("task_aggregate", "max", "harmonic mean of the 6 retain scores and the 6 inverted forget scores",
                 headline=True)
def _task_aggregate(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    missing = [n for n in TASK_SCORE_NAMES if done.get(n) is None]
    if missing:
        inp.notes.append(f"no rows for {', '.join(missing)}: null, left out of task_aggregate, "
                         "forget_efficacy and retain_score")
    return task_aggregate(_scores(done))


@register_metric("forget_efficacy", "max", "1 - mean of the 6 forget task scores", headline=True)
def _forget_efficacy(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return forget_efficacy(_scores(done))


@register_metric("retain_score", "max", "mean of the 6 retain task scores", headline=True)
def _retain_score(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return retain_score(_scores(done))


@register_metric("forget_nll", "max", "mean per-row NLL on forget rows (higher: forgotten)")
def _forget_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return mean_of(float(r["nll"]) for r in inp.rows if r["split"] == "forget")


@register_metric("retain_nll", "min", "mean per-row NLL on retain rows")
def _retain_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return mean_of(float(r["nll"]) for r in inp.rows if r["split"] == "retain")


@register_metric("member_nll", None, "mean token NLL of the member documents (the loss attack's input)")
def _member_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return mean_of(float(d["nll"]) for d in inp.members)


@register_metric("nonmember_nll", None, "mean token NLL of the non-member documents")
def _nonmember_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return mean_of(float(d["nll"]) for d in inp.nonmembers)


MIA_ATTACKS = {"": "nll", "zlib_": "zlib", "mink_": "mink", "minkpp_": "minkpp"}
"""metrics.json prefix (mia_{prefix}auc) -> document feature. nll and zlib are losses (score = -x)."""
_MIA_WHAT = {"nll": "loss", "zlib": "NLL / zlib entropy", "mink": "min-k% token log-prob",
             "minkpp": "min-k%++ normalized token log-prob"}


def _attack_auc(inp: MetricInputs, feature: str) -> float | None:
    sign = -1.0 if feature in ("nll", "zlib") else 1.0
    mem = [sign * float(d[feature]) for d in inp.members if not math.isnan(float(d[feature]))]
    non = [sign * float(d[feature]) for d in inp.nonmembers if not math.isnan(float(d[feature]))]
    return roc_auc(mem, non) if mem and non else None


def _register_attack(prefix: str, feature: str) -> None:
    @register_metric(f"mia_{prefix}auc", None,
                     f"ROC-AUC of the {_MIA_WHAT[feature]} attack (members = 1); 0.5 is chance")
    def _auc(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
        if feature == "nll" and (not inp.members or not inp.nonmembers):
            inp.notes.append(f"mia_*: null: {'no member' if not inp.members else 'no non-member'} documents "
                             "(give --member/--nonmember files, or mia/member.jsonl + mia/nonmember.jsonl "
                             "beside the data)")
        return _attack_auc(inp, feature)

    @register_metric(f"mia_{prefix}score", "max", f"1 - |mia_{prefix}auc - 0.5| * 2 (1: attack no better than "
                     "chance)", headline=feature == "nll")
    def _score(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
        auc_value = done.get(f"mia_{prefix}auc")
        return None if auc_value is None else mia_score(auc_value)


for _prefix, _feature in MIA_ATTACKS.items():
    _register_attack(_prefix, _feature)


@register_metric("utility", "max", "multiple-choice accuracy (MMLU or the embedded utility set)", headline=True)
def _utility(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    if not inp.utility_correct:
        inp.notes.append("utility: null: no multiple-choice set (give --utility FILE|mmlu, or utility.jsonl "
                         "beside the data)")
    return mean_of(float(c) for c in inp.utility_correct)


@register_metric("final_score", "max", "mean of task_aggregate, mia_score and utility", headline=True)
def _final_score(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    value = final_score(done.get("task_aggregate"), done.get("mia_score"), done.get("utility"))
    if value is None:
        inp.notes.append("final_score: null: needs task_aggregate, mia_score and utility")
    return value


@register_metric("utility_floor_met", None, "utility passes the floor (Floor.met); null without a reference for "
                 "a relative floor")
def _utility_floor_met(inp: MetricInputs, done: Mapping[str, Any]) -> bool | None:

    return (inp.floor or Floor()).met(done.get("utility"), inp.reference_utility)


def run_metrics(inputs: MetricInputs) -> dict[str, Any]:
    """Every registered metric, in registration order, plus the context metrics.json records (reference
    utility, the floor, counts, notes)."""
    done: dict[str, Any] = {}
    for name, metric in METRICS.items():
        done[name] = metric.fn(inputs, done)

    floor = inputs.floor or Floor()
    rows = inputs.rows
    out: dict[str, Any] = dict(done)
    out["reference_utility"] = inputs.reference_utility
    out["utility_floor"] = {"relative": floor.relative, "absolute": floor.absolute}
    out["counts"] = {
        "rows": {split: sum(1 for r in rows if r["split"] == split) for split in SPLITS},
        "task_rows": {n: sum(1 for r in rows if task_score_name(r["split"], r["task"], r["kind"]) == n)
                      for n in TASK_SCORE_NAMES},
        "members": len(inputs.members),
        "nonmembers": len(inputs.nonmembers),
        "utility_questions": len(inputs.utility_correct),
    }
    out["notes"] = list(inputs.notes)
    return out
