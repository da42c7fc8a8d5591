"""`lume-ray report RUN_A RUN_B --out DIR`: two hand-made runs compared, hypervolumes computed by hand.

Run A is tests/test_report.py's run. Run B is A without trial gd-1 and with one worse retain NLL (ga-1@30,
an infeasible point: it moves the shared hypervolume reference, never a front).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lume_ray import cli, report
from tests.helpers import make_run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    a = make_run_dir(root, "run_a")
    b = root / "run_b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "trials" / "gd-1")
    res = pd.read_parquet(b / "results.parquet")
    res = res[res["trial_id"] != "gd-1"].copy()
    res.loc[(res["trial_id"] == "ga-1") & (res["step"] == 30), "retain_nll"] = 1.5
    res.to_parquet(b / "results.parquet")
    study = json.loads((b / "study.json").read_text())
    (b / "study.json").write_text(json.dumps({**study, "name": "tiny-study-b"}))
    return a, b


def _diff(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "differences.csv").set_index(["scope", "run"])


def test_two_dimensional_hypervolumes_by_hand(runs, tmp_path):
    """forget_efficacy x retain_score, both maximized scores in [0, 1]: the shared reference is (0, 0).
    gd's feasible front in A: (0.40, 0.85), (0.70, 0.70), (0.85, 0.55) -> staircase
    0.40 x 0.85 + 0.30 x 0.70 + 0.15 x 0.55 = 0.6325. In B (gd-2 only): (0.40, 0.85), (0.65, 0.60),
    (0.80, 0.50) -> 0.34 + 0.25 x 0.60 + 0.15 x 0.50 = 0.565."""
    a, b = runs
    out = report.compare_runs([a, b], tmp_path / "cmp", objectives=["forget_efficacy", "retain_score"])
    diff = _diff(out)
    ra, rb = "A: tiny-study", "B: tiny-study-b"
    assert diff.loc[("gd", ra), "hypervolume"] == pytest.approx(0.6325)
    assert diff.loc[("gd", rb), "hypervolume"] == pytest.approx(0.565)
    assert diff.loc[("gd", rb), "Δ hypervolume vs A"] == pytest.approx(0.565 - 0.6325)
    # Steps spent and trials: gd 2 trials x 30 steps in A, 1 in B; ga unchanged.
    assert (diff.loc[("gd", ra), "steps spent"], diff.loc[("gd", rb), "steps spent"]) == (60, 30)
    assert (diff.loc[("gd", ra), "trials"], diff.loc[("gd", rb), "trials"]) == (2, 1)
    assert diff.loc[("ga", rb), "Δ hypervolume vs A"] == pytest.approx(0.0)
    assert diff.loc[("overall", rb), "Δ steps vs A"] == -30
    # Best points by final_score: gd-1@30 in A; in B gd-2@30 = (0.6154 + 0.70 + 0.32) / 3 = 0.545 beats gd-2@20 0.533.
    assert diff.loc[("gd", ra), "best point"].startswith("gd gd-1 step 30: 0.850 / 0.550 / 0.340")
    assert diff.loc[("gd", rb), "best point"].startswith("gd gd-2 step 30: 0.800 / 0.500 / 0.320")
    md = (out / "report.md").read_text()
    assert "gd: B: tiny-study-b reaches hypervolume 0.5650 vs 0.6325 in A: tiny-study (-11%), spending 30 vs 60 " \
           "unlearning steps in 1 vs 2 trials." in md
    assert md.index("## The answer") < md.index("figures/compare_fronts.png") < md.index("## Differences")
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["compare_fronts.png", "compare_hypervolume.png"]
    html_text = (out / "report.html").read_text()
    assert html_text.count("<svg") == 2 and "<script" not in html_text
    hist = pd.read_csv(out / "hypervolume.csv")
    last = hist[hist["scope"] == "gd"].groupby("run")["hypervolume"].last()
    assert last.to_dict() == pytest.approx({"A: tiny-study": 0.6325, "B: tiny-study-b": 0.565})


def test_one_shared_reference(runs, tmp_path):
    """retain_nll (minimized, not in [0, 1]: 1.1 at ga-1@30 in A) takes the worst value of BOTH runs, 1.5 (B).
    gd's front in A in (forget_efficacy max, retain_nll = 1.2 - retain_score min): (0.40, 0.35), (0.70, 0.50),
    (0.85, 0.65) -> against (0, 1.5): 0.40 x 1.15 + 0.30 x 1.00 + 0.15 x 0.85 = 0.8875 (against A's own 1.1 it
    would be 0.5475)."""
    a, b = runs
    out = report.compare_runs([a, b], tmp_path / "ref", objectives=["forget_efficacy", "retain_nll"])
    diff = _diff(out)
    assert diff.loc[("gd", "A: tiny-study"), "hypervolume"] == pytest.approx(0.8875)
    alone = report.analyze(report.load_run(a), ["forget_efficacy", "retain_nll"])
    assert alone.reference == pytest.approx([0.0, 1.1]) and alone.hv["gd"] == pytest.approx(0.5475)
    assert "forget_efficacy=0, retain_nll=1.5" in (out / "report.md").read_text()


def test_cli_compare(runs, tmp_path, capsys):
    a, b = runs
    assert cli.main(["report", str(a), str(b), "--out", str(tmp_path / "c")]) == 0
    assert "comparison:" in capsys.readouterr().out
    assert (tmp_path / "c" / "report.html").is_file() and (tmp_path / "c" / "differences.csv").is_file()
    assert cli.main(["report", str(a), str(b)]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert not (a / "report").exists() and not (b / "report").exists()  # nothing written into the runs
    # An objective one run lacks: one line naming that run.
    res = pd.read_parquet(b / "results.parquet").drop(columns=["utility"])
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    res.to_parquet(broken / "results.parquet")
    assert cli.main(["report", str(a), str(broken), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "objective 'utility' is not a column" in err
    assert not (tmp_path / "d").exists()
