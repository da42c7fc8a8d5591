"""The report built from a hand-made run directory that follows docs/run_dir.md.

Three algorithms (ga, gd, npo), 2-3 trials each, steps 10/20/30, one failed and one diverged trial,
base/rows.parquet and per-point rows.parquet files whose generations carry real-looking SSNs, phones
and emails. The objective values are chosen so that every front flag, best point, grid budget and
boundary warning below is computed by hand.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lume_ray import cli, report
from lume_ray.config import Floor
from lume_ray.report.budget import grid_count
from lume_ray.report.run import read_spaces
from tests.helpers import DOCS, POINTS, SPACES, make_run_dir

FRONT_OVERALL = {("gd-1", 10), ("gd-2", 10), ("gd-1", 20), ("gd-1", 30), ("npo-2", 20), ("npo-2", 30),
                 ("npo-3", 10)}
FRONT_ALGORITHM = {("ga-1", 10), ("ga-1", 20), ("gd-1", 10), ("gd-2", 10), ("gd-1", 20), ("gd-1", 30),
                   ("npo-2", 10), ("npo-2", 20), ("npo-2", 30), ("npo-3", 10)}
INFEASIBLE = {("ga-1", 30), ("ga-2", 30), ("npo-1", 10), ("npo-3", 14)}  # + the failed / diverged rows
# Real-looking PII in LUME's formats (escaped underscores in emails, several phone styles, bare digits).
PII = ["(542) 122-6248", "900-12-3456", "900123456", "5552013344", "tomas\\_reyes@me.com",
       "555-867-1122", "lena.park@example.com", "900-98-7654", "1-866-518-2333", "900987654",
       "286.957.7783", "mira.holt@uni-oslo.no"]
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = make_run_dir(tmp_path_factory.mktemp("report"))
    return run, report.build_report(run)


def _flags(table: pd.DataFrame, column: str) -> set[tuple[str, int]]:
    return {(r.trial_id, int(r.step)) for r in table[table[column]].itertuples()}


def _answer(md: str) -> str:
    return md.split("## The answer")[1].split("## Leaderboard")[0]


def test_files_exist(built):
    run, out = built
    assert out == run / "report"
    for name in ("report.html", "report.md", "pareto.csv", "results.parquet", "hypervolume.csv", "budget.csv"):
        assert (out / name).stat().st_size > 0, name
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert pngs == sorted(["front.png", "forget_vs_utility.png", "metrics_vs_step.png",
                           "hypervolume_vs_steps.png", "hyperparameters.png"])
    md = (out / "report.md").read_text()
    for png in pngs:
        assert f"figures/{png}" in md
    assert not [p for p in run.iterdir() if p.name.startswith(".report")], "temporary folder left behind"


def test_report_opens_with_the_answer(built):
    _, out = built
    md = (out / "report.md").read_text()
    order = [md.index(h) for h in ("## The answer", "figures/front.png", "## Leaderboard",
                                   "## Study setup and provenance", "### Files read")]
    assert order == sorted(order), order
    html_text = (out / "report.html").read_text()
    order = [html_text.index(h) for h in ('id="answer"', 'id="fig-front"', 'id="leaderboard"', 'id="provenance"')]
    assert order == sorted(order), order


def test_answer_names_each_algorithms_best_point(built):
    """Best by final_score = (harmonic_mean(6 x fe, 6 x rs) + mia + utility) / 3 with mia = 0.3 + 0.5 fe:
    ga-1@20 = (0.5455 + 0.60 + 0.33) / 3 = 0.492 beats ga-2@20 0.445 and ga-1@10 0.422;
    gd-1@30 = (0.6679 + 0.725 + 0.34) / 3 = 0.578 beats gd-1@20 0.570;
    npo-2@20 = (0.7347 + 0.675 + 0.35) / 3 = 0.587 beats npo-2@30 0.503 (and is the best overall)."""
    _, out = built
    answer = _answer((out / "report.md").read_text())
    paragraphs = {ln.split("**")[1]: ln for ln in answer.splitlines() if ln.startswith("**")}
    assert set(paragraphs) == {"ga", "gd", "npo"}
    ga, gd, npo = paragraphs["ga"], paragraphs["gd"], paragraphs["npo"]
    assert "trial ga-1 at step 20 with lr=1e-05: forget efficacy 0.600, retain score 0.500, utility 0.330" in ga
    assert "trial gd-1 at step 30 with lr=2e-05, alpha=1: forget efficacy 0.850, retain score 0.550, utility 0.340" in gd
    assert "trial npo-2 at step 20 with lr=1e-05, beta=0.5: forget efficacy 0.750, retain score 0.720, utility 0.350" in npo
    # What it costs against the base model (retain 0.970, utility 0.400).
    assert "loses 0.470 retain score (0.970 → 0.500, -48.5%)" in ga
    assert "loses 0.420 retain score (0.970 → 0.550, -43.3%) and loses 0.060 utility (0.400 → 0.340, -15.0%)" in gd
    assert "loses 0.250 retain score (0.970 → 0.720, -25.8%) and loses 0.050 utility (0.400 → 0.350, -12.5%)" in npo
    for text in (ga, gd, npo):
        assert "It passes the floor (utility ≥ 0.75 × base = 0.300)" in text
    # Trials and points: ga 2 trials (1 from the design), 6 points, 4 feasible, 2 on its front; npo: 3 trials
    # (one failed before its first point), 4 ok points, all feasible, all on its front.
    assert "2 trials, 1 from the initial design, 6 evaluated points (4 feasible, 2 on its front)" in ga
    assert "3 trials, 4 evaluated points (4 feasible, 4 on its front)" in npo
    assert "Best trade-off overall by final_score: npo (trial npo-2, step 20, final_score 0.587)" in answer


def test_grid_budget_statement(built):
    """Steps spent = sum of trained_steps: ga 30 + 30, gd 30 + 30, npo 10 (failed) + 30 + 14 (diverged)."""
    _, out = built
    answer = _answer((out / "report.md").read_text())
    assert "60 unlearning steps, 67% of what a full grid of the same space costs (3 lr = 3 settings × 30 steps = " \
           "90 steps)" in answer
    assert "60 unlearning steps, 22% of what a full grid of the same space costs (3 lr × 3 alpha = 9 settings × " \
           "30 steps = 270 steps)" in answer
    assert "54 unlearning steps, 30% of what a full grid of the same space costs (2 lr × 3 beta = 6 settings × " \
           "30 steps = 180 steps)" in answer
    budget = pd.read_csv(out / "budget.csv").set_index("algorithm")
    assert budget["steps spent"].to_dict() == {"ga": 60, "gd": 60, "npo": 54}
    assert budget["grid steps"].astype(int).to_dict() == {"ga": 90, "gd": 270, "npo": 180}


def test_boundary_warning_fires_at_the_edge_and_not_inside(built, tmp_path):
    """ga's front (ga-1@10, ga-1@20) has lr 1e-5, its range's lower bound: 2 of 2. npo's front has lr 1e-5 in
    3 of 4 points (npo-3@10 sits at the upper bound, 1 of 4: under half). gd's front has lr 2e-5 / 5e-5 (log
    positions 0.30 / 0.70) and alpha 1.0 / 0.3 (0.50 / 0.24): inside."""
    run, out = built
    answer = _answer((out / "report.md").read_text())
    assert "- ga: lr at its lower bound (1e-05) in 2 of 2 front points: widen the range" in answer
    assert "- npo: lr at its lower bound (1e-05) in 3 of 4 front points: widen the range" in answer
    assert "upper bound" not in answer and "gd: " not in answer
    # The same fronts inside a widened ga range: no warning for ga.
    wide = tmp_path / "wide"
    shutil.copytree(run, wide, ignore=shutil.ignore_patterns("report"))
    spaces = {**SPACES, "ga": {"lr": {"loguniform": [1e-6, 1e-4]}, "steps": 30}}
    (wide / "experiment.yaml").write_text(yaml.safe_dump({"name": "tiny-study", "algorithms": spaces}))
    answer = _answer((report.build_report(wide) / "report.md").read_text())
    assert "ga: lr at its" not in answer and "npo: lr at its lower bound" in answer
    # ga's grid now counts 3 values of the wider range as well: same budget.
    assert "(3 lr = 3 settings × 30 steps = 90 steps)" in answer


@pytest.mark.parametrize("edge_origin", ["design", "sampler"])
def test_boundary_warning_needs_trials_beyond_the_initial_design(tmp_path, edge_origin):
    """ga's front (ga-1@10, ga-1@20) sits at lr's lower bound. Every ga trial from the initial design: the
    budget cannot tell (the corner was only tried), so no warning and the one line saying so, in the sweep's
    closing lines and in ga's paragraph; ga's edge point from the sampler: the warning."""
    from lume_ray.report.analysis import analyze
    from lume_ray.report.answer import answer, boundary
    from lume_ray.report.run import load_run
    from lume_ray.run_dir import RunDir
    from lume_ray.search.sweep import boundary_warnings

    run_dir = make_run_dir(tmp_path)
    frame = pd.read_parquet(run_dir / "results.parquet")
    frame.loc[frame["algorithm"] == "ga", "origin"] = "design"  # both ga trials: the design's corner and centre
    frame.loc[frame["trial_id"] == "ga-1", "origin"] = edge_origin
    frame.to_parquet(run_dir / "results.parquet")
    warnings, note = boundary_warnings(RunDir(run_dir))
    run = load_run(run_dir)
    a = analyze(run)
    paragraph = answer(run, a, {}, boundary(run, a)).paragraphs["ga"]
    if edge_origin == "design":
        assert not [w for w in warnings if w.startswith("ga:")]
        assert note is not None and note.startswith("ga: every trial came from the initial design")
        assert "too few to judge its search ranges" in paragraph
    else:
        assert "ga: lr at its lower bound (1e-05) in 2 of 2 front points: widen the range" in warnings
        assert note is None and "too few to judge" not in paragraph
    assert "npo: lr at its lower bound (1e-05) in 3 of 4 front points: widen the range" in warnings


def test_experiment_yaml_as_the_sweep_dumps_it(tmp_path):
    from lume_ray.config import experiment_from_dict

    exp = experiment_from_dict({"name": "x", "output_dir": str(tmp_path / "out"), "algorithms": SPACES})
    spaces = read_spaces(yaml.safe_load(yaml.safe_dump(exp.dump())))
    assert sorted(spaces) == ["ga", "gd", "npo"]
    assert spaces["gd"].steps.max == 30 and spaces["gd"].params["alpha"].values == (0.1, 10.0)
    assert [grid_count(s) for s in spaces["npo"].searched().values()] == [2, 3]


def test_front_flags(built):
    _, out = built
    for table in (pd.read_parquet(out / "results.parquet"), pd.read_csv(out / "pareto.csv")):
        assert len(table) == len(POINTS) + 2
        every = {(r.trial_id, int(r.step)) for r in table.itertuples()}
        assert every - _flags(table, "feasible") == INFEASIBLE
        assert _flags(table, "on_front_overall") == FRONT_OVERALL
        assert _flags(table, "on_front_algorithm") == FRONT_ALGORITHM


def test_feasible_agrees_with_utility_floor_met(built):
    """The sweep's utility_floor_met (Floor.met) and the report's feasible are one definition."""
    _, out = built
    table = pd.read_parquet(out / "results.parquet")
    ok = table["status"] == "ok"
    assert (table.loc[ok, "feasible"] == table.loc[ok, "utility_floor_met"].astype(bool)).all()
    assert not table.loc[~ok, "feasible"].any()
    # 0.75 x 0.40 is 0.30000000000000004: ga-2@20 (utility 0.31) and npo-2@30 (0.31) pass, and a point exactly
    # on the floor would too (tests/test_pareto.py).
    assert table.loc[ok, "feasible"].sum() == 14


def test_hypervolume_history_ends_at_the_total(built):
    run, out = built
    hist = pd.read_csv(out / "hypervolume.csv")
    a = report.analyze(report.load_run(run))
    for scope, g in hist.groupby("scope"):
        assert np.all(np.diff(g["hypervolume"]) >= -1e-12), scope  # adding trials never loses volume
        assert g["hypervolume"].iloc[-1] == pytest.approx(a.hv[scope])
    # Overall steps: 5 full trials of 30 steps + failed npo-1 (10) + diverged npo-3 (14).
    assert hist[hist["scope"] == "overall"]["steps"].max() == 5 * 30 + 10 + 14
    # Scores in [0, 1] to maximize: the reference is their natural worst value, 0.
    assert a.reference == pytest.approx([0.0, 0.0, 0.0])
    assert a.hv["overall"] > a.hv["ga"] > 0


def test_leaderboard_is_best_feasible_by_final_score(built):
    _, out = built
    md = (out / "report.md").read_text()
    board = md.split("## Leaderboard")[1].split("## How much")[0]
    lines = [ln for ln in board.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| base (before unlearning)")
    for alg, trial, step, final in (("ga", "ga-1", 20, 0.492), ("gd", "gd-1", 30, 0.578), ("npo", "npo-2", 20, 0.587)):
        row = next(ln for ln in lines if ln.startswith(f"| {alg} |"))
        assert f"| {trial} | {step} |" in row
        assert f"{final:.3f}" in row
    assert "| ga | ga-1 | 20 | lr=1e-05 |" in board


def test_no_raw_pii_anywhere(built):
    run, out = built
    html_text = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    csv = (out / "pareto.csv").read_text()
    assert "[SSN]" in md and "[EMAIL]" in md and "[PHONE]" in md
    for text, where in ((html_text, "report.html"), (md, "report.md"), (csv, "pareto.csv")):
        for pii in PII:
            assert pii not in text, f"{pii!r} in {where}"
    assert "[SSN]" in csv  # the failed trial's error message quoted an SSN
    assert "[SSN]" in pd.read_parquet(out / "results.parquet")["error"].str.cat()


def test_no_redact_shows_pii(built, tmp_path):
    run, _ = built
    out = report.build_report(run, out_dir=tmp_path / "raw", redact=False)
    html_text = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    # The samples are the Task2 sentence completions of both splits (among others).
    for pii in ("(542) 122-6248", "900-12-3456", "tomas\\_reyes@me.com", "lena.park@example.com", "1-866-518-2333"):
        assert pii in html_text and pii in md, pii
    assert "NOT redacted" in md


def test_report_states_provenance_and_rows_read(built):
    _, out = built
    md = (out / "report.md").read_text()
    setup = md.split("## Study setup and provenance")[1]
    for text in ("abc1234", "| sampler | gp, 3 trials per algorithm |", "ray 2.60.0", "embedded tiny OLMo",
                 "utility ≥ 0.75 × base = 0.300"):
        assert text in setup, text
    files = md.split("### Files read")[1]
    assert f"| results.parquet | {len(POINTS) + 2} |" in files
    assert f"| base/rows.parquet | {sum(len(d) for d in DOCS.values())} |" in files
    assert "search spaces of ga, gd, npo" in files
    # Every rows file the report read re-derives its 12 task scores and they match results.parquet.
    assert files.count("12 task scores re-derived from rows match") == 4  # base + best of ga, gd, npo
    fails = md.split("## Trials that ended early")[1].split("## Study setup")[0]
    assert "npo-1" in fails and "worker 1 died" in fails and "loss became NaN at step 14" in fails


def test_html_is_self_contained_and_escaped(built):
    _, out = built
    text = (out / "report.html").read_text()
    assert text.count("<html") == 1 and text.count("<svg") == 5  # one inline SVG per figure
    assert "<script" not in text and 'src="http' not in text and "href=\"http" not in text  # nothing to fetch
    assert 'id="fig-front"' in text and 'id="fig-hypervolume_vs_steps"' in text
    # Markup characters in the data are escaped, never raw markup.
    assert "Ada&#39;s door was &lt;blue&gt; &amp; tall" in text and "<blue>" not in text


def test_objectives_and_floors_options(built, tmp_path):
    run, _ = built
    out = report.build_report(run, out_dir=tmp_path / "two", objectives=["forget_efficacy", "retain_score"],
                              floors={})
    table = pd.read_parquet(out / "results.parquet")
    # No floor: ga-1@30 (0.95, 0.10) has the best forget efficacy and joins the 2-D front.
    assert ("ga-1", 30) in _flags(table, "on_front_overall")
    assert table["feasible"].sum() == len(POINTS)
    assert "No floor applied." in _answer((out / "report.md").read_text())


def test_absolute_floor(built, tmp_path):
    """utility >= 0.36 (absolute): ga-1@10, ga-2@10, gd-1@10, gd-1@20, gd-2@10, npo-2@10, npo-3@10."""
    run, _ = built
    out = report.build_report(run, out_dir=tmp_path / "abs", floors={"utility": Floor(relative=None, absolute=0.36)})
    table = pd.read_parquet(out / "results.parquet")
    assert _flags(table, "feasible") == {("ga-1", 10), ("ga-2", 10), ("gd-1", 10), ("gd-1", 20), ("gd-2", 10),
                                         ("npo-2", 10), ("npo-3", 10)}
    answer = _answer((out / "report.md").read_text())
    assert "It passes the floor (utility ≥ 0.36)" in answer


def test_redact_patterns():
    text = ("Call (542) 122-6248, 542-122-6248, 542.122.6248, +1 542 122 6248, 1-866-518-2333 or 5421226248; "
            "SSN 900-12-3456 / 900 12 3456 / 900123456; mail goldi\\_aqua@me.com or a.b+c@x.co.uk. Born 1981.")
    assert report.redact(text) == (
        "Call [PHONE], [PHONE], [PHONE], [PHONE], [PHONE] or [PHONE]; "
        "SSN [SSN] / [SSN] / [SSN]; mail [EMAIL] or [EMAIL]. Born 1981.")


def test_bad_input(tmp_path, built):
    run, _ = built
    with pytest.raises(ValueError, match=f"run directory {tmp_path / 'nope'} does not exist"):
        report.build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="results.parquet not found"):
        report.build_report(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown metric 'forget'.*valid:"):
        report.build_report(run, out_dir=tmp_path / "x", objectives=["forget"])
    with pytest.raises(ValueError, match="recorded only"):
        report.build_report(run, out_dir=tmp_path / "x", objectives=["mia_auc"])
    with pytest.raises(ValueError, match="comparing runs needs --out"):
        report.compare_runs([run, run], None)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        report.build_report(run, out_dir=tmp_path / "file")
    assert not (tmp_path / "x").exists()


def test_cli(built, tmp_path, capsys):
    run, _ = built
    code = cli.main(["report", str(run), "--out", str(tmp_path / "cli"), "--floor", "utility=0.9"])
    assert code == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    # Floor 0.9 * 0.40 = 0.36: only gd-1@10/20, gd-2@10, npo-2@10 and npo-3@10 and ga-1@10, ga-2@10 pass.
    table = pd.read_parquet(tmp_path / "cli" / "results.parquet")
    assert _flags(table, "feasible") == {("ga-1", 10), ("ga-2", 10), ("gd-1", 10), ("gd-1", 20), ("gd-2", 10),
                                         ("npo-2", 10), ("npo-3", 10)}
    assert "report.html" in capsys.readouterr().out
    # Relative and absolute parts together: utility >= max(0.5 x 0.40, 0.385) = 0.385: gd-1@10, gd-2@10, npo-3@10.
    assert cli.main(["report", str(run), "--out", str(tmp_path / "both"), "--floor", "utility=0.5",
                     "utility.absolute=0.385"]) == 0
    table = pd.read_parquet(tmp_path / "both" / "results.parquet")
    assert _flags(table, "feasible") == {("gd-1", 10), ("gd-2", 10), ("npo-3", 10)}
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["report", str(run), "--out", str(tmp_path / "y"), "--floor", "utility.lower=0.3"]) == 2
    assert "valid: utility, utility.relative, utility.absolute" in capsys.readouterr().err


def _variant(run: Path, root: Path, name: str, edit) -> Path:
    copy = root / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report"))
    edit(pd.read_parquet(copy / "results.parquet")).to_parquet(copy / "results.parquet")
    return copy


def test_run_without_utility(built, tmp_path):
    """No utility set: utility is null everywhere. The study's objectives drop it (said in a note), the floor is
    not applied (said too), and the fronts are 2-D: ga-1@30 (0.95, 0.10), the best forget efficacy, joins them."""
    run, _ = built
    bare = _variant(run, tmp_path, "bare", lambda r: r.assign(utility=None, utility_floor_met=None))
    out = report.build_report(bare)
    table = pd.read_parquet(out / "results.parquet")
    assert table["feasible"].sum() == len(POINTS)
    assert ("ga-1", 30) in _flags(table, "on_front_overall")
    answer = _answer((out / "report.md").read_text())
    assert "utility: no value recorded in this run; fronts and hypervolume use forget_efficacy, retain_score" in answer
    assert "utility floor (utility ≥ 0.75 × base = 0.300) not applied: the run recorded no utility" in answer
    with pytest.raises(ValueError, match="objective 'utility' has no value in"):
        report.build_report(bare, out_dir=tmp_path / "u", objectives=["forget_efficacy", "utility"])


def test_every_trial_failed(built, tmp_path):
    run, _ = built
    failed = _variant(run, tmp_path, "failed", lambda r: r[r["status"] != "ok"])
    out = report.build_report(failed)
    md = (out / "report.md").read_text()
    assert "No evaluated point: every trial ended before its first evaluation" in _answer(md)
    assert "**npo**: no evaluated point" in md
    assert not (out / "figures" / "front.png").exists()
    assert "worker 1 died" in md.split("## Trials that ended early")[1]
