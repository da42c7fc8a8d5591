"""[4] Render: analysed runs -> report.html, report.md, figures/*.png and the tables, written atomically.

Input:  RUN_DIR (:func:`build_report`) or several (:func:`compare_runs`), the objectives, floors and
        redaction setting.
Output: the output folder, written into a temporary sibling and renamed into place (an older report stays
        whole until the new one is complete):
        one run:   report.html (self-contained: inline SVG figures, no script), report.md + figures/*.png,
                   results.parquet + pareto.csv (every row with ``feasible``, ``on_front_overall``,
                   ``on_front_algorithm``), hypervolume.csv, budget.csv;
        several:   report.html, report.md + figures/*.png, differences.csv, hypervolume.csv.

The pages are Jinja2 templates (templates/*.j2; HTML with autoescape on, so data never becomes markup). The
page opens with the answer (a paragraph per algorithm, the overall front), then the leaderboard; provenance
and the files read come last. Nothing is re-run: everything comes from the stored tables.
"""

from __future__ import annotations

import html
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lume_ray.config import Floor
from lume_ray.files import atomic_dir
from lume_ray.report import figures as fg
from lume_ray.report.analysis import (
    analyze,
    failures,
    front_table,
    hp_importance,
    importance_table,
    leaderboard,
)
from lume_ray.report.answer import answer, boundary
from lume_ray.report.budget import budget_table, budgets, hypervolume_history
from lume_ray.report.columns import fmt, has_values
from lume_ray.report.compare import compare
from lume_ray.report.floors import Floors
from lume_ray.report.redact import keep, redact
from lume_ray.report.run import load_run, read_table
from lume_ray.report.samples import check_best_rows, load_samples, provenance

TEMPLATES = Path(__file__).parent / "templates"


# ---------------------------------------------------------------------------------------------
# Template environment and cell formatting.


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


def table(df: pd.DataFrame) -> Table:
    return Table([str(c) for c in df.columns], [[fmt(v) for v in row] for row in df.itertuples(index=False)])


def md_cell(text: Any) -> str:
    """Markdown-safe text: pipes would end a cell, newlines a row, and < > & could become markup."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def md_code(text: str) -> str:
    """A fenced block longer than any backtick run inside it."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def environment(html_output: bool) -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=html_output,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(md=md_cell, md_code=md_code, fmt=fmt)
    return env


def _render(template: str, path: Path, **context: Any) -> None:
    env = environment(template.endswith(".html.j2"))
    path.write_text(env.get_template(template).render(**context), encoding="utf-8")


def _inline(figures: Sequence[fg.Figure]) -> dict[str, dict[str, Any]]:
    """name -> {title, caption, name, svg (markup: matplotlib's own SVG, text escaped by it)}."""
    from markupsafe import Markup

    return {f.name: {"name": f.name, "title": f.title, "caption": f.caption, "svg": Markup(f.svg())} for f in figures}


def _log(msg: str) -> None:
    print(f"[report] {msg}", file=sys.stderr, flush=True)


def _out_dir(out_dir: str | Path | None, default: Path | None) -> Path:
    if out_dir is None:
        if default is None:
            raise ValueError("comparing runs needs --out DIR (where to write the comparison)")
        return default
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    return out


def _floors(floors: Floors | Mapping[str, float | Floor] | None) -> Floors | None:
    return None if floors is None else Floors.of(floors)


# ---------------------------------------------------------------------------------------------
# One run.


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, objectives: Sequence[str] | None = None,
                 floors: Floors | Mapping[str, float | Floor] | None = None, redact: bool = True) -> Path:
    """Write the report of RUN_DIR into ``out_dir`` (default RUN_DIR/report) atomically; return that path.

    ``floors=None`` applies the study's utility floor (study.json, default 0.75 of the base utility);
    ``{}`` applies none; ``{"utility": Floor(absolute=0.371)}`` or ``{"utility": 0.75, "mia_score": 0.5}``.
    """
    t0 = time.time()
    run = load_run(run_dir)
    out = _out_dir(out_dir, run.rd.report)
    _log(f"read {len(run.results)} points from {run.rd.results_path}")
    a = analyze(run, objectives, _floors(floors))
    clean: Callable[[str], str] = _redact if redact else keep
    rows = a.table.copy()
    rows["error"] = rows["error"].map(clean)  # error messages may quote data rows
    check_best_rows(run, a)
    samples, samples_note = load_samples(run, a, clean)
    history = hypervolume_history(a)
    imp = hp_importance(a)
    budget = budgets(run, a)
    opening = answer(run, a, budget, boundary(run, a))

    figures: list[fg.Figure] = []
    axes = fg.tradeoff_axes(a)
    if axes is not None:
        figures.append(fg.tradeoff(a, run.base_metrics, *axes, "front", f"The overall front: {axes[0]} vs {axes[1]}"))
    if axes != ("forget_efficacy", "utility") and has_values(a.table, "forget_efficacy") \
            and has_values(a.table, "utility"):
        figures.append(fg.tradeoff(a, run.base_metrics, "forget_efficacy", "utility", "forget_vs_utility",
                                   "Forget efficacy vs utility"))
    figures += [f for f in (fg.steps(a, run.base_metrics), fg.hypervolume_curve(a, history), fg.importance(a, imp))
                if f is not None]

    context = {
        "name": run.name, "answer": opening, "notes": a.notes, "figures": _inline(figures),
        "rank_metric": a.rank_metric,
        "leaderboard": table(leaderboard(run, a)), "budget": table(budget_table(budget)),
        "early_stopped": any(b.stopped for b in budget.values()),
        "fronts": table(front_table(a)), "importance": table(importance_table(a, imp)),
        "samples": samples, "samples_note": samples_note, "failures": table(failures(a, clean)),
        "provenance": provenance(run, a, redact), "read": table(read_table(run)),
        "experiment_yaml": run.experiment_yaml, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        rows.to_parquet(tmp / "results.parquet", index=False)
        rows.to_csv(tmp / "pareto.csv", index=False)
        history.to_csv(tmp / "hypervolume.csv", index=False)
        budget_table(budget).to_csv(tmp / "budget.csv", index=False)
        for f in figures:
            f.save_png(tmp / "figures" / f"{f.name}.png")
        _render("report.html.j2", tmp / "report.html", **context)
        _render("report.md.j2", tmp / "report.md", **context)
    _log(f"wrote {out} in {time.time() - t0:.1f} s")
    return out


_redact = redact  # build_report's ``redact`` flag shadows the function inside it


# ---------------------------------------------------------------------------------------------
# Several runs.


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None,
                 objectives: Sequence[str] | None = None,
                 floors: Floors | Mapping[str, float | Floor] | None = None) -> Path:
    """Overlay the fronts and hypervolume curves of several runs, with a table of differences, in ``out_dir``."""
    t0 = time.time()
    out = _out_dir(out_dir, None)
    c = compare(run_dirs, objectives, _floors(floors))
    a0 = c.analyses[0]
    axes = fg.tradeoff_axes(a0) or (a0.objectives[0], a0.objectives[-1])
    figures = [fg.compare_fronts(list(zip(c.labels, c.analyses, strict=True)), *axes),
               fg.compare_hypervolume(list(zip(c.labels, c.analyses, strict=True)), c.histories)]
    runs = [{"label": label, "path": str(run.run_dir), "provenance": provenance(run, a, True),
             "read": table(read_table(run)), "notes": a.notes}
            for label, run, a in zip(c.labels, c.runs, c.analyses, strict=True)]
    context = {
        "labels": c.labels, "summary": c.summary, "figures": _inline(figures),
        "differences": table(c.differences),
        "reference": ", ".join(f"{o}={v:.4g}" for o, v in zip(a0.objectives, c.reference, strict=True)),
        "objectives": a0.objectives, "runs": runs, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    history = pd.concat([h.assign(run=label) for label, h in zip(c.labels, c.histories, strict=True)])
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        c.differences.to_csv(tmp / "differences.csv", index=False)
        history.to_csv(tmp / "hypervolume.csv", index=False)
        for f in figures:
            f.save_png(tmp / "figures" / f"{f.name}.png")
        _render("compare.html.j2", tmp / "report.html", **context)
        _render("compare.md.j2", tmp / "report.md", **context)
    _log(f"wrote {out} in {time.time() - t0:.1f} s")
    return out
