"""[7] Report: a sweep's run directory -> the answer, Pareto fronts, hypervolume, leaderboard and figures.

    pareto.py    Pareto masks, ranks, hypervolume (moocore)           points -> numbers
    redact.py    PII patterns                                         text -> text
    analysis.py  RUN_DIR -> feasibility, fronts, answer, tables       a run -> plain data
    compare.py   several RUN_DIRs, one hypervolume reference         runs -> differences
    figures.py   matplotlib figures (PNG for Markdown, SVG inline)    plain data -> figures
    render.py    Jinja2 templates (templates/*.j2), atomic output     everything -> report folder
"""

from __future__ import annotations

from lume_ray.report.analysis import analyze, apply_floors, hypervolume_history, load_run, parse_floors
from lume_ray.report.pareto import hypervolume, pareto_mask
from lume_ray.report.redact import redact
from lume_ray.report.render import build_report, compare_runs

__all__ = ["analyze", "apply_floors", "build_report", "compare_runs", "hypervolume",
           "hypervolume_history", "load_run", "pareto_mask", "parse_floors", "redact"]
