"""[3 evaluate] Metrics: per-row and per-document records -> every run-level number of metrics.json.

Input:  :class:`MetricInputs` (per-row scores and NLLs, per-document attack features, per-question
        correctness, the reference utility and the floor).
Output: the metrics dict (:func:`run_metrics`), computed by walking the registry :data:`METRICS` in order.

A metric is one decorated function: ``@register_metric(name, direction, description)`` above
``fn(inputs, done) -> value``, where ``done`` holds the metrics registered before it (``final_score``
reads ``task_aggregate``). Its direction ("max", "min", or None for recorded-only values) is written down
here once; the sweep's objectives and the Pareto report read it from the registry. Nothing else lists
metrics: a new one appears in metrics.json, results.parquet and the report's tables by being registered.

The scoring protocol is SemEval-2025 Task 4 (LUME), DESIGN.md section 3.
"""

from __future__ import annotations

import math
import statistics
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lume_ray.data import KINDS, SPLITS, TASKS, Choice

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


METRICS: dict[str, Metric] = {}


def register_metric(name: str, direction: Direction | None, description: str, *,
                    headline: bool = False) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(inputs, done)`` as metric ``name``; metrics are computed in registration order."""
    if direction not in ("max", "min", None):
        raise ValueError(f"metric {name!r}: direction must be 'max', 'min' or None, got {direction!r}")

    def deco(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, direction, description, fn, headline)
        return fn

    return deco


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r} (valid: {', '.join(sorted(METRICS))})") from None


def objective_names() -> list[str]:
    """Metrics that can be optimized (those with a direction)."""
    return sorted(n for n, m in METRICS.items() if m.direction)


def direction(name: str) -> Direction:
    """The optimization direction of an objective; raises for unknown or record-only metrics."""
    metric = get_metric(name)
    if metric.direction is None:
        raise ValueError(f"metric {name!r} is recorded only, not an objective (valid: {', '.join(objective_names())})")
    return metric.direction


def task_score_name(split: str, task: str, kind: str) -> str:
    return f"{split}/{task}/{kind}"


TASK_SCORE_NAMES = tuple(task_score_name(s, t, k) for s in SPLITS for t in TASKS for k in KINDS)

RowScorer = Callable[[str, str], float]


# ---------------------------------------------------------------------------------------------
# Per-row scorers (DESIGN.md section 3, steps 2 and 3).

_ROUGE = None


def rouge_l_recall(reference: str, generation: str) -> float:
    """ROUGE-L recall of ``generation`` against ``reference`` (rouge-score, Porter stemmer), as LUME scores sc rows."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_ROUGE.score(target=reference, prediction=generation)["rougeL"].recall)


def exact_match(reference: str, generation: str) -> float:
    """1.0 when the stripped, lower-cased generation equals the answer, as LUME scores qa rows."""
    return float(generation.strip().lower() == reference.strip().lower())


ROW_SCORERS: dict[str, RowScorer] = {"sc": rouge_l_recall, "qa": exact_match}


def score_row(kind: str, reference: str, generation: str) -> float:
    """The LUME per-row score: ROUGE-L recall for ``sc`` rows, exact match for ``qa`` rows."""
    try:
        return ROW_SCORERS[kind](reference, generation)
    except KeyError:
        raise ValueError(f"unknown row kind {kind!r} (valid: {', '.join(ROW_SCORERS)})") from None


# ---------------------------------------------------------------------------------------------
# Aggregates (DESIGN.md section 3, step 4). Inputs are mappings with the keys rows.parquet has.

def _mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def task_scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """The twelve ``{split}/{task}/{kind}`` means of the per-row scores; None where no row exists."""
    groups: dict[str, list[float]] = {name: [] for name in TASK_SCORE_NAMES}
    for r in rows:
        groups[task_score_name(r["split"], r["task"], r["kind"])].append(float(r["score"]))
    return {name: _mean(vals) for name, vals in groups.items()}


def _oriented(scores: Mapping[str, float | None]) -> list[float]:
    """The available task scores, forget ones inverted (1 - x) so that higher is better everywhere."""
    out = []
    for name in TASK_SCORE_NAMES:
        value = scores.get(name)
        if value is not None:
            out.append(1.0 - value if name.startswith("forget/") else value)
    return out


def task_aggregate(scores: Mapping[str, float | None]) -> float | None:
    """Harmonic mean of the 6 retain scores and the 6 inverted forget scores (0 if any is 0).

    ``statistics.harmonic_mean`` as the challenge used. A split x task x kind without rows (None) is
    left out of the mean rather than counted as 0; :func:`run_metrics` notes it in metrics.json.
    """
    values = _oriented(scores)
    return float(statistics.harmonic_mean(values)) if values else None


def forget_efficacy(scores: Mapping[str, float | None]) -> float | None:
    """1 - mean of the available forget task scores."""
    mean = _mean(v for n, v in scores.items() if n.startswith("forget/") and v is not None)
    return None if mean is None else 1.0 - mean


def retain_score(scores: Mapping[str, float | None]) -> float | None:
    """Mean of the available retain task scores."""
    return _mean(v for n, v in scores.items() if n.startswith("retain/") and v is not None)


# ---------------------------------------------------------------------------------------------
# Membership inference (step 6). Every attack turns a document into a score where higher means
# "member"; the AUC labels members 1.


def roc_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC-AUC (scikit-learn ``roc_curve`` + ``auc``) of separating members (label 1) from non-members."""
    from sklearn.metrics import auc, roc_curve

    if not member_scores or not nonmember_scores:
        raise ValueError("roc_auc needs at least one member and one non-member score")
    labels = [1] * len(member_scores) + [0] * len(nonmember_scores)
    fpr, tpr, _ = roc_curve(labels, list(member_scores) + list(nonmember_scores))
    return float(auc(fpr, tpr))


def mia_score(auc_value: float) -> float:
    """LUME's MIA score: ``1 - abs(auc - 0.5) * 2``; 1 when the attack is no better than chance."""
    return 1.0 - abs(auc_value - 0.5) * 2.0


def zlib_entropy(text: str) -> int:
    """Bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021, "Extracting Training Data", sec. 6.1)."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(mean_nll: float, text: str) -> float:
    """Log-perplexity over zlib entropy (Carlini et al. 2021); lower for memorized text."""
    return mean_nll / max(zlib_entropy(text), 1)


def min_k_score(token_scores: Sequence[float], k: float) -> float:
    """Mean of the lowest ``k`` fraction (at least one) of per-token scores.

    Min-K% Prob (Shi et al. 2024, "Detecting Pretraining Data from LLMs", eq. 1) on token log-probs;
    Min-K%++ (Zhang et al. 2024, eq. 3) on the normalized scores of :func:`min_k_pp_token_scores`.
    Higher means "member".
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    if not token_scores:
        return math.nan
    n = max(1, int(len(token_scores) * k))
    lowest = sorted(token_scores)[:n]
    return sum(lowest) / n


def token_log_probs(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-token log p(x_t | x_<t) and its Min-K%++ normalization, each (B, T-1), for next-token labels.

    ``logits`` (B, T, V) and ``labels`` (B, T) as :func:`lume_ray.model.collate` builds them. Min-K%++
    (Zhang et al. 2024, eq. 2): ``(log p(x_t) - mu_t) / sigma_t`` with ``mu_t = E_z[log p(z)]`` and
    ``sigma_t^2 = E_z[log p(z)^2] - mu_t^2`` under the model's own next-token distribution.
    """
    import torch

    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    targets = labels[:, 1:].clamp(min=0)  # (B, T-1); masked positions are dropped by the caller
    token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    probs = log_probs.exp()
    mu = (probs * log_probs).sum(-1)
    sigma = ((probs * log_probs.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
    return token_lp, (token_lp - mu) / sigma


# ---------------------------------------------------------------------------------------------
# Utility (step 7). Three ways to score a four-way question (``EvalConfig.utility_style``):
#   open-instruct  the challenge's MMLU: k-shot prompt, the most likely next token among " A".." D"
#   letter         lm-evaluation-harness' zero-shot mmlu: summed log-likelihood of " A".." D" after the prompt
#   option         the question alone continued by each option's text (the embedded target's utility set)

OPTION_LETTERS = ("A", "B", "C", "D")
UTILITY_STYLES = ("open-instruct", "letter", "option")


def mmlu_subject(subject: str) -> str:
    """open-instruct's ``format_subject`` (Hendrycks' original code): each word of the underscore-separated name
    preceded by a space, so "abstract_algebra" -> " abstract algebra" and the header reads "about  abstract
    algebra." with two spaces."""
    return "".join(" " + word for word in subject.split("_"))


def mmlu_example(choice: Choice, include_answer: bool) -> str:
    """open-instruct's ``format_example``: the question as is, "\nA. ..".."\nD. ..", "\nAnswer:", and for a
    few-shot example " {letter}\n\n"."""
    text = choice.question + "".join(f"\n{letter}. {c}" for letter, c in zip(OPTION_LETTERS, choice.choices, strict=True))
    text += "\nAnswer:"
    return text + f" {OPTION_LETTERS[choice.answer]}\n\n" if include_answer else text


def mmlu_prompt(question: Choice, shots: Sequence[Choice], k: int) -> str:
    """open-instruct's ``gen_prompt(dev_df, subject, k) + format_example(test_df, i, include_answer=False)``: the
    header, the first ``k`` dev examples of the question's subject with their answers, then the question."""
    head = f"The following are multiple choice questions (with answers) about {mmlu_subject(question.subject)}.\n\n"
    return head + "".join(mmlu_example(s, True) for s in shots[:k]) + mmlu_example(question, False)


def option_prompt(question: str, choices: Sequence[str], subject: str = "", style: str = "letter") -> tuple[str, list[str]]:
    """The context and the four continuations whose log-likelihoods are compared (``letter`` and ``option``).

    ``letter``: lm-evaluation-harness' zero-shot ``mmlu`` task (the prompt lists the options, the
    continuations are " A".." D"). ``option``: the question alone, continued by " " + each option's text, i.e.
    ``join_text(question, choice)``: the text the embedded target memorizes its utility questions as
    (:func:`lume_ray.target.training_texts`). ``open-instruct`` is not a log-likelihood comparison: see
    :func:`mmlu_prompt`.
    """
    if style == "letter":
        about = f" about {subject.replace('_', ' ')}" if subject else ""
        head = f"The following are multiple choice questions (with answers){about}.\n\n"
        listed = "".join(f"\n{letter}. {c}" for letter, c in zip(OPTION_LETTERS, choices, strict=True))
        return f"{head}{question.strip()}{listed}\nAnswer:", [f" {letter}" for letter in OPTION_LETTERS]
    if style == "option":
        return question, [f" {c}" for c in choices]
    raise ValueError(f"unknown utility style {style!r} for option_prompt (valid: letter, option)")


def pick_option(loglikelihoods: Sequence[float]) -> int:
    """Index of the most likely option (the first one on ties, as numpy.argmax in lm-eval)."""
    if not loglikelihoods:
        raise ValueError("pick_option needs at least one option")
    return max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))


# ---------------------------------------------------------------------------------------------
# Final score (step 8) and the floor.


def final_score(aggregate: float | None, mia: float | None, utility: float | None) -> float | None:
    """Arithmetic mean of task aggregate, MIA score and utility; None when any of them is missing."""
    parts = (aggregate, mia, utility)
    return None if any(p is None for p in parts) else sum(parts) / 3.0  # type: ignore[misc, arg-type]




@dataclass(frozen=True)
class Floor:
    """The utility floor a point must pass to be feasible (the challenge's award rule), one of or both:
    ``relative`` r: utility >= r x the utility of the model before unlearning (default 0.75);
    ``absolute`` a: utility >= a (the 7B leaderboard excluded MMLU < 0.371, 75% of the target's 0.495).
    The one definition of feasibility: metrics.json's ``utility_floor_met`` and the report both call :meth:`met`."""

    relative: float | None = 0.75
    absolute: float | None = None

    def __post_init__(self) -> None:
        for name in ("relative", "absolute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"utility_floor.{name}={value!r}: must be a number >= 0 (or null)")

    def threshold(self, reference: float | None) -> float | None:
        """The utility a point needs; None when the floor is relative and no reference is known."""
        parts = []
        if self.absolute is not None:
            parts.append(float(self.absolute))
        if self.relative is not None:
            if reference is None or not math.isfinite(reference):
                return None
            parts.append(float(self.relative) * float(reference))
        return max(parts) if parts else 0.0

    def met(self, utility: float | None, reference: float | None) -> bool | None:
        """Whether ``utility`` passes; None when it cannot be told (no utility, or no reference for a relative
        floor). Within a relative 1e-9: 0.75 * 0.4 is 0.30000000000000004, and a point exactly on the floor
        passes it."""
        threshold = self.threshold(reference)
        if utility is None or threshold is None or not math.isfinite(utility):
            return None
        return bool(utility >= threshold - 1e-9 * max(1.0, abs(threshold)))

    def describe(self) -> str:
        parts = ([f"utility >= {self.absolute:g}"] if self.absolute is not None else []) + (
            [f"utility >= {self.relative:g} x base"] if self.relative is not None else [])
        return " and ".join(parts) or "none"


# ---------------------------------------------------------------------------------------------
# The registry, in computation order. Each function reads the inputs and the metrics computed before it.


def _register_task_score(name: str, split: str, task: str, kind: str) -> None:
    what = "ROUGE-L recall" if kind == "sc" else "exact match"

    @register_metric(name, "min" if split == "forget" else "max", f"mean {what} on {split} {task} {kind} rows")
    def _task_score(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
        return _mean(float(r["score"]) for r in inp.rows
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
    return _mean(float(r["nll"]) for r in inp.rows if r["split"] == "forget")


@register_metric("retain_nll", "min", "mean per-row NLL on retain rows")
def _retain_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return _mean(float(r["nll"]) for r in inp.rows if r["split"] == "retain")


@register_metric("member_nll", None, "mean token NLL of the member documents (the loss attack's input)")
def _member_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return _mean(float(d["nll"]) for d in inp.members)


@register_metric("nonmember_nll", None, "mean token NLL of the non-member documents")
def _nonmember_nll(inp: MetricInputs, done: Mapping[str, Any]) -> float | None:
    return _mean(float(d["nll"]) for d in inp.nonmembers)


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
    return _mean(float(c) for c in inp.utility_correct)


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
