"""The experiment (a study): data -> target -> one sweep over every algorithm's space -> report, as one frozen,
validated :class:`Experiment`.

Input:  the whole experiment mapping (its sections: :mod:`lume_ray.config.sections`; its search spaces:
        :mod:`lume_ray.config.space`).
Output: :class:`Experiment` (+ :class:`SweepConfig`, :class:`EarlyStopConfig`, :class:`TrackingConfig`), with the
        values derived from it in one place each (evaluation steps, paths, each trial's :class:`UnlearnJob`).
        Sampler and objective names are checked against their registries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lume_ray.config.base import Section, located
from lume_ray.config.job import UnlearnJob
from lume_ray.config.sections import DataConfig, EvalConfig, TargetConfig, TrainConfig
from lume_ray.config.space import AlgorithmSpace, _algorithm_space
from lume_ray.evaluate.metrics import direction
from lume_ray.search.samplers import SAMPLERS

KEEP_MODELS = ("front", "none", "all")  # sweep.keep_models (lume_ray.search.keep)
MAX_RUNGS = 16  # an ASHA ladder longer than this is a typo (a factor near 1), not a plan
# An experiment's name is a directory name (runs/<name>) and part of ids: one path component, no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class EarlyStopConfig(Section):
    """Multi-objective successive halving: at each rung, stop a trial whose point is outside the kept
    fraction of the points seen at that rung (by Pareto rank, ties by hypervolume contribution).

    The rungs are given as steps (``rungs``) or as ASHA's geometric ladder (Tune's ASHAScheduler names):
    ``grace_period`` is the first rung and each next one is 1/keep (``reduction_factor``) times the last, rounded
    half up, below the longest trajectory; the experiment fills ``rungs`` from them. ``reduction_factor: 3`` is
    ``keep: 1/3``; once validated the config holds ``keep`` (and experiment.yaml the rungs and keep)."""

    rungs: tuple[int, ...] = Field((), description="steps at which trials are compared; or give grace_period")
    grace_period: int | None = Field(None, ge=1, description="the first rung when rungs is not given; the next "
                                     "ones are 1/keep times the last, below the longest trajectory")
    keep: float = Field(1 / 3, gt=0, le=1, description="fraction kept at each rung (or reduction_factor)")
    reduction_factor: float | None = Field(None, gt=1, description="ASHA's eta: keep 1/reduction_factor at each "
                                           "rung; with grace_period, also the ratio of one rung to the next")
    keep_front: bool = Field(
        True, description="also keep every trial whose point is on the rung's front (non-dominated there): "
        "fewer steps saved, far fewer final-front points lost (benchmarks/bench_sweep.py replays both rules); "
        "false: the kept fraction alone")
    pipelined: bool | Literal["auto"] = Field(
        "auto", description="true: score a rung's point while the job trains on; false: the job waits at each rung "
        "(alive, its workers and model loaded) until its point is scored and the trial judged; auto: true when the "
        "job trains on GPUs (idle GPUs cost more than steps past a rung), false on CPU (benchmarks/bench_sweep.py: "
        "where scoring a point outlasts training to the next rung, pipelining saves no steps)")

    @field_validator("pipelined", mode="before")
    @classmethod
    def _pipelined(cls, value: Any) -> Any:
        if not isinstance(value, bool) and value != "auto":
            raise ValueError(f"expected true, false or auto, got {value!r}")
        return value

    def resolved_pipelined(self, train: TrainConfig) -> bool:
        """``pipelined`` with "auto" resolved from the job's hardware."""
        return train.use_gpu if self.pipelined == "auto" else self.pipelined

    @field_validator("keep", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> Any:
        if isinstance(value, str) and "/" in value:
            num, _, den = value.partition("/")
            try:
                return float(num) / float(den)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"expected a fraction in (0, 1] such as 1/3, got {value!r}") from None
        return value

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(r < 1 for r in value) or list(value) != sorted(set(value)):
            raise ValueError(f"expected increasing steps >= 1, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_way_each(self) -> EarlyStopConfig:
        if not self.rungs and self.grace_period is None:
            raise located(["rungs"], "give the rungs (steps at which trials are compared), or grace_period (the "
                          "first rung; the next ones 1/keep, i.e. reduction_factor, times the last)")
        if self.rungs and self.grace_period is not None:
            raise located(["grace_period"], f"give rungs ({list(self.rungs)}) or grace_period "
                          f"({self.grace_period}), not both", self.grace_period)
        if self.reduction_factor is not None:
            eta = self.reduction_factor
            if "keep" in self.model_fields_set and not math.isclose(self.keep, 1 / eta, rel_tol=1e-6):
                raise located(["keep"], f"{self.keep:g} disagrees with reduction_factor {eta:g} (keeps "
                              f"1/{eta:g} = {1 / eta:g}): give one of them", self.keep)
            object.__setattr__(self, "keep", 1 / eta)  # one way to say it from here on
            object.__setattr__(self, "reduction_factor", None)
        if self.grace_period is not None and self.keep >= 1:
            raise located(["keep"], "1 keeps every trial, so a grace_period has no next rung: give keep < 1 or "
                          "reduction_factor > 1", self.keep)
        return self

    def ladder(self, grace_period: int, longest: int) -> tuple[int, ...]:
        """ASHA's rungs grace_period x (1/keep)^k, rounded half up, below ``longest``. More than :data:`MAX_RUNGS`
        is an error (each rung is an evaluation of every trial that reaches it)."""
        eta, rung, steps = 1 / self.keep, float(grace_period), set()
        while math.floor(rung + 0.5) < longest:
            steps.add(math.floor(rung + 0.5))
            if len(steps) > MAX_RUNGS:
                raise located(["sweep", "early_stop"], f"keep {self.keep:.6g} (reduction_factor {eta:.6g}) with "
                              f"grace_period {grace_period} makes more than {MAX_RUNGS} rungs below {longest} "
                              "steps: raise grace_period or the factor (lower keep)", self.model_dump())
            rung *= eta
        return tuple(sorted(steps))


class SweepConfig(Section):
    sampler: str = Field("gp", description=f"{' | '.join(SAMPLERS.names())} (registered samplers)")
    num_samples: int = Field(8, ge=1, description="trials per algorithm (a grid runs its full grid)")
    max_concurrent: int | None = Field(None, ge=1, description="trials at once (default: what the cluster fits)")
    eval_points: int = Field(2, ge=1, description="evaluations per trial, evenly spaced over its trajectory")
    eval_steps: tuple[int, ...] | None = Field(None, description="explicit evaluation steps (overrides eval_points)")
    objectives: tuple[str, ...] = Field(("forget_efficacy", "retain_score", "utility"), min_length=1,
                                        description="registered metrics (directions from the registry)")
    initial_design: Literal["auto", "off"] | int = Field(
        "auto", description="box corners + centre enqueued first: auto (sized from budget and parameters), off, "
        "or a number of points; a point a --warm-start already holds is left out")
    initial_design_inset: float = Field(
        0.0, ge=0.0, lt=0.5, description="how far inside the box the design's corners sit, as a fraction of each "
        "parameter's range (log scale where the range is log): 0 = the box's corners, 0.25 = the corners of its "
        "middle half")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (resumed from its checkpoint)")
    algorithms: tuple[str, ...] | None = Field(None, description="subset of the experiment's algorithms to run")
    keep_models: Literal["front", "none", "all"] = Field(
        "front", description="which evaluation points keep their model directory: front (those on their "
        "algorithm's current Pareto front; a point is deleted once scored off the front, or once a later point "
        "dominates it), none (deleted once scored), all; true / false mean all / none")
    early_stop: EarlyStopConfig | None = None
    report: bool = Field(True, description="write RUN_DIR/report at the end")

    @field_validator("keep_models", mode="before")
    @classmethod
    def _keep_models(cls, value: Any) -> Any:
        if isinstance(value, bool):  # the older form: keep_models: true / false
            return "all" if value else "none"
        if value not in KEEP_MODELS:
            raise ValueError(f"expected one of {', '.join(KEEP_MODELS)} (or true = all, false = none), got {value!r}")
        return value

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, value: str) -> str:
        SAMPLERS.get(value)  # names the registered ones
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            direction(name)
        if len(set(value)) != len(value):
            raise ValueError(f"objectives repeat a name: {list(value)}")
        return value

    @field_validator("eval_steps")
    @classmethod
    def _eval_steps(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or any(s < 1 for s in value)):
            raise ValueError(f"expected a non-empty list of steps >= 1, got {value}")
        return None if value is None else tuple(sorted(set(value)))

    @field_validator("initial_design")
    @classmethod
    def _initial(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"expected auto, off or a number >= 0, got {value}")
        return value


class MlflowConfig(Section):
    uri: str | None = Field(None, description="tracking URI (default: a local store under RUN_DIR/mlruns)")
    experiment: str | None = Field(None, description="MLflow experiment name (default: the study's name)")


class TrackingConfig(Section):
    mlflow: MlflowConfig | None = None


class Experiment(Section):
    """A study: data -> target -> one sweep over every algorithm's space -> report."""

    name: str = Field(..., min_length=1, description="letters, digits, '.', '_', '-' (not starting with '.'); "
                      "the default RUN_DIR is runs/<name>")
    seed: int = Field(0, ge=0)
    output_dir: str = Field("", description="RUN_DIR (default: runs/<name>); paths may use {output_dir}")
    data: DataConfig = DataConfig()
    target: TargetConfig = TargetConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    sweep: SweepConfig = SweepConfig()
    tracking: TrackingConfig = TrackingConfig()
    plugins: tuple[str, ...] = Field(
        (), description="the user's own modules: .py files or package directories (relative to the experiment file) "
        "or importable module names, imported by the loader before anything is validated (lume_ray.plugins)")
    algorithms: dict[str, AlgorithmSpace] = Field(..., min_length=1)

    @field_validator("plugins")
    @classmethod
    def _plugins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from lume_ray.plugins import load_plugins  # heavy: torch

        load_plugins(value)  # the loader resolved and imported them already (relative to the experiment file)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_' and '-' only, not starting with '.' (the name "
                             "is a directory under runs/)")
        return value

    @field_validator("algorithms", mode="before")
    @classmethod
    def _spaces(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping) or not raw:
            from lume_ray.algorithms import ALGORITHMS  # heavy: torch

            raise ValueError(f"expected a mapping of algorithm name -> search space (valid: {', '.join(ALGORITHMS)})")
        return {algo: space if isinstance(space, AlgorithmSpace) else _algorithm_space(algo, space or {})
                for algo, space in raw.items()}

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if not self.output_dir:
            object.__setattr__(self, "output_dir", f"runs/{self.name}")
        out = Path(self.output_dir)
        if out.exists() and not out.is_dir():
            raise located(["output_dir"], f"{self.output_dir!r} exists and is not a directory", self.output_dir)
        sw = self.sweep
        for algo in sw.algorithms or ():
            if algo not in self.algorithms:
                raise located(["sweep", "algorithms"], f"{algo!r} has no search space here "
                              f"(valid: {', '.join(self.algorithms)})", list(sw.algorithms or ()))
        if sw.eval_steps is not None:  # each algorithm evaluates the steps within its trajectory; none: a typo
            longest = max(self.algorithms[a].steps.max for a in self.selected_algorithms())
            beyond = [s for s in sw.eval_steps if s > longest]
            if beyond:
                raise located(["sweep", "eval_steps"], f"{beyond[0]} is beyond every algorithm's steps "
                              f"(largest max: {longest})", beyond[0])
        if sw.early_stop is not None:
            longest = max(self.algorithms[a].steps.max for a in self.selected_algorithms())
            es = sw.early_stop
            if es.grace_period is not None:  # ASHA's ladder, resolved here once (experiment.yaml keeps the rungs)
                if es.grace_period >= longest:
                    raise located(["sweep", "early_stop", "grace_period"], f"{es.grace_period} is not before any "
                                  f"algorithm's last step (largest max: {longest})", es.grace_period)
                # A new config, not the given one changed (it may serve another experiment, of other lengths).
                es = es.model_copy(update={"rungs": es.ladder(es.grace_period, longest), "grace_period": None})
                object.__setattr__(self, "sweep", sw.model_copy(update={"early_stop": es}))
            if es.rungs[-1] > longest:
                raise located(["sweep", "early_stop", "rungs"], f"{es.rungs[-1]} is beyond every "
                              f"algorithm's steps (largest max: {longest})", list(es.rungs))
        return self

    # -- derived values, one place each ------------------------------------------------------

    def selected_algorithms(self) -> list[str]:
        return list(self.sweep.algorithms or self.algorithms)

    def eval_steps(self, algorithm: str) -> tuple[int, ...]:
        """The steps at which a trial of ``algorithm`` is evaluated (the last is always its max)."""
        steps = self.algorithms[algorithm].steps
        if steps.points is not None:
            points = steps.points
        elif self.sweep.eval_steps is not None:
            points = tuple(p for p in self.sweep.eval_steps if p <= steps.max)
        else:
            n = self.sweep.eval_points
            points = tuple(round(steps.max * k / n) for k in range(1, n + 1))
        if self.sweep.early_stop is not None:  # every rung is evaluated: the scheduler decides there
            points = (*points, *(r for r in self.sweep.early_stop.rungs if r <= steps.max))
        return tuple(sorted({p for p in points if p >= 1} | {steps.max}))

    def path(self, text: str) -> str:
        """An experiment path: ``{output_dir}`` substituted; made absolute when it exists here (trials run in
        directories of their own); anything else (a hub id such as ``allenai/OLMo-1B-hf``) is unchanged."""
        text = text.replace("{output_dir}", self.output_dir)
        return str(Path(text).resolve()) if Path(text).exists() else text

    def resolved(self) -> Experiment:
        """The experiment with an absolute output_dir (trials run in directories of their own)."""
        return self.model_copy(update={"output_dir": str(Path(self.output_dir).resolve())})

    def unlearn_job(self, algorithm: str, hp: Mapping[str, Any], out: str | Path, steps: int | None = None) -> UnlearnJob:
        """The unlearning job of one trial: ``hp`` holds lr and the algorithm's parameters. With early stopping not
        pipelined, the job waits at each rung before its last step until the trial has been judged there."""
        space = self.algorithms[algorithm]
        steps = steps or space.steps.max
        es = self.sweep.early_stop
        waits = () if es is None or es.resolved_pipelined(self.train) else tuple(r for r in es.rungs if r < steps)
        return UnlearnJob(
            model=self.path(self.target.model), data=self.path(self.data.path), algorithm=algorithm,
            params={k: v for k, v in hp.items() if k != "lr"}, lr=float(hp["lr"]), steps=steps,
            eval_steps=tuple(s for s in self.eval_steps(algorithm) if s <= steps), wait_steps=waits, out=str(out),
            seed=self.seed, train=self.train, trust_remote_code=self.target.trust_remote_code, plugins=self.plugins,
        )

    def dump(self) -> dict[str, Any]:
        """The resolved experiment as plain data (RUN_DIR/experiment.yaml)."""
        return self.model_dump(mode="json")
