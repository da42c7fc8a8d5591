"""`lume-ray status RUN_DIR`: where a sweep stands, read from its run directory alone.

Input:  RUN_DIR of a finished sweep, a running one, an interrupted one, or one a submitted Ray job writes.
Output: the study; per algorithm its trials (done, running, failed with the reason) and its best points (the
        non-dominated ones on the experiment's objectives); the points whose model is on disk (trial@step) and the
        bytes the run directory holds; whether the sweep is finished, running, or can be
        resumed, with the command that resumes it (:func:`run_status`; :func:`status_lines` are the lines
        ``lume-ray status`` prints, ``--json`` the same as one JSON object).

Running or not comes from ``RUN_DIR/logs/driver.json`` (:func:`write_driver`: the sweep driver's host and pid,
written when the sweep starts): a live pid on this host is a running sweep; a driver on another host (a Ray
job on a cluster) cannot be checked from here, so the status names the job and the time of the last write.
Nothing here imports Ray unless a resume has to be checked (``Tuner.can_restore``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from lume_ray.files import write_json
from lume_ray.run_dir import RunDir, disk_bytes, fmt_bytes

DRIVER_NAME = "driver.json"  # RUN_DIR/logs/driver.json
TUNE_NAME = "sweep"  # RUN_DIR/tune/<name>: the Tune experiment (search.sweep.TUNE_NAME)
MAX_BEST = 8  # best points shown per algorithm
MAX_MODELS = 12  # points whose model is on disk, shown by name
DONE_STATES = ("completed", "stopped", "diverged")


class NotARunDir(ValueError):
    """The directory holds no sweep."""


def write_driver(run_dir: RunDir, planned: dict[str, int]) -> None:
    """Who is running this sweep: called by the sweep when it starts (and again on each resume)."""
    record: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                              "planned": planned}
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor in a job's driver
    if job:
        try:
            meta = json.loads(job).get("metadata", {})
            record["ray_job"] = meta.get("job_submission_id") or meta.get("job_name")
        except (ValueError, AttributeError):
            pass
    write_json(run_dir.logs / DRIVER_NAME, record)


def read_driver(run_dir: RunDir) -> dict[str, Any]:
    path = run_dir.logs / DRIVER_NAME
    try:
        return dict(json.loads(path.read_text())) if path.is_file() else {}
    except ValueError:
        return {}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class Point:
    trial_id: str
    step: int
    hp: dict[str, Any]
    values: dict[str, float]


@dataclass
class AlgorithmStatus:
    planned: int | None = None
    done: int = 0
    diverged: int = 0
    stopped: int = 0  # by early stopping, at a rung (counted in done too)
    running: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (trial id, reason)
    points: int = 0
    best: list[Point] = field(default_factory=list)


@dataclass
class RunStatus:
    run_dir: str
    name: str
    objectives: list[dict[str, str]]
    state: str  # finished | running | interrupted | elsewhere
    detail: str
    algorithms: dict[str, AlgorithmStatus]
    resume: str | None = None
    driver: dict[str, Any] = field(default_factory=dict)
    models: list[tuple[str, int]] = field(default_factory=list)  # (trial id, step) of the models on disk
    keep_models: str | None = None  # the sweep's keep_models (experiment.yaml)
    disk_bytes: int = 0  # what RUN_DIR holds on disk (du)


def _last_write(rd: RunDir) -> float:
    newest = rd.study_path.stat().st_mtime
    for path in rd.trials.glob("*/trial.json"):
        newest = max(newest, path.stat().st_mtime)
    for path in rd.trials.glob("*/step_*/metrics.json"):
        newest = max(newest, path.stat().st_mtime)
    return newest


def _ago(t: float) -> str:
    s = max(0, int(time.time() - t))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def _can_restore(rd: RunDir) -> bool:
    exp_dir = rd.tune / TUNE_NAME
    if not exp_dir.is_dir():
        return False
    from ray import tune  # heavy: Ray, only when a resume has to be checked

    return bool(tune.Tuner.can_restore(str(exp_dir)))


def best_points(points: list[Point], objectives: list[dict[str, str]]) -> list[Point]:
    """The non-dominated points (objectives with their directions), best first on the first objective."""
    import numpy as np  # heavy: numpy and lume_ray.report (its figures, templates), only for best points

    from lume_ray.report.pareto import pareto_mask

    names = [o["name"] for o in objectives]
    usable = [p for p in points if all(math.isfinite(p.values.get(n, math.nan)) for n in names)]
    if not usable or not names:
        return []
    values = np.array([[p.values[n] for n in names] for p in usable], dtype=float)
    front = [p for p, keep in zip(usable, pareto_mask(values, [o["direction"] for o in objectives]), strict=True)
             if keep]
    sign = 1.0 if objectives[0]["direction"] == "max" else -1.0
    return sorted(front, key=lambda p: -sign * p.values[names[0]])


def run_status(run_dir: str | os.PathLike[str]) -> RunStatus:
    """Everything ``lume-ray status`` says, from the files of ``run_dir``."""
    rd = RunDir(run_dir)
    if not rd.root.is_dir():
        raise NotARunDir(f"{rd.root}: {'a file, not a run directory' if rd.root.exists() else 'no such directory'}")
    if not rd.exists():
        raise NotARunDir(f"{rd.root}: not a run directory (no study.json; a sweep writes one when it starts)")
    study = rd.read_study()
    objectives = list(study.get("objectives", []))
    driver = read_driver(rd)
    planned = dict(driver.get("planned") or {})
    algos: dict[str, AlgorithmStatus] = {a: AlgorithmStatus(planned=planned.get(a))
                                         for a in study.get("algorithms", [])}
    points: dict[str, list[Point]] = {}
    records = rd.trial_records()
    for rec in records:
        a = algos.setdefault(rec["algorithm"], AlgorithmStatus(planned=planned.get(rec["algorithm"])))
        status = rec.get("status", "running")
        if status in DONE_STATES:
            a.done += 1
            a.diverged += status == "diverged"
            a.stopped += status == "stopped"
        elif status == "failed":
            a.failed.append((rec["trial_id"], rec.get("error") or "no reason recorded"))
        else:
            a.running.append(rec["trial_id"])
        for step, metrics in rd.point_metrics(rec["trial_id"]).items():
            values = {k: float(v) for k, v in metrics.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}
            points.setdefault(rec["algorithm"], []).append(Point(rec["trial_id"], step, dict(rec.get("hp", {})),
                                                                 values))
    for name, a in algos.items():
        a.points = len(points.get(name, []))
        a.best = best_points(points.get(name, []), objectives)
    running = [t for a in algos.values() for t in a.running]
    failed = sum(len(a.failed) for a in algos.values())
    short = sum(max(0, (a.planned or 0) - a.done - len(a.failed) - len(a.running)) for a in algos.values())
    finished = rd.results_path.is_file() and not running
    resume_cmd = f"lume-ray sweep {rd.experiment_path} --resume --out {rd.root}"
    here = driver.get("host") == socket.gethostname()
    alive = bool(driver) and here and _alive(int(driver.get("pid", 0)))
    st = RunStatus(str(rd.root), str(study.get("name", "")), objectives, "finished", "", algos, driver=driver,
                   models=rd.models_on_disk(), keep_models=rd.keep_models(), disk_bytes=disk_bytes(rd.root))
    if alive and not finished:
        st.state = "running"
        st.detail = f"driver pid {driver['pid']} on this host, last write {_ago(_last_write(rd))}"
    elif finished:
        st.detail = f"results.parquet written{f'; {failed} failed trial(s)' if failed else ''}"
        if failed and _can_restore(rd):
            st.resume = resume_cmd + "  (re-runs nothing that finished; failed trials retry from their checkpoints)"
    elif driver and not here:
        st.state = "elsewhere"
        job = f" (Ray job {driver['ray_job']}: lume-ray jobs status {driver['ray_job']} --address ...)" \
            if driver.get("ray_job") else ""
        st.detail = (f"driver on host {driver.get('host')}{job}; cannot check it from here; last write "
                     f"{_ago(_last_write(rd))}")
        if _can_restore(rd):
            st.resume = resume_cmd + "  (only if that driver has stopped)"
    else:
        st.state = "interrupted"
        st.detail = (f"{len(running)} trial(s) left unfinished, {short} not started; no driver is running"
                     if running or short else "no results.parquet yet; no driver is running")
        if _can_restore(rd):
            st.resume = resume_cmd
        else:
            st.detail += " (no Tune experiment to restore: start it again without --resume)"
    return st


def fmt_param(value: Any) -> str:
    """A hyperparameter as a line shows it: 1e-3, 2.5e-4, 2, 0.5."""
    if isinstance(value, float) and value and (abs(value) < 0.01 or abs(value) >= 1e4):
        mantissa, exp = f"{value:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exp)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fmt_metric(value: Any) -> str:
    """A metric as a line shows it: 0.91, 0.70, 12.35."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.4g}"


def status_lines(st: RunStatus) -> list[str]:
    objectives = ", ".join(f"{o['name']} ({o['direction']})" for o in st.objectives)
    out = [f"{st.run_dir}: sweep {st.name!r}; objectives {objectives}",
           f"state: {st.state}: {st.detail}"]
    width = max([len("algorithm"), *(len(a) for a in st.algorithms)])
    running = "running" if st.state == "running" else "unfinished"
    stopped = any(a.stopped for a in st.algorithms.values())  # early stopping: how many of the done it ended
    out.append(f"  {'algorithm':<{width}}  planned  done  {'stopped  ' if stopped else ''}diverged  {running}  "
               "failed  points")
    for name, a in st.algorithms.items():
        out.append(f"  {name:<{width}}  {a.planned if a.planned is not None else '?':>7}  {a.done:>4}  "
                   + (f"{a.stopped:>7}  " if stopped else "")
                   + f"{a.diverged:>8}  {len(a.running):>{len(running)}}  {len(a.failed):>6}  {a.points:>6}")
    failed = [(n, t, r) for n, a in st.algorithms.items() for t, r in a.failed]
    if failed:
        out.append("failed trials:")
        out += [f"  [{n}] {t}: {r}" for n, t, r in failed]
    names = [o["name"] for o in st.objectives]
    if any(a.best for a in st.algorithms.values()):
        out.append(f"best points (non-dominated on {', '.join(names)}):")
        for name, a in st.algorithms.items():
            for p in a.best[:MAX_BEST]:
                values = "  ".join(f"{n} {fmt_metric(p.values[n])}" for n in names)
                hp = ", ".join(f"{k} {fmt_param(v)}" for k, v in p.hp.items())
                out.append(f"  [{name}] {p.trial_id} step {p.step}: {values}  ({hp})")
            if len(a.best) > MAX_BEST:
                out.append(f"  [{name}] ... {len(a.best) - MAX_BEST} more (lume-ray report {st.run_dir})")
    mode = f" (keep_models: {st.keep_models})" if st.keep_models else ""
    models = ", ".join(f"{t}@{s}" for t, s in st.models[:MAX_MODELS])
    more = f", ... {len(st.models) - MAX_MODELS} more" if len(st.models) > MAX_MODELS else ""
    out.append(f"models on disk{mode}: {len(st.models)}" + (f" ({models}{more})" if st.models else "")
               + f"; the run directory holds {fmt_bytes(st.disk_bytes)}")
    if st.resume:
        out.append(f"resume with: {st.resume}")
    return out
