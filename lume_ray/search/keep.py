"""[3] What a sweep keeps on disk: every scored point + ``sweep.keep_models`` -> model directories and checkpoints
removed as soon as nothing needs them.

Input:  the points the trials report (Tune's results, in the order the sweep's driver receives them), the
        experiment (``sweep.keep_models``, ``sweep.objectives``, ``eval.utility_floor``), the base model's utility,
        and RUN_DIR's records (what an earlier session of a resumed sweep scored).
Output: removals under RUN_DIR: a point's model (``trials/<id>/train/points/step_XXXXXX/``), a trial's DeepSpeed
        checkpoint (``trials/<id>/ray/``); one line per removal in ``RUN_DIR/models.jsonl`` (what, when, why).

``keep_models``:
  front  a point keeps its model while it is on its algorithm's current Pareto front: the report's front (the
         sweep's objectives and directions, the study's utility floor, :func:`lume_ray.report.pareto.pareto_mask`;
         an infeasible point is never on it). A point scored off the front loses its model at once; a kept
         point loses it when a later point dominates it. Domination is transitive, so a point once off the
         front never returns to it: nothing removed would be wanted later.
  none   a point's model is removed as soon as the point is scored.
  all    every model stays.
A trial's checkpoint is removed when the trial ends (completed, stopped at a rung, diverged), in every mode; a
failed trial keeps its checkpoint, which its retry (or ``--resume``) continues from.

Design: one process decides, the sweep's driver. :class:`ModelKeeper` is a Tune callback (the sweep registers it
with the live view, :func:`lume_ray.search.view.relay`): Tune calls ``on_trial_result`` in the driver, one result
at a time and in the order received, for every point of every trial, so the front needs no lock and no ledger
shared between the trial processes; the trials and the evaluation pool only write. A point is removed only after
it is scored (the pool has read it) and reported (its trial no longer looks at it: a retried trial skips scored
points); the job trains on from its own state, a point's model is a copy. The driver deletes the directories
itself: on a local cluster everything is on its filesystem, and on a multi-node cluster RUN_DIR is shared
storage that every node (and so the head) reaches. :meth:`ModelKeeper.reconcile` rebuilds the state from RUN_DIR
alone: when the Tune run starts (a resumed sweep) and once the sweep's trials and evaluation pool are gone (a
trial stopped at a rung may have scored or saved one more point, or written one more checkpoint, in the moment
before its actor died).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from lume_ray.config import Experiment, Floor
from lume_ray.console import say
from lume_ray.evaluate.metrics import direction
from lume_ray.report.pareto import pareto_mask
from lume_ray.run_dir import RunDir, disk_bytes

ENDED = ("completed", "stopped", "diverged")  # a trial that needs its checkpoint no more
Key = tuple[str, int]  # (trial id, step): one point


def _value(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else math.nan


class Front:
    """Per algorithm, the points scored so far and which of them are on its front (the report's rule)."""

    def __init__(self, objectives: Sequence[str], floor: Floor | None, base_utility: float | None) -> None:
        self.objectives = list(objectives)
        self.directions = [direction(o) for o in self.objectives]
        self.floor = floor
        self.base_utility = base_utility
        self.points: dict[str, dict[Key, tuple[np.ndarray, bool]]] = {}  # algorithm -> point -> (values, feasible)

    def feasible(self, metrics: Mapping[str, Any]) -> bool:
        """The utility floor, as the report applies it: a point whose utility, or whose floor, cannot be told
        (no utility set; a relative floor without the base model's utility) is not held back by it."""
        if self.floor is None:
            return True
        utility = _value(metrics.get("utility"))
        return self.floor.met(None if math.isnan(utility) else utility, self.base_utility) is not False

    def add(self, algorithm: str, trial_id: str, step: int, metrics: Mapping[str, Any]) -> None:
        values = np.array([_value(metrics.get(o)) for o in self.objectives])
        self.points.setdefault(algorithm, {})[(trial_id, step)] = (values, self.feasible(metrics))

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        algorithm, trial_id, step = key
        return (trial_id, step) in self.points.get(algorithm, {})

    def front(self, algorithm: str) -> set[Key]:
        """The points on ``algorithm``'s front. Objectives no point of the run has a value for are left out, as
        the report leaves them out (e.g. utility without a utility set); with none left, every feasible point."""
        mine = self.points.get(algorithm, {})
        keys = [k for k, (_, feasible) in mine.items() if feasible]
        recorded = [j for j in range(len(self.objectives))
                    if any(not math.isnan(v[j]) for pts in self.points.values() for v, _ in pts.values())]
        if not keys or not recorded:
            return set(keys)
        values = np.array([mine[k][0][recorded] for k in keys])  # (N, M)
        mask = pareto_mask(values, [self.directions[j] for j in recorded])
        return {k for k, on in zip(keys, mask, strict=True) if on}


class ModelKeeper(Callback):
    """Tune callback of the sweep's driver: removes what ``sweep.keep_models`` does not keep (module docstring)."""

    def __init__(self, exp: Experiment, run_dir: RunDir, base_utility: float | None,
                 log: Callable[[str], None] = say) -> None:
        self.mode = exp.sweep.keep_models
        self.rd = run_dir
        floor = exp.eval.utility_floor
        self.front = Front(exp.sweep.objectives, floor if floor.relative is not None or floor.absolute is not None
                           else None, base_utility)
        self.log = log
        self.algorithm_of: dict[str, str] = {}

    # -- Tune's events --------------------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.reconcile()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if result.get("status") == "ok" and "step" in result:
            self.scored(str(trial.config.get("algorithm", "?")), trial.trial_id, int(result["step"]), result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.trial_ended(trial.trial_id)

    # -- the rules ------------------------------------------------------------------------------
    def scored(self, algorithm: str, trial_id: str, step: int, metrics: Mapping[str, Any]) -> None:
        """A point was scored and reported: record it, then remove what the mode no longer keeps."""
        self.algorithm_of[trial_id] = algorithm
        self.front.add(algorithm, trial_id, step, metrics)
        if self.mode == "none":
            self._remove_model((trial_id, step), "scored (keep_models: none)")
        elif self.mode == "front":
            self._apply_front(algorithm, latest=(trial_id, step))

    def trial_ended(self, trial_id: str) -> None:
        """A trial ended (its record says completed, stopped or diverged): its checkpoint goes; points it scored
        but never reported (a stopped trial's last) join the front."""
        rec = self.rd.read_trial(trial_id) or {}
        if rec.get("status") not in ENDED:
            return
        algorithm = str(rec.get("algorithm", self.algorithm_of.get(trial_id, "?")))
        for step, metrics in self.rd.point_metrics(trial_id).items():
            if (algorithm, trial_id, step) not in self.front:
                self.scored(algorithm, trial_id, step, metrics)
        self._remove(self.rd.checkpoints(trial_id), {"trial_id": trial_id, "what": "checkpoint"},
                     f"the trial ended ({rec['status']})")

    def reconcile(self) -> None:
        """The whole rule from RUN_DIR alone: every scored point joins the front (what the mode does not keep is
        removed), every ended trial loses its checkpoint and the models of points it never had scored."""
        records = self.rd.trial_records()
        for rec in records:
            self.algorithm_of[rec["trial_id"]] = str(rec["algorithm"])
            for step, metrics in self.rd.point_metrics(rec["trial_id"]).items():
                if (rec["algorithm"], rec["trial_id"], step) not in self.front:
                    self.front.add(rec["algorithm"], rec["trial_id"], step, metrics)
        if self.mode == "none":
            for points in self.front.points.values():
                for key in points:
                    self._remove_model(key, "scored (keep_models: none)")
        elif self.mode == "front":
            for algorithm in list(self.front.points):
                self._apply_front(algorithm, latest=None)
        ended = {rec["trial_id"]: rec["status"] for rec in records if rec.get("status") in ENDED}
        for trial_id in ended:
            self.trial_ended(trial_id)
        if self.mode != "all":
            for trial_id, step in self.rd.models_on_disk():
                if trial_id in ended and (self.algorithm_of[trial_id], trial_id, step) not in self.front:
                    self._remove_model((trial_id, step), f"never scored: the trial ended ({ended[trial_id]}) first")

    def _apply_front(self, algorithm: str, latest: Key | None) -> None:
        keep = self.front.front(algorithm)
        for key, (_, feasible) in self.front.points[algorithm].items():
            if key in keep:
                continue
            if not feasible:
                why = "below the utility floor"
            elif key == latest:
                why = "scored off the front"
            elif latest is not None and latest in keep:
                why = f"dominated by {latest[0]}@{latest[1]}"
            else:
                why = "off the front"
            self._remove_model(key, why)

    # -- removal --------------------------------------------------------------------------------
    def _remove_model(self, key: Key, why: str) -> None:
        trial_id, step = key
        self._remove(self.rd.point_model(trial_id, step), {"trial_id": trial_id, "step": step, "what": "model"}, why)

    def _remove(self, path: Path, record: Mapping[str, Any], why: str) -> None:
        if not path.exists():
            return
        size = disk_bytes(path)
        try:
            shutil.rmtree(path)
        except OSError as e:  # never fails the sweep: the next reconcile tries again
            self.log(f"[sweep] could not remove {path}: {e}")
            return
        self.rd.record_removal({**record, "path": str(path.relative_to(self.rd.root)), "bytes": size,
                                "reason": why, "at": time.time()})
