"""[4] Samples and provenance: an analysed run -> generations before / after unlearning, checks, provenance.

Input:  :class:`~lume_ray.report.run.Run` (base/rows.parquet) and its
        :class:`~lume_ray.report.analysis.Analysis`; the best points' rows.parquet, read here.
Output: :class:`Sample` rows (the same row ids before and after, text cleaned by the caller's redaction), the
        task scores of the base model and of each best point re-derived from their rows (noted in the run's
        read log), and the provenance table (with the points whose model is on disk and the run directory's size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from lume_ray.data import SPLITS
from lume_ray.report.analysis import Analysis
from lume_ray.report.run import Run, check_rows, read_rows
from lume_ray.run_dir import disk_bytes, fmt_bytes


@dataclass
class Sample:
    split: str
    task: str
    kind: str
    row_id: str
    prompt: str
    reference: str
    before: str
    before_score: float
    after: str
    after_score: float


def sample_ids(base_rows: pd.DataFrame, per_split: int = 3) -> list[str]:
    """A few row ids: per split, one per task (sentence completions first, as they show the most text)."""
    if not {"id", "split", "task"} <= set(base_rows.columns):
        return []
    ids: list[str] = []
    kind = base_rows["kind"] if "kind" in base_rows.columns else pd.Series("", index=base_rows.index)
    rows = base_rows.assign(_qa=(kind != "sc"))
    for split in SPLITS:
        part = rows[rows["split"] == split].sort_values(["_qa", "task", "id"], kind="stable")
        ids.extend(part.drop_duplicates("task").head(per_split)["id"].astype(str))
    return ids


def load_samples(run: Run, a: Analysis, clean: Callable[[str], str]) -> tuple[list[Sample], str]:
    """Sample generations before (base rows) and after (the best point's rows), same ids, text cleaned."""
    if run.base_rows is None:
        return [], "base/rows.parquet is missing: no sample generations."
    if a.best_overall is None:
        return [], "no ok point: no sample generations after unlearning."
    r = a.table.loc[a.best_overall]
    rel = str(r.get("rows_path", "") or "")
    where = f"{r['algorithm']} trial {r['trial_id']} at step {int(r['step'])}"
    after_rows = read_rows(run.rd, rel, run.read, f"best point: {where}")
    if after_rows is not None:
        run.read[-1] = (*run.read[-1][:2], f"{run.read[-1][2]}; {check_rows(r.to_dict(), after_rows)}")
    if after_rows is None or "id" not in after_rows.columns:
        return [], f"rows of the best point ({where}) not found at {rel or '(no rows_path)'}: no samples."
    base = run.base_rows.drop_duplicates("id").set_index("id", drop=False)
    after = after_rows.drop_duplicates("id").set_index("id", drop=False)
    out = []
    for rid in sample_ids(run.base_rows):
        if rid not in after.index:
            continue
        b, z = base.loc[rid], after.loc[rid]
        out.append(Sample(str(b.get("split", "")), str(b.get("task", "")), str(b.get("kind", "")), rid,
                          clean(str(b.get("input", ""))), clean(str(b.get("output", ""))),
                          clean(str(b.get("generation", ""))), float(pd.to_numeric(b.get("score"), errors="coerce")),
                          clean(str(z.get("generation", ""))), float(pd.to_numeric(z.get("score"), errors="coerce"))))
    return out, f"after unlearning = the best feasible point overall by {a.rank_metric}: {where}."


def check_best_rows(run: Run, a: Analysis) -> None:
    """Re-derive the task scores of the base model and of each algorithm's best point from their rows."""
    if run.base_rows is not None:
        k = next(k for k, (p, _, _) in enumerate(run.read) if p == "base/rows.parquet")
        run.read[k] = (*run.read[k][:2], f"{run.read[k][2]}; {check_rows(run.base_metrics, run.base_rows)}")
    for alg, i in a.best.items():
        if i is None or i == a.best_overall:
            continue  # the overall best is read (and checked) with the samples
        r = a.table.loc[i]
        rows = read_rows(run.rd, str(r.get("rows_path", "") or ""), run.read, f"best {alg} point")
        if rows is not None:
            run.read[-1] = (*run.read[-1][:2], f"{run.read[-1][2]}; {check_rows(r.to_dict(), rows)}")


def provenance(run: Run, a: Analysis, redacted: bool) -> list[tuple[str, str]]:
    s = run.study
    versions = s.get("versions") or {}
    df = a.table
    status = df.groupby("trial_id")["status"].agg(lambda x: "ok" if (x == "ok").all() else x[x != "ok"].iloc[-1])
    return [
        ("study", run.name),
        ("run directory", str(run.run_dir)),
        ("created", str(s.get("created", "—"))),
        ("model", str(s.get("model", "—"))),
        ("data", str(s.get("data", "—"))),
        ("sampler", f"{s.get('sampler', '—')}, {s.get('num_samples', '—')} trials per algorithm"),
        ("algorithms", ", ".join(a.algorithms)),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in zip(a.objectives, a.directions, strict=True))),
        ("feasibility floor", "; ".join(a.floors.describe(run.base_metrics)) or "none"),
        ("hypervolume reference", ", ".join(f"{o}={v:.4g}" for o, v in zip(a.objectives, a.reference, strict=True))
         + " (0 / 1 for scores in [0, 1]; else the worst of the base model and every point)"),
        ("best trade-off metric", f"{a.rank_metric} (answer, leaderboard, samples)"),
        ("seed", str(s.get("seed", "—"))),
        ("workers / ZeRO stage", f"{s.get('workers', '—')} / {s.get('zero', '—')}"),
        ("git commit", str(s.get("git_commit", "—"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "—"),
        ("trials", f"{df['trial_id'].nunique()} ({', '.join(f'{v} {k}' for k, v in status.value_counts().items())})"),
        ("points (trial × step)", f"{len(df)}; feasible {int(df['feasible'].sum())}; on the overall front "
                                  f"{int(df['on_front_overall'].sum())}"),
        ("models on disk", f"{run.rd.models_text()} (trial@step; keep_models: {run.rd.keep_models() or 'unknown'})"),
        ("run directory size", f"{fmt_bytes(disk_bytes(run.rd.root))} on disk"),
        ("sample text", "PII redacted (emails, phones, SSNs)" if redacted else "NOT redacted (--no-redact)"),
    ]
