"""Experiment config: an experiment YAML + ``--set`` overrides -> a frozen, validated :class:`Experiment`.

Input:  ``experiments/<name>.yaml`` (see experiments/quickstart.yaml for every key, with comments) and
        ``key.path=value`` overrides (values parsed as YAML: ``sweep.algorithms=[ga,npo]``).
Output: :class:`Experiment`, checked once here: unknown keys, unknown algorithms and unknown algorithm
        parameters fail at load with the valid choices, so a sweep never dies an hour in on a typo.

A search space is per algorithm: ``lr`` and ``steps`` (trainer parameters) plus the algorithm's own
parameters (``beta``, ``alpha``, ...; declared by each algorithm in :mod:`lume_ray.algorithms`).
Each is a distribution ``{loguniform: [lo, hi]}``, ``{uniform: [lo, hi]}``, ``{int: [lo, hi]}``,
``{choice: [a, b, ...]}`` or a plain value (fixed). ``grid: [...]`` beside a range gives the values a
grid search uses.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

SEARCHES = ("optuna", "random", "grid")
SAMPLERS = ("tpe", "nsga2")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
TRAINER_PARAMS = ("lr", "steps")


class ConfigError(ValueError):
    """An experiment file or override is invalid; the message names the file and key."""


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: a distribution to search, or a fixed value."""

    kind: str  # one of DISTRIBUTIONS, or "fixed"
    values: tuple[Any, ...]  # (lo, hi) for ranges, the options for choice, (value,) for fixed
    grid: tuple[Any, ...] | None = None

    def grid_values(self) -> tuple[Any, ...]:
        if self.grid is not None:
            return self.grid
        if self.kind in ("choice", "fixed"):
            return self.values
        if self.kind == "int":
            lo, hi = self.values
            return tuple(range(int(lo), int(hi) + 1))
        raise ConfigError(f"a grid search needs 'grid: [...]' values for a {self.kind} range {list(self.values)}")


@dataclass(frozen=True)
class SynthSpec:
    docs_per_task: int = 40
    seed: int = 0


@dataclass(frozen=True)
class BuildSpec:
    preset: str = "tiny"
    seed: int = 0
    epochs: int | None = None


@dataclass(frozen=True)
class DataSpec:
    path: str = "data"
    synth: SynthSpec | None = None  # generate path with `data synth` when it does not exist
    member: str | None = None  # default: DATA/member.jsonl, else the forget documents
    nonmember: str | None = None  # default: DATA/nonmember.jsonl
    utility: str | None = "auto"  # auto: DATA/utility.jsonl; "mmlu"; a path; null: no utility


@dataclass(frozen=True)
class TargetSpec:
    model: str = "target"
    build: BuildSpec | None = None  # build the embedded target at `model` when it does not exist
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TrainSpec:
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0
    zero: int = 0
    offload: bool = False
    precision: str = "auto"
    batch_size: int = 8
    max_length: int = 512
    lora: dict[str, Any] | None = None


@dataclass(frozen=True)
class EvalSpec:
    max_new_tokens: int = 256
    batch_size: int = 32
    workers: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    utility_floor: float = 0.75
    limit: int | None = None
    dtype: str = "float32"  # the challenge's scorer ran bfloat16 (GPU); float32 is exact on CPU


@dataclass(frozen=True)
class SweepSpec:
    search: str = "optuna"
    sampler: str = "tpe"
    num_samples: int = 8  # trials per algorithm
    max_concurrent: int | None = None  # None: as many as the cluster's free resources allow
    eval_points: int = 2  # evaluations per trial, evenly spaced over its steps
    objectives: tuple[str, ...] = ("forget_efficacy", "retain_score", "utility")
    max_failures: int = 1  # retries of a failed trial (resumed from its last checkpoint)
    algorithms: tuple[str, ...] | None = None  # subset of the experiment's algorithms to run
    keep_models: bool = False  # keep every evaluation point's model directory
    report: bool = True  # write RUN_DIR/report at the end


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: int
    data: DataSpec
    target: TargetSpec
    train: TrainSpec
    eval: EvalSpec
    sweep: SweepSpec
    algorithms: dict[str, dict[str, ParamSpec]]
    output_dir: str
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def selected_algorithms(self) -> list[str]:
        return list(self.sweep.algorithms or self.algorithms)


# ---------------------------------------------------------------------------------------------


def _build(cls: type, raw: Any, where: str) -> Any:
    """A dataclass from a mapping; unknown keys fail with the valid ones; nested dataclasses recurse."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known) - {"raw", "source"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(k for k in known if k not in ('raw', 'source'))})")
    kwargs = {}
    for name, value in raw.items():
        ftype = str(known[name].type)
        sub = {"SynthSpec | None": SynthSpec, "BuildSpec | None": BuildSpec}.get(ftype)
        if sub is not None and value is not None:
            value = _build(sub, value, f"{where}.{name}")
        elif ftype.startswith("tuple") and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    _check_types(obj, where)
    return obj


def _check_types(obj: Any, where: str) -> None:
    for f in fields(obj):
        value, ftype = getattr(obj, f.name), str(f.type)
        if value is None and "None" in ftype:
            continue
        expect: tuple[type, ...] | None = None
        if ftype.startswith("int"):
            expect = (int,)
        elif ftype.startswith("float"):
            expect = (int, float)
        elif ftype.startswith("str"):
            expect = (str,)
        elif ftype.startswith("bool"):
            expect = (bool,)
        if expect and (not isinstance(value, expect) or (bool not in expect and isinstance(value, bool))):
            raise ConfigError(f"{where}.{f.name}: expected {ftype}, got {value!r}")


def _num(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: take numeric strings as numbers."""
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            return value
    return value


def _param_spec(raw: Any, where: str) -> ParamSpec:
    if not isinstance(raw, dict):
        return ParamSpec("fixed", (_num(raw),))
    raw = {k: [_num(v) for v in vs] if isinstance(vs, list) else vs for k, vs in raw.items()}
    grid = raw.get("grid")
    dists = [k for k in raw if k != "grid"]
    if len(dists) != 1 or dists[0] not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: expected one of {', '.join(DISTRIBUTIONS)} (optionally with grid), got {sorted(raw)}")
    kind, values = dists[0], raw[dists[0]]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.{kind}: expected a non-empty list")
    if kind != "choice":
        if len(values) != 2 or not all(isinstance(v, int | float) for v in values) or values[0] > values[1]:
            raise ConfigError(f"{where}.{kind}: expected [low, high] numbers with low <= high, got {values}")
        if kind == "loguniform" and values[0] <= 0:
            raise ConfigError(f"{where}.loguniform: bounds must be > 0, got {values}")
    if grid is not None and (not isinstance(grid, list) or not grid):
        raise ConfigError(f"{where}.grid: expected a non-empty list")
    return ParamSpec(kind, tuple(values), tuple(grid) if grid is not None else None)


def _algorithms(raw: Any, where: str) -> dict[str, dict[str, ParamSpec]]:
    from lume_ray.algorithms import ALGORITHMS, algorithm_params

    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a mapping of algorithm name -> search space (valid: {', '.join(ALGORITHMS)})")
    spaces: dict[str, dict[str, ParamSpec]] = {}
    for algo, space in raw.items():
        if algo not in ALGORITHMS:
            raise ConfigError(f"{where}: unknown algorithm {algo!r} (valid: {', '.join(ALGORITHMS)})")
        space = space or {}
        if not isinstance(space, dict):
            raise ConfigError(f"{where}.{algo}: expected a mapping of parameter -> distribution")
        valid = list(TRAINER_PARAMS) + list(algorithm_params(algo))
        for name in space:
            if name not in valid:
                raise ConfigError(f"{where}.{algo}: unknown parameter {name!r} (valid: {', '.join(valid)})")
        for name in TRAINER_PARAMS:
            if name not in space:
                raise ConfigError(f"{where}.{algo}: missing {name!r} (every algorithm needs lr and steps)")
        spaces[algo] = {name: _param_spec(value, f"{where}.{algo}.{name}") for name, value in space.items()}
    return spaces


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, str]], source: str = "--set") -> dict[str, Any]:
    """``a.b.c=value`` overrides (values parsed as YAML) applied to a copy of the raw mapping."""
    out = copy.deepcopy(raw)
    for key, text in overrides:
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            raise ConfigError(f"{source} {key}={text}: value is not valid YAML") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {} if node.get(part) is None else node[part]
                if not isinstance(node[part], dict):
                    raise ConfigError(f"{source} {key}: {part!r} is not a mapping")
            node = node[part]
        node[parts[-1]] = value
    return out


TOP_KEYS = ("name", "seed", "data", "target", "train", "eval", "sweep", "algorithms", "output_dir")


def load_experiment(path: str | Path, overrides: list[tuple[str, str]] | None = None) -> Experiment:
    """Read, override and validate an experiment YAML (the only place experiment config is checked)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    return experiment_from_dict(raw, str(path))


def experiment_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Experiment:
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (valid: {', '.join(TOP_KEYS)})")
    for key in ("name", "algorithms"):
        if key not in raw:
            raise ConfigError(f"{source}: missing key {key!r}")
    exp = Experiment(
        name=str(raw["name"]),
        seed=int(raw.get("seed", 0)),
        data=_build(DataSpec, raw.get("data"), f"{source}: data"),
        target=_build(TargetSpec, raw.get("target"), f"{source}: target"),
        train=_build(TrainSpec, raw.get("train"), f"{source}: train"),
        eval=_build(EvalSpec, raw.get("eval"), f"{source}: eval"),
        sweep=_build(SweepSpec, raw.get("sweep"), f"{source}: sweep"),
        algorithms=_algorithms(raw["algorithms"], f"{source}: algorithms"),
        output_dir=str(raw.get("output_dir", f"runs/{raw['name']}")),
        source=source,
        raw=raw,
    )
    _check_values(exp, source)
    return exp


def _check_values(exp: Experiment, source: str) -> None:
    from lume_ray.metrics import direction
    from lume_ray.model import DTYPES

    sw, tr, ev = exp.sweep, exp.train, exp.eval
    choices = [
        ("sweep.search", sw.search, SEARCHES), ("sweep.sampler", sw.sampler, SAMPLERS),
        ("train.zero", tr.zero, (0, 2, 3)), ("train.precision", tr.precision, ("auto", "fp32", "bf16")),
        ("eval.dtype", ev.dtype, tuple(DTYPES)),
    ]
    for key, value, valid in choices:
        if value not in valid:
            raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(map(str, valid))}")
    positive = [("sweep.num_samples", sw.num_samples), ("sweep.eval_points", sw.eval_points),
                ("train.workers", tr.workers), ("train.batch_size", tr.batch_size),
                ("eval.max_new_tokens", ev.max_new_tokens), ("eval.batch_size", ev.batch_size),
                ("eval.workers", ev.workers)]
    for key, value in positive:
        if value < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, got {value}")
    if tr.batch_size % tr.workers:
        raise ConfigError(f"{source}: train.batch_size ({tr.batch_size}) must be a multiple of train.workers ({tr.workers})")
    for name in sw.objectives:
        try:
            direction(name)
        except ValueError as e:
            raise ConfigError(f"{source}: sweep.objectives: {e}") from None
    if not sw.objectives:
        raise ConfigError(f"{source}: sweep.objectives is empty")
    for algo in sw.algorithms or ():
        if algo not in exp.algorithms:
            raise ConfigError(f"{source}: sweep.algorithms: {algo!r} has no search space here (valid: {', '.join(exp.algorithms)})")
    if sw.search == "grid":
        for algo, space in exp.algorithms.items():
            for name, spec in space.items():
                try:
                    spec.grid_values()
                except ConfigError as e:
                    raise ConfigError(f"{source}: algorithms.{algo}.{name}: {e}") from None


def to_dict(exp: Experiment) -> dict[str, Any]:
    """The resolved experiment as plain data (for RUN_DIR/experiment.yaml)."""
    out = {k: v for k, v in exp.raw.items()}
    for section in ("data", "target", "train", "eval", "sweep"):
        value = dataclasses.asdict(getattr(exp, section))
        out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
    out["output_dir"] = exp.output_dir
    return out
