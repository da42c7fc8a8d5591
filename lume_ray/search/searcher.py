"""[3] The searcher: one Optuna study per algorithm, behind one Ray Tune ``Searcher`` (ask/tell).

Input:  the experiment (spaces, sampler, budget, objectives with their directions from the metric registry);
        from Tune: requests for a trial's config, and each evaluated point a trial reports.
Output: trial configs ``{"algorithm", "origin" (design | sampler), "lr", <algorithm parameters>}``, handed out across all algorithms
        (so trials of different algorithms share the cluster), and the studies, which learn from every point.

Why a Searcher of our own: Tune's OptunaSearch tells Optuna only a trial's last result (multi-objective
intermediate results are dropped), so a trial that passes through 5 step counts teaches the optimizer one.
Here ``steps`` is a dimension of every observation: each evaluated point becomes a completed Optuna trial
``{lr, ..., steps: s} -> objectives`` (``study.add_trial``). The trial the sampler proposes
(``study.ask``, with ``steps`` in its space so GP's q-batch acquisition sees it as pending) trains to the
largest step count; when it ends it is closed as FAIL (user attr ``role: proposal``), so only the points
count as observations. Before the sampler takes over, each study is seeded with an initial design (box
corners + centre, :func:`lume_ray.search.space.initial_design`) through ``enqueue_trial``. A proposal that repeats
a setting already trained (or training) is moved to the nearest setting not yet explored
(:func:`lume_ray.search.space.away_from_seen`): a second run would retrace the same trajectory.

Only public extension points: ``ray.tune.search.Searcher`` (suggest / on_trial_result / on_trial_complete /
save / restore) and Optuna's ask/tell, ``enqueue_trial``, ``add_trial``, ``create_trial``.

Its saved state (Tune's ``searcher-state-*.pkl``, whatever the name says) is JSON, never a pickle: the counters,
the trials handed out, and each study's trials as data (state, parameters with their distributions in Optuna's
JSON form, values, attributes). :meth:`StudySearcher.restore` builds every study again from the experiment (the
same seeded sampler) and adds those trials back in their order, so a restored study holds the same trials under
the same numbers. (Tune's own experiment state is pickled by Tune: see README, Security.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ray.tune.search import Searcher

from lume_ray.config import Experiment
from lume_ray.evaluate.metrics import direction
from lume_ray.search import space as sp
from lume_ray.search.samplers import SamplerContext, make_sampler

ROLE_PROPOSAL, ROLE_POINT = "proposal", "point"
STATE_FORMAT = "lume-ray searcher state 1"  # the JSON's "format": what restore() reads
logger = logging.getLogger(__name__)


@dataclass
class _Assigned:
    algorithm: str
    number: int  # the Optuna trial number of the proposal
    params: dict[str, Any]
    origin: str  # "design" or "sampler"
    told_steps: set[int] = field(default_factory=set)


class StudySearcher(Searcher):
    """Hands out trials across every algorithm's Optuna study and tells each study every evaluated point."""

    def __init__(self, exp: Experiment, *, warm_start: Iterable[Mapping[str, Any]] = (), log: Any = None) -> None:
        super().__init__(metric=None, mode=None)
        import optuna  # heavy: optuna

        self.exp = exp
        self.objectives = list(exp.sweep.objectives)
        directions: list[Literal["minimize", "maximize"]] = [
            "maximize" if direction(o) == "max" else "minimize" for o in self.objectives]
        self.studies: dict[str, Any] = {}
        self.budget: dict[str, int] = {}
        self.design: dict[str, int] = {}
        self.started: dict[str, int] = {}
        self.assigned: dict[str, _Assigned] = {}
        grid = exp.sweep.sampler == "grid"
        algorithms = exp.selected_algorithms()
        for algo in algorithms:
            space = exp.algorithms[algo]
            searchable = list(sp.searchable(space))
            budget = sp.grid_size(space) if grid else exp.sweep.num_samples if searchable else 1
            seed = exp.seed + sorted(exp.algorithms).index(algo)  # a distinct, reproducible stream per algorithm
            sampler = make_sampler(exp.sweep.sampler, SamplerContext(seed=seed, budget=budget, grid=sp.grid_of(space)))
            study = optuna.create_study(study_name=f"{exp.name}-{algo}", directions=directions, sampler=sampler)
            self.studies[algo], self.budget[algo] = study, budget
            self.started[algo] = 0
        self.warm = self._warm_start(warm_start)
        held: dict[str, int] = {}
        for algo in algorithms:
            space = exp.algorithms[algo]
            size = 0 if grid else sp.design_size(len(sp.searchable(space)), self.budget[algo], exp.sweep.initial_design)
            design = sp.initial_design(space, size, exp.sweep.initial_design_inset)
            # a design point a warm start already holds would retrace a trajectory it has (the same box: its corners)
            seen = self._seen(algo)
            design = [p for p in design if not sp.repeats(space, p, seen)]
            for params in design:
                self.studies[algo].enqueue_trial(params, user_attrs={"origin": "design"})
            self.design[algo], held[algo] = len(design), size - len(design)
        if log is not None:
            inset = exp.sweep.initial_design_inset
            corners = f"corners {inset:g} inside the box" if inset else "corners"
            for algo in algorithms:
                log(f"[search {algo}] {self.budget[algo]} trials, sampler {exp.sweep.sampler}, initial design "
                    f"{self.design[algo]} point(s) ({corners} + centre of {', '.join(self._searched_names(algo)) or '-'})"
                    + (f", warm start {self.warm.get(algo, 0)} point(s)" if self.warm.get(algo) else "")
                    + (f" holding {held[algo]} design point(s)" if held[algo] else ""))

    # -- what Tune calls --------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any) -> bool:
        return True  # the objectives come from the experiment, not from Tune

    def total_trials(self) -> int:
        return sum(self.budget.values())

    def _next_algorithm(self) -> str | None:
        """The algorithm with the most budget left relative to its size (ties: experiment order), so every
        algorithm progresses at the same pace and none waits for another to finish."""
        open_ = [a for a in self.studies if self.started[a] < self.budget[a]]
        if not open_:
            return None
        return min(open_, key=lambda a: (self.started[a] / self.budget[a], list(self.studies).index(a)))

    def suggest(self, trial_id: str) -> dict[str, Any] | None:  # or Searcher.FINISHED
        if trial_id in self.assigned:  # a restored trial asks again
            a = self.assigned[trial_id]
            return {"algorithm": a.algorithm, "origin": a.origin, **a.params}
        algo = self._next_algorithm()
        if algo is None:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's documented sentinel
        space = self.exp.algorithms[algo]
        grid = self.exp.sweep.sampler == "grid"
        dists = sp.distributions(space, grid=grid)
        if not grid:  # the grid sampler samples only its grid; the others see steps as the pending dimension
            dists["steps"] = sp.steps_distribution(space, self.exp.eval_steps(algo))
        trial = self.studies[algo].ask(dists)
        trial.set_user_attr("role", ROLE_PROPOSAL)
        origin = "design" if trial.user_attrs.get("origin") == "design" else "sampler"
        params = {k: v for k, v in trial.params.items() if k != "steps"}
        if origin == "sampler" and not grid and sp.repeats(space, params, self._seen(algo)):
            trial = self._move(algo, trial, params, dists)
            params = {k: v for k, v in trial.params.items() if k != "steps"}
        trial.set_user_attr("tune_trial", trial_id)
        self.assigned[trial_id] = _Assigned(algo, trial.number, params, origin)
        self.started[algo] += 1
        return {"algorithm": algo, "origin": origin, **params}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Every evaluated point a trial reports becomes one observation of its study (once per step)."""
        a = self.assigned.get(trial_id)
        step = result.get("step")
        if a is None or step is None or result.get("status") in ("diverged", "failed"):
            return
        step = int(step)
        if step in a.told_steps:  # a retried trial reports its earlier points again
            return
        values = [result.get(o) for o in self.objectives]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return
        self._tell_point(a.algorithm, {**a.params, "steps": step}, [float(v) for v in values],  # type: ignore[arg-type]
                         {"tune_trial": trial_id, "origin": a.origin})
        a.told_steps.add(step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        import optuna  # heavy: optuna

        a = self.assigned.get(trial_id)
        if a is None:
            return
        if result:
            self.on_trial_result(trial_id, result)
        study = self.studies[a.algorithm]
        if study.trials[a.number].state == optuna.trial.TrialState.RUNNING:
            # A proposal is not an observation (its points are): FAIL keeps it out of every sampler's model.
            # GridSampler calls study.stop() once its grid is done: outside optimize() that raises, after the state
            # is stored (optuna's _tell stores it in a `finally`).
            with contextlib.suppress(RuntimeError):
                study.tell(a.number, state=optuna.trial.TrialState.FAIL)

    # -- repeats ----------------------------------------------------------------------------------

    def _seen(self, algo: str) -> list[dict[str, Any]]:
        """Every setting of ``algo`` whose trajectory is trained or training: handed-out trials and told points
        (a warm start's included)."""
        seen = [a.params for a in self.assigned.values() if a.algorithm == algo]
        return seen + [{k: v for k, v in t.params.items() if k != "steps"} for t in self.points(algo)]

    def _move(self, algo: str, trial: Any, params: dict[str, Any], dists: dict[str, Any]) -> Any:
        """The sampler proposed a setting whose trajectory is already trained or training (measured: GP re-proposed
        a box corner it had seen, at another step count, in 3 of 16 trials on a space whose front sits on the box's
        edge); a second run of it would only retrace the same points. Close that proposal (FAIL, as every proposal
        ends) and run the nearest setting not yet explored instead, enqueued so the study records what runs."""
        import optuna  # heavy: optuna

        seed = (self.exp.seed + sorted(self.exp.algorithms).index(algo)) * 100_003 + trial.number
        moved = sp.away_from_seen(self.exp.algorithms[algo], params, self._seen(algo), seed=seed)
        study = self.studies[algo]
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(moved, user_attrs={"origin": "moved", "moved_from": {k: _plain(v) for k, v in params.items()}})
        new = study.ask(dists)
        new.set_user_attr("role", ROLE_PROPOSAL)
        logger.info("[search %s] the sampler proposed %s again (a trajectory already trained): moved to %s",
                    algo, params, moved)
        return new

    # -- observations -----------------------------------------------------------------------------

    def _searched_names(self, algo: str) -> list[str]:
        return list(sp.searchable(self.exp.algorithms[algo]))

    def _tell_point(self, algo: str, params: dict[str, Any], values: list[float], attrs: dict[str, Any]) -> bool:
        import optuna  # heavy: optuna

        space = self.exp.algorithms[algo]
        dists = sp.distributions(space, grid=self.exp.sweep.sampler == "grid")
        dists["steps"] = sp.steps_distribution(space, self.exp.eval_steps(algo))
        try:
            trial = optuna.trial.create_trial(params=params, distributions=dists, values=values,
                                              user_attrs={"role": ROLE_POINT, **attrs})
        except ValueError:  # a value outside this study's space (a warm start from another range or other steps)
            return False
        self.studies[algo].add_trial(trial)
        return True

    def _warm_start(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
        """Tell each study the earlier run's points of the same algorithm and parameter names."""
        told: dict[str, int] = {}
        for r in rows:
            algo = str(r.get("algorithm"))
            if algo not in self.studies or r.get("status") != "ok":
                continue
            names = list(self.exp.algorithms[algo].searched())
            params = {n: r.get(f"hp/{n}") for n in names}
            values = [r.get(o) for o in self.objectives]
            if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in params.values()):
                continue
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                continue
            params = {n: (_plain(v)) for n, v in params.items()}
            if self._tell_point(algo, {**params, "steps": int(r["step"])}, [float(v) for v in values],  # type: ignore[arg-type]
                                {"origin": "warm-start", "tune_trial": str(r.get("trial_id", ""))}):
                told[algo] = told.get(algo, 0) + 1
        return told

    # -- what the report and tests read -------------------------------------------------------------

    def points(self, algo: str) -> list[Any]:
        """The completed observations (evaluated points) of an algorithm's study."""
        return [t for t in self.studies[algo].trials if t.user_attrs.get("role") == ROLE_POINT]

    # -- resume -------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a resumed sweep needs, as JSON-ready data (no pickle: see the module docstring)."""
        from optuna.distributions import distribution_to_json  # heavy: optuna

        return {
            "format": STATE_FORMAT, "budget": self.budget, "design": self.design, "started": self.started,
            "warm": self.warm,
            "assigned": {tid: {"algorithm": a.algorithm, "number": a.number, "params": _plain_dict(a.params),
                               "origin": a.origin, "told_steps": sorted(a.told_steps)}
                         for tid, a in self.assigned.items()},
            "studies": {algo: [{
                "number": t.number, "state": t.state.name, "params": _plain_dict(t.params),
                "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
                "values": t.values, "user_attrs": t.user_attrs, "system_attrs": t.system_attrs,
            } for t in study.trials] for algo, study in self.studies.items()},
        }

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump(self.state(), f, allow_nan=False)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            try:
                state = json.load(f)
            except (UnicodeDecodeError, ValueError):
                raise ValueError(f"{checkpoint_path}: not a lume-ray searcher state (JSON); a run directory from an "
                                 "older lume-ray cannot be resumed: start the sweep again, or --warm-start from it") \
                    from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{checkpoint_path}: not a lume-ray searcher state ({STATE_FORMAT!r})")
        self.load_state(state)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """The searcher as :meth:`state` describes it: fresh studies (the experiment's seeded samplers) given the
        saved trials again, in their order and under their numbers."""
        import optuna  # heavy: optuna
        from optuna.distributions import json_to_distribution

        known = {algo: study for algo, study in self.studies.items()}
        self.studies = {}
        for algo, trials in state["studies"].items():
            if algo not in known:
                raise ValueError(f"the saved searcher has algorithm {algo!r}, the experiment does not "
                                 f"(valid: {', '.join(known)})")
            old = known[algo]
            study = optuna.create_study(study_name=old.study_name, directions=old.directions, sampler=old.sampler)
            for t in trials:
                trial = optuna.trial.create_trial(
                    state=optuna.trial.TrialState[t["state"]], params=t["params"],
                    distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
                    values=t["values"], user_attrs=t["user_attrs"], system_attrs=t["system_attrs"])
                study.add_trial(trial)
                if study.trials[-1].number != t["number"]:
                    raise ValueError(f"searcher state: trial {t['number']} of {algo} restored as "
                                     f"{study.trials[-1].number}")
            self.studies[algo] = study
        self.budget, self.design = dict(state["budget"]), dict(state["design"])
        self.started, self.warm = dict(state["started"]), dict(state["warm"])
        self.assigned = {tid: _Assigned(a["algorithm"], int(a["number"]), dict(a["params"]), a["origin"],
                                        set(a["told_steps"])) for tid, a in state["assigned"].items()}


def _plain_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in values.items()}


def _plain(value: Any) -> Any:
    """numpy scalars from a parquet file -> Python numbers (Optuna's distributions compare them)."""
    if hasattr(value, "item"):
        return value.item()
    return value
