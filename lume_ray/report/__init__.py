"""[4] Report: a sweep's run directory -> the answer, Pareto fronts, hypervolume, leaderboard and figures.

    pareto.py    Pareto masks, ranks, hypervolume (moocore)           points -> numbers
    redact.py    PII patterns                                         text -> text
    run.py       reading RUN_DIR: results, study, spaces, base model  RUN_DIR -> Run
    columns.py   numeric columns, column groups, cell text            a results frame -> values, text
    floors.py    the floors a point must pass                         rows + floors -> feasible or not
    analysis.py  fronts, hypervolume, best points, tables             a Run -> Analysis
    budget.py    hypervolume against steps, budget against a grid     an Analysis -> compute figures
    answer.py    the report's opening paragraphs                      an Analysis -> Answer
    samples.py   generations before / after, provenance               an Analysis -> samples, provenance
    compare.py   several RUN_DIRs, one hypervolume reference          runs -> differences
    figures.py   matplotlib figures (PNG for Markdown, SVG inline)    plain data -> figures
    render.py    Jinja2 templates (templates/*.j2), atomic output     everything -> report folder
"""

from __future__ import annotations

from lume_ray.report.analysis import analyze
from lume_ray.report.budget import hypervolume_history
from lume_ray.report.floors import apply_floors, parse_floors
from lume_ray.report.pareto import hypervolume, pareto_mask
from lume_ray.report.redact import redact
from lume_ray.report.render import build_report, compare_runs
from lume_ray.report.run import load_run

__all__ = ["analyze", "apply_floors", "build_report", "compare_runs", "hypervolume",
           "hypervolume_history", "load_run", "pareto_mask", "parse_floors", "redact"]
