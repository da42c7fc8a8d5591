"""[3] Early stopping: multi-objective successive halving over evaluation points (MO-ASHA).

Input:  every evaluated point a trial reports to Tune (its algorithm, step and objective values), and
        ``sweep.early_stop`` (rungs: the steps at which trials are compared; keep: the fraction kept).
Output: CONTINUE or STOP for the trial at each rung; the decision and its reason recorded in
        ``RUN_DIR/trials/<id>/rungs.json`` (and ``trial.json`` status "stopped" for a stopped trial).

The rule (Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving"; Salinas et al. 2021): at a
rung, rank the points seen there so far for the same algorithm by Pareto rank (non-dominated sorting), ties
broken by exclusive hypervolume contribution, and keep the best ``max(1, floor(n * keep))`` of the n points
(with ``keep_front``, at least every point of the rung's front); a trial whose point falls outside is stopped.
ASHA's asynchronous promotion: a trial is judged against the points that reached the rung before it, so no
worker ever waits for a full rung. ASHA promotes nobody from a rung holding fewer than 1/keep points; a trial
here cannot wait for them (its job holds its workers), so the first ones to arrive continue *provisionally*
and are judged again against the rung's points so far, at each later point (pipelined) or at each later rung
(the job held at rungs), until the rung holds 1/keep points; the verdict is then final. Without that, the first
trials of a sweep (the initial design, which starts together) were never judged at all: measured, the design's aggressive corner, the weakest trial
of every benchmark run, trained to its end as the first to reach each rung. Ranks and contributions come
from moocore (:mod:`lume_ray.report.pareto`). A final decision is kept: after a driver interrupt the
resumed trial gets the same verdict at the same rung (a provisional one is judged again).
The trial's points evaluated before the stop stay in the results and in the searcher's studies.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from lume_ray.config import Experiment
from lume_ray.evaluate.metrics import direction
from lume_ray.files import write_json
from lume_ray.run_dir import RunDir

RUNGS_FILE = "rungs.json"


def keep_order(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Indices of ``values`` (N, M) from best to worst: Pareto rank, then larger hypervolume contribution.

    The contribution's reference point is the worst value of each objective among the points, pushed out by a
    tenth of the range (so the extreme points of the front keep a positive contribution)."""
    from lume_ray.report.pareto import (  # heavy: pandas (lume_ray.report.analysis)
        hv_contributions,
        pareto_rank,
    )

    ranks = pareto_rank(values, directions)
    maximise = np.array([d == "max" for d in directions])
    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    margin = np.where(hi > lo, (hi - lo) / 10, 1e-6)
    reference = np.where(maximise, lo - margin, hi + margin)
    contrib = np.zeros(len(values))
    for r in np.unique(ranks[ranks >= 0]):  # contributions within each rank (front) separately
        idx = np.flatnonzero(ranks == r)
        contrib[idx] = hv_contributions(values[idx], directions, reference)
    ranks = np.where(ranks < 0, np.iinfo(int).max, ranks)  # NaN points last
    return np.lexsort((-contrib, ranks))


def judge(table: dict[str, list[float]], trial_id: str, keep: float, directions: Sequence[str],
          keep_front: bool = False) -> tuple[bool, int, int]:
    """(kept?, position, how many are kept) of ``trial_id``'s point among the points ``table`` holds at a rung
    (trial id -> objective values, ``trial_id``'s included): the best ``max(1, floor(n * keep))`` are kept, and
    with ``keep_front`` every point of the rung's front (Pareto rank 0) too."""
    from lume_ray.report.pareto import pareto_rank  # heavy: pandas (lume_ray.report.analysis)

    ids = list(table)
    values = np.array([table[i] for i in ids], dtype=float)
    order = keep_order(values, directions)
    kept = max(1, math.floor(len(ids) * keep))
    if keep_front:
        kept = max(kept, int((pareto_rank(values, directions) == 0).sum()))
    position = int(np.flatnonzero(order == ids.index(trial_id))[0])
    return position < kept, position, kept


class ParetoSuccessiveHalving(FIFOScheduler):
    """A Tune scheduler (the supported extension point: FIFO order, our own on_trial_result)."""

    @property
    def supports_buffered_results(self) -> bool:
        """Tune's public switch: no buffered results, so every point is judged as it arrives."""
        return False

    def __init__(self, exp: Experiment, run_dir: str) -> None:
        super().__init__()
        assert exp.sweep.early_stop is not None
        self.exp, self.rd = exp, RunDir(run_dir)
        self.rungs = tuple(exp.sweep.early_stop.rungs)
        self.keep = float(exp.sweep.early_stop.keep)
        self.keep_front = exp.sweep.early_stop.keep_front
        self.pipelined = exp.sweep.early_stop.resolved_pipelined(exp.train)
        self.enough = math.ceil(1 / self.keep - 1e-9)  # points a rung needs before its verdicts are final
        self.objectives = list(exp.sweep.objectives)
        self.directions = [direction(o) for o in self.objectives]
        self.seen: dict[tuple[str, int], dict[str, list[float]]] = {}  # (algorithm, rung) -> trial -> values
        self.decisions: dict[str, dict[str, Any]] = {}  # trial -> its rungs.json (read once, then kept here)
        self.loaded = False

    def _load(self) -> None:
        """The points already at each rung (a resumed sweep's), from RUN_DIR."""
        if self.loaded:
            return
        self.loaded = True
        for info in self.rd.trial_records():
            for step, metrics in self.rd.point_metrics(info["trial_id"]).items():
                if step in self.rungs:
                    values = [metrics.get(o) for o in self.objectives]
                    if all(isinstance(v, int | float) for v in values):
                        self.seen.setdefault((info["algorithm"], step), {})[info["trial_id"]] = [
                            float(v) for v in values]  # type: ignore[arg-type]

    def _decisions(self, trial_id: str) -> dict[str, Any]:
        """``trial_id``'s decisions at each rung: its rungs.json, read once (a resumed sweep's), then kept here."""
        if trial_id not in self.decisions:
            path = self.rd.trial(trial_id) / RUNGS_FILE
            self.decisions[trial_id] = json.loads(path.read_text()) if path.is_file() else {}
        return self.decisions[trial_id]

    def _record(self, trial_id: str, rung: int, keep: bool, reason: str, provisional: bool) -> None:
        decisions = self._decisions(trial_id)
        decisions[str(rung)] = {"decision": "continue" if keep else "stop", "reason": reason, "time": time.time(),
                                "provisional": provisional}
        write_json(self.rd.trial(trial_id) / RUNGS_FILE, decisions)

    def decide(self, algorithm: str, rung: int, trial_id: str, values: list[float]) -> tuple[bool, str, bool]:
        """(keep, reason, provisional) for ``trial_id``'s point at ``rung``; the point joins the rung's table."""
        table = self.seen.setdefault((algorithm, rung), {})
        table[trial_id] = values
        return self._judge(table, rung, trial_id)

    def _judge(self, table: dict[str, list[float]], rung: int, trial_id: str) -> tuple[bool, str, bool]:
        """(keep, reason, provisional): a continue is provisional while the rung holds too few points."""
        verdict, position, kept = judge(table, trial_id, self.keep, self.directions, self.keep_front)
        n = len(table)
        provisional = verdict and n < self.enough
        reason = (f"{'kept' if verdict else 'stopped'} at rung {rung}: position {position + 1} of {n} points "
                  f"(keeping {kept}) by Pareto rank and hypervolume contribution")
        if provisional:
            reason += f" (provisional: fewer than {self.enough} points, judged again later)"
        return verdict, reason, provisional

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        step, algorithm = result.get("step"), str(trial.config.get("algorithm"))
        if not isinstance(step, int | float) or result.get("status") != "ok" or algorithm not in self.exp.algorithms:
            return TrialScheduler.CONTINUE
        step = int(step)
        if step >= self.exp.algorithms[algorithm].steps.max:  # its last point: nothing left to save
            return TrialScheduler.CONTINUE
        # Held at each rung (not pipelined), the job trains on freely between rungs: a stop there lands wherever the
        # job has got to while the point was scored (measured: past the last rung, at its end, saving nothing and
        # losing its last points), so provisional verdicts are judged again where the job is held, at its rungs.
        if (self.pipelined or step in self.rungs) and not self.judged_again(algorithm, step, trial.trial_id):
            return TrialScheduler.STOP
        if step not in self.rungs:
            return TrialScheduler.CONTINUE
        values = [result.get(o) for o in self.objectives]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return TrialScheduler.CONTINUE  # cannot be judged: no objective value
        keep = self.verdict(algorithm, int(step), trial.trial_id, [float(v) for v in values])  # type: ignore[arg-type]
        return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP

    def verdict(self, algorithm: str, step: int, trial_id: str, values: list[float]) -> bool:
        """Keep (True) or stop ``trial_id`` at rung ``step``: decided once, recorded in its rungs.json (a stop
        also in its trial.json), and the same answer again after a driver interrupt."""
        self._load()
        decisions = self._decisions(trial_id)
        if str(step) in decisions:  # decided before a driver interrupt: the same verdict
            self.seen.setdefault((algorithm, step), {})[trial_id] = values
            keep = decisions[str(step)]["decision"] == "continue"
        else:
            keep, reason, provisional = self.decide(algorithm, step, trial_id, values)
            self._record(trial_id, step, keep, reason, provisional)
        if not keep:
            self._stopped(algorithm, trial_id, step, decisions[str(step)]["reason"])
        return keep

    def judged_again(self, algorithm: str, step: int, trial_id: str) -> bool:
        """Keep (True) or stop ``trial_id``, now at ``step``, on the rungs behind it where it was kept provisionally
        (too few points there then): each is judged again against the rung's points so far, and the verdict
        becomes final once the rung holds enough of them."""
        self._load()
        decisions = self._decisions(trial_id)
        open_ = [int(r) for r, d in decisions.items() if d.get("provisional") and int(r) < step]
        for rung in sorted(open_):
            table = self.seen.get((algorithm, rung), {})
            if trial_id not in table or len(table) < self.enough:
                continue  # still too few points to judge
            keep, reason, _ = self._judge(table, rung, trial_id)  # enough points: final
            reason = f"{reason}; judged again at step {step}"
            self._record(trial_id, rung, keep, reason, provisional=False)
            if not keep:
                self._stopped(algorithm, trial_id, step, reason)
                return False
        return True

    def _stopped(self, algorithm: str, trial_id: str, step: int, reason: str) -> None:
        """Record the stop in trial.json, judged at ``step`` (the results count the steps the job logged, which
        can be more: it trains on while a point that is not a rung is scored)."""
        info = self.rd.read_trial(trial_id) or {"trial_id": trial_id, "algorithm": algorithm, "hp": {}}
        if info.get("status") == "stopped":
            return
        now = time.time()
        info.update(status="stopped", error=reason, stopped_at=step, finished_at=now,
                    wall_s=now - info.get("started_at", now), trained_steps=step)
        self.rd.write_trial(trial_id, info)

    def debug_string(self) -> str:
        mode = "scored while the job trains on" if self.pipelined else "the job waits at each rung for its score"
        front = " and every point on the rung's front" if self.keep_front else ""
        return f"Pareto successive halving at rungs {list(self.rungs)}, keeping {self.keep:.0%}{front} ({mode})"
