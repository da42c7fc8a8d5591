"""[3] The sweep's view: Tune's events -> the live table (or progress lines) and one line per trial that ends.

Input:  Tune's callback events (trial start, result, completion, error, recovery, the experiment's end) and
        RUN_DIR's trial records (what an earlier session of a resumed sweep finished).
Output: on the console (:mod:`lume_ray.console`): per algorithm trials done / running / failed and the best
        point so far on each objective, elapsed time and ETA; a line per trial that ends; a closing line.

Tune pickles a run's callbacks with the experiment and a restored Tuner brings those back, so the sweep gives
Tune a stateless :class:`Relay` and registers the live view (and the trackers) with :func:`relay` each time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from lume_ray.console import current, say
from lume_ray.evaluate.metrics import direction
from lume_ray.status import fmt_metric, fmt_param

_LISTENERS: list[Callback] = []


class Relay(Callback):
    """Forwards Tune's events to the callbacks the running sweep registered with :func:`relay`.

    Tune pickles the run config's callbacks into the experiment directory, and ``Tuner.restore`` brings back
    those pickled objects (it takes no new callbacks). This relay holds no state, so a resumed sweep gets the
    live view and the tracking of the command that resumed it, not of the one that started it."""
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.setup(stop=stop, num_samples=num_samples, total_num_samples=total_num_samples, **info)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_start(iteration=iteration, trials=trials, trial=trial, **info)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_result(iteration=iteration, trials=trials, trial=trial, result=result, **info)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_complete(iteration=iteration, trials=trials, trial=trial, **info)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_recover(iteration=iteration, trials=trials, trial=trial, **info)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_error(iteration=iteration, trials=trials, trial=trial, **info)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_experiment_end(trials=trials, **info)


@contextmanager
def relay(callbacks: Sequence[Callback]) -> Iterator[Relay]:
    """Register ``callbacks`` for the ``with`` block; yields the :class:`Relay` to give Tune."""
    _LISTENERS[:] = list(callbacks)
    try:
        yield Relay()
    finally:
        _LISTENERS.clear()


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class _Algo:
    planned: int = 0
    done: int = 0
    failed: int = 0
    stopped: int = 0  # of done: ended by early stopping at a rung
    running: set[str] = field(default_factory=set)
    best: dict[str, tuple[float, int, str]] = field(default_factory=dict)  # objective -> (value, step, trial)


class SweepView(Callback):
    """The sweep's console: per algorithm trials done / running / failed and the best point so far on each
    objective, elapsed time and ETA (a live table on a terminal; a progress line after each trial elsewhere),
    and one line per trial that ends."""
    def __init__(self, exp: Any, run_dir: Any, planned: Mapping[str, int],
                 log: Callable[[str], None] = say) -> None:
        self.name = exp.name
        self.objectives = list(exp.sweep.objectives)
        self.sign = {o: 1.0 if direction(o) == "max" else -1.0 for o in self.objectives}
        self.rd = run_dir
        self.log = log
        self.algos = {a: _Algo(planned=int(planned.get(a, 0))) for a in exp.selected_algorithms()}
        self.t0 = time.time()
        self.ended_here = 0  # trials that ended in this session (the ETA's rate)
        self.last_ok: dict[str, dict[str, Any]] = {}

    # -- state ----------------------------------------------------------------------------------
    def _algo(self, trial: Any) -> tuple[str, _Algo]:
        name = str(trial.config.get("algorithm", "?"))
        return name, self.algos.setdefault(name, _Algo())

    def _offer(self, algo: _Algo, metrics: Mapping[str, Any], step: int, trial_id: str) -> None:
        for o in self.objectives:
            v = metrics.get(o)
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v and (
                    o not in algo.best or self.sign[o] * v > self.sign[o] * algo.best[o][0]):
                algo.best[o] = (float(v), step, trial_id)

    @property
    def planned(self) -> int:
        return sum(a.planned for a in self.algos.values())

    @property
    def done(self) -> int:
        return sum(a.done + a.failed for a in self.algos.values())

    def eta(self) -> float | None:
        left = self.planned - self.done
        if not self.ended_here or left <= 0:
            return None
        return (time.time() - self.t0) / self.ended_here * left

    # -- Tune's events --------------------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        """Counts what an earlier session of this sweep finished (a resume), then starts the live view."""
        self.t0 = time.time()
        for rec in self.rd.trial_records():
            algo = self.algos.setdefault(rec["algorithm"], _Algo())
            if rec.get("status") == "failed":
                algo.failed += 1
            elif rec.get("status") != "running":
                algo.done += 1
                algo.stopped += rec.get("status") == "stopped"
            for step, metrics in self.rd.point_metrics(rec["trial_id"]).items():
                self._offer(algo, metrics, step, rec["trial_id"])
        con = current()
        if con is not None:
            con.show(self.render)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._algo(trial)[1].running.add(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        _, algo = self._algo(trial)
        algo.running.add(trial.trial_id)
        if result.get("status") == "ok":
            self.last_ok[trial.trial_id] = dict(result)
            self._offer(algo, result, int(result.get("step", 0)), trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        name, algo = self._algo(trial)
        algo.running.discard(trial.trial_id)
        algo.done += 1
        self.ended_here += 1
        last = trial.last_result or {}
        status = str(last.get("status") or "completed")
        status = "completed" if status == "ok" else status
        rec = self.rd.read_trial(trial.trial_id) or {}
        if rec.get("status") == "stopped":  # early stopping's verdict (Tune ends the trial on its last result)
            status = "stopped"
            algo.stopped += 1
        point = self.last_ok.get(trial.trial_id)
        if status == "completed" and point is not None:
            values = " ".join(f"{o} {fmt_metric(point[o])}" for o in self.objectives if o in point)
            what = f"{values} at step {point.get('step')}"
        elif status == "stopped":
            what = str(rec.get("error") or "")
        else:
            what = (rec.get("error") or last.get("error") or "") + (f" at step {last['step']}" if "step" in last else "")
        wall = last.get("wall_s")
        self.log(f"[{name}] trial {trial.trial_id} {status}: {what.strip()} ({self._hp(trial)})"
                 + (f", {wall:.0f} s" if isinstance(wall, int | float) else ""))
        self._progress_line()

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        name, _ = self._algo(trial)
        self.log(f"[{name}] trial {trial.trial_id} failed ({self._reason(trial)}); retrying from its last "
                 "checkpoint")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        name, algo = self._algo(trial)
        algo.running.discard(trial.trial_id)
        algo.failed += 1
        self.ended_here += 1
        con = current()
        where = getattr(trial, "error_file", None) or (con.log_path if con is not None else self.rd.logs)
        self.log(f"[{name}] trial {trial.trial_id} FAILED: {self._reason(trial)} ({self._hp(trial)}); log: {where}")
        self._progress_line()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        con = current()
        if con is not None:
            con.show(None)
        failed = sum(a.failed for a in self.algos.values())
        stopped = sum(a.stopped for a in self.algos.values())
        self.log(f"[sweep] {self.done}/{self.planned} trials ended ({failed} failed"
                 + (f", {stopped} stopped early at a rung" if stopped else "") + f") in "
                 f"{duration(time.time() - self.t0)}")

    # -- lines ----------------------------------------------------------------------------------
    def _reason(self, trial: Any) -> str:
        rec = self.rd.read_trial(trial.trial_id) or {}
        if rec.get("error"):
            return str(rec["error"])
        path = getattr(trial, "error_file", None)
        if path and Path(path).is_file():
            lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "unknown error"
        return "unknown error"

    @staticmethod
    def _hp(trial: Any) -> str:
        return ", ".join(f"{k} {fmt_param(v)}" for k, v in trial.config.items() if k not in ("algorithm", "origin"))

    def _progress_line(self) -> None:
        con = current()
        if con is not None and con.is_terminal:
            return  # the live table says it
        running = sum(len(a.running) for a in self.algos.values())
        failed = sum(a.failed for a in self.algos.values())
        per_algo = ", ".join(f"{n} {a.done + a.failed}/{a.planned}" for n, a in self.algos.items())
        eta = self.eta()
        self.log(f"[sweep] {self.done}/{self.planned} trials done ({per_algo}), {running} running, {failed} failed; "
                 f"{duration(time.time() - self.t0)} elapsed" + (f", ETA ~{duration(eta)}" if eta else ""))

    def render(self) -> Any:
        """The live table."""
        from rich.table import Table

        eta = self.eta()
        title = (f"sweep {self.name}: {self.done}/{self.planned} trials, {duration(time.time() - self.t0)} elapsed"
                 + (f", ETA ~{duration(eta)}" if eta else "") + "; best so far: value @step")
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for col in ("algorithm", "done", "running", "failed", "planned"):
            table.add_column(col, justify="left" if col == "algorithm" else "right")
        for o in self.objectives:
            table.add_column(o, justify="right", overflow="fold")
        for name, a in self.algos.items():
            best = [f"{fmt_metric(a.best[o][0])} @{a.best[o][1]}" if o in a.best else "-" for o in self.objectives]
            table.add_row(name, str(a.done), str(len(a.running)), str(a.failed), str(a.planned), *best)
        return table
