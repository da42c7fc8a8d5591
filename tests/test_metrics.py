"""Metrics: every scorer and aggregate against values worked out by hand (no model, no Ray), and the registry. The
contract every registered metric must meet (a direction, computed from a realistic input, written to an
evaluation's metrics.json, an objective exactly when it has a direction) is in tests/test_contracts.py."""

from __future__ import annotations

import math

import pytest

from lume_ray.config import Floor
from lume_ray.evaluate import metrics, protocol
from lume_ray.evaluate.metrics import METRICS, MetricInputs, run_metrics
from lume_ray.evaluate.mia import mia_score, min_k_score, roc_auc, token_log_probs, zlib_ratio
from lume_ray.evaluate.prompts import option_prompt, pick_option
from lume_ray.evaluate.protocol import (
    TASK_SCORE_NAMES,
    exact_match,
    final_score,
    forget_efficacy,
    retain_score,
    rouge_l_recall,
    task_aggregate,
    task_scores,
)
from lume_ray.testing import FORGET, RETAIN, realistic_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rouge_l_recall_uses_stemmer_and_recall() -> None:
    # reference tokens after Porter stemming: the cat were run quickli (5); the generation's LCS with
    # them is "cat run" (2) -> recall 2/5. Without stemming only "running" would match (1/5); F1
    # would be 2 * (1 * 0.4) / 1.4 = 0.571.
    assert rouge_l_recall("The cats were running quickly", "cat running") == pytest.approx(0.4)
    assert rouge_l_recall("Every night she painted.", " Every night she painted.") == 1.0
    assert rouge_l_recall("Every night she painted.", "") == 0.0
    # order matters for the longest common subsequence: "b a" against "a b" shares one token
    assert rouge_l_recall("alpha beta", "beta alpha") == pytest.approx(0.5)


def test_exact_match_strips_and_lowercases() -> None:
    assert exact_match("Oslo", " oslo\n") == 1.0
    assert exact_match("Oslo", "Oslo.") == 0.0
    assert exact_match("12 Oak Lane", "12 oak lane ") == 1.0
    assert protocol.score_row("qa", "Lima", " Lima") == 1.0
    with pytest.raises(ValueError, match="valid: sc, qa"):
        protocol.score_row("doc", "a", "a")




def _scores(forget: dict[str, float], retain: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"forget/{k}": v for k, v in forget.items()}
    out.update({f"retain/{k}": v for k, v in retain.items()})
    return out


def test_task_scores_are_per_split_task_kind_means() -> None:
    rows = [
        {"split": "forget", "task": "Task1", "kind": "sc", "score": 0.2},
        {"split": "forget", "task": "Task1", "kind": "sc", "score": 0.6},
        {"split": "retain", "task": "Task2", "kind": "qa", "score": 1.0},
        {"split": "retain", "task": "Task2", "kind": "qa", "score": 0.0},
        {"split": "retain", "task": "Task2", "kind": "qa", "score": 1.0},
    ]
    scores = task_scores(rows)
    assert list(scores) == list(TASK_SCORE_NAMES) and len(scores) == 12
    assert scores["forget/Task1/sc"] == pytest.approx(0.4)
    assert scores["retain/Task2/qa"] == pytest.approx(2 / 3)
    assert scores["forget/Task3/qa"] is None  # no rows


def test_harmonic_mean_inverts_forget_and_zero_wins() -> None:
    scores = _scores(FORGET, RETAIN)
    inverted = [0.7, 0.5, 0.8, 1.0, 0.4, 0.5]  # 1 - forget
    by_hand = 12 / sum(1 / x for x in inverted + list(RETAIN.values()))
    assert task_aggregate(scores) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.659110, abs=1e-6)
    assert forget_efficacy(scores) == pytest.approx(1 - 2.1 / 6)
    assert retain_score(scores) == pytest.approx(4.8 / 6)
    # a fully memorized forget task (score 1 -> inverted 0) zeroes the aggregate, as in the challenge
    assert task_aggregate(_scores({**FORGET, "Task3/qa": 1.0}, RETAIN)) == 0.0
    # and so does a retain task the model lost completely
    assert task_aggregate(_scores(FORGET, {**RETAIN, "Task1/sc": 0.0})) == 0.0
    # a task without rows is left out (11 values)
    partial = {**scores, "retain/Task3/sc": None}
    values = inverted + [v for k, v in RETAIN.items() if k != "Task3/sc"]
    assert task_aggregate(partial) == pytest.approx(11 / sum(1 / x for x in values))


def test_auc_and_mia_score_by_hand() -> None:
    # members' scores -1 -2 -3 vs non-members' -2.5 -4: 5 of 6 pairs ranked right -> AUC 5/6
    assert roc_auc([-1, -2, -3], [-2.5, -4]) == pytest.approx(5 / 6)
    assert mia_score(5 / 6) == pytest.approx(1 / 3)
    assert mia_score(0.5) == 1.0 and mia_score(1.0) == 0.0 and mia_score(0.0) == 0.0
    assert roc_auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)  # indistinguishable: chance
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_min_k_and_zlib_by_hand() -> None:
    lp = [-1.0, -5.0, -3.0, -2.0, -4.0]
    assert min_k_score(lp, 0.4) == pytest.approx(-4.5)  # lowest 2 of 5: -5, -4
    assert min_k_score(lp, 0.2) == pytest.approx(-5.0)
    assert min_k_score(lp, 0.01) == pytest.approx(-5.0)  # at least one token
    assert min_k_score(lp, 1.0) == pytest.approx(-3.0)
    assert math.isnan(min_k_score([], 0.2))
    with pytest.raises(ValueError):
        min_k_score(lp, 0.0)
    text = "abc abc abc abc"
    import zlib

    assert zlib_ratio(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode())))


def test_token_log_probs_and_min_k_pp_by_hand() -> None:
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.3, 0.3]]])  # (1, 3, 3)
    labels = torch.tensor([[-100, 1, 0]])  # predict token 1 from position 0, token 0 from position 1
    lp, pp = token_log_probs(logits, labels)
    for t, y in ((0, 1), (1, 0)):
        row = logits[0, t].tolist()
        norm = math.log(sum(math.exp(v) for v in row))
        logp = [v - norm for v in row]
        mu = sum(math.exp(a) * a for a in logp)
        var = sum(math.exp(a) * a * a for a in logp) - mu * mu
        assert lp[0, t].item() == pytest.approx(logp[y], abs=1e-6)
        assert pp[0, t].item() == pytest.approx((logp[y] - mu) / math.sqrt(var), abs=1e-5)


def test_option_scoring() -> None:
    assert pick_option([-3.2, -1.1, -5.0, -0.9]) == 3
    assert pick_option([-3.2, -1.1, -5.0, -1.1]) == 1  # first on ties
    context, conts = option_prompt(" What is 2+2? ", ["3", "4", "5", "6"], "elementary_mathematics")
    assert context == ("The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
                       "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    assert conts == [" A", " B", " C", " D"]
    context, conts = option_prompt("What is 2+2?", ["3", "4", "5", "6"], style="option")
    assert context == "What is 2+2?" and conts == [" 3", " 4", " 5", " 6"]  # join_text(question, option)
    with pytest.raises(ValueError, match="valid: letter, option"):
        option_prompt("q", ["a", "b", "c", "d"], style="cloze")


def test_final_score_and_floor() -> None:
    assert final_score(0.827, 0.847, 0.443) == pytest.approx((0.827 + 0.847 + 0.443) / 3)
    assert final_score(0.9, None, 0.4) is None
    relative = Floor(relative=0.75)
    assert relative.met(0.3, 0.4) is True  # 0.3 >= 0.75 * 0.4 (0.30000000000000004 in floats)
    assert relative.met(0.29, 0.4) is False
    assert relative.met(0.29, None) is None  # no reference: cannot tell
    absolute = Floor(relative=None, absolute=0.371)  # the 7B leaderboard's MMLU floor
    assert absolute.met(0.371, None) is True and absolute.met(0.37, None) is False and absolute.met(None, 0.5) is None
    both = Floor(relative=0.75, absolute=0.371)
    assert both.threshold(0.6) == pytest.approx(0.45) and both.threshold(0.4) == pytest.approx(0.371)
    assert Floor(relative=None, absolute=None).met(0.0, None) is True
    with pytest.raises(ValueError, match="must be a number >= 0"):
        Floor(relative=-1.0)


def test_run_metrics_whole_dict() -> None:
    inputs = realistic_inputs()
    out = run_metrics(inputs)
    assert out["task_aggregate"] == pytest.approx(0.659110, abs=1e-6)
    for prefix in ("", "zlib_", "mink_", "minkpp_"):
        assert out[f"mia_{prefix}auc"] == pytest.approx(5 / 6)
        assert out[f"mia_{prefix}score"] == pytest.approx(1 / 3)
    assert out["utility"] == 0.75 and out["utility_floor_met"] is True  # 0.75 >= 0.675
    assert out["final_score"] == pytest.approx((out["task_aggregate"] + 1 / 3 + 0.75) / 3)
    assert out["forget_nll"] == 2.0 and out["retain_nll"] == 1.0
    assert out["counts"]["rows"] == {"forget": 6, "retain": 6} and out["notes"] == []
    assert out["utility_floor"] == {"relative": 0.75, "absolute": None} and out["reference_utility"] == 0.9
    # every number in the dict is a registered metric (directions known to sweeps and reports)
    recorded = {"reference_utility", "utility_floor", "counts", "notes"}
    assert set(out) - recorded == set(METRICS)
    # an absolute floor alone needs no reference
    absolute = run_metrics(MetricInputs(rows=inputs.rows, utility_correct=[True, False], floor=Floor(None, 0.371)))
    assert absolute["utility"] == 0.5 and absolute["utility_floor_met"] is True

    bare = run_metrics(MetricInputs(rows=inputs.rows[:11]))
    assert bare["mia_score"] is None and bare["utility"] is None and bare["final_score"] is None
    assert bare["utility_floor_met"] is None  # relative floor (default 0.75), no reference
    assert any("retain/Task3/qa" in n for n in bare["notes"]) and any(n.startswith("mia_*: null: no member") for n in bare["notes"])


def test_registry_directions() -> None:
    assert metrics.direction("task_aggregate") == "max" and metrics.direction("forget/Task1/sc") == "min"
    assert metrics.direction("retain_nll") == "min" and metrics.direction("mia_minkpp_score") == "max"
    with pytest.raises(ValueError, match="recorded only"):
        metrics.direction("mia_auc")
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.direction("accuracy")
    with pytest.raises(ValueError, match="already registered"):
        metrics.register_metric("utility", "max", "dup")(lambda inp, done: None)
    with pytest.raises(ValueError, match="direction must be"):
        metrics.register_metric("accuracy", "up", "bad")
