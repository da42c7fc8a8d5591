"""Config: the one typed model of lume-ray. An experiment YAML (+ ``--set`` overrides), or a command's flags,
-> frozen, validated pydantic models that every stage takes as they are.

Input:  ``experiments/<name>.yaml`` (every key, with comments, in experiments/quickstart.yaml) and
        ``key.path=value`` overrides (values parsed as YAML: ``sweep.algorithms=[ga,npo]``); or the flags of
        ``lume-ray unlearn`` / ``lume-ray eval``, which :mod:`lume_ray.cli` generates from these models.
Output: :class:`Experiment` (a study), :class:`UnlearnJob` (one unlearning job), :class:`EvalConfig` (how to
        evaluate). Everything is checked here, once: unknown keys at any depth, types, ranges, choices,
        combinations (``offload`` needs ZeRO-3), algorithm names and parameter values, metric names,
        sampler names. A failure is :class:`ConfigError`, one line naming the file, the key, the value and the
        valid choices; nothing that passed can fail later as a config error.

A search space is per algorithm: ``lr`` and ``steps`` (trainer parameters) plus the algorithm's own
parameters (declared by each algorithm in :mod:`lume_ray.algorithms`). A parameter is a distribution
``{loguniform: [lo, hi]}``, ``{uniform: [lo, hi]}``, ``{int: [lo, hi]}``, ``{choice: [a, b, ...]}`` or a plain
value (fixed); ``grid: [...]`` beside a range gives the values the grid sampler uses. ``steps`` is a
trajectory, not a sampled parameter: ``{max: N}`` (evaluated at ``sweep.eval_points`` evenly spaced steps,
or at ``sweep.eval_steps``), or a list of steps (trained to the largest, evaluated at each).

    base.py        ConfigError, located errors, Section (the base of every model)
    floor.py       Floor: the utility floor that decides feasibility
    sections.py    the stages' settings: data, target, train, eval
    job.py         UnlearnJob: one unlearning job
    space.py       ParamSpec, StepsSpec, AlgorithmSpace: the search spaces
    experiment.py  EarlyStopConfig, SweepConfig, TrackingConfig, Experiment: the study
    load.py        YAML + overrides -> a model; one-line errors
    reader.py      a user's YAML file or text -> data (a key given twice, a bad byte: errors with file and line)
"""

from lume_ray.config.base import ParamValue, Section, located
from lume_ray.config.experiment import (
    MAX_RUNGS,
    EarlyStopConfig,
    Experiment,
    MlflowConfig,
    SweepConfig,
    TrackingConfig,
)
from lume_ray.config.job import UnlearnJob
from lume_ray.config.load import apply_overrides, experiment_from_dict, load_experiment, one_line, validate
from lume_ray.config.reader import StrictLoader, parse_yaml, read_yaml
from lume_ray.config.sections import (
    BuildConfig,
    DataConfig,
    EvalConfig,
    LoraConfig,
    SynthConfig,
    TargetConfig,
    TrainConfig,
)
from lume_ray.config.space import DISTRIBUTIONS, TRAINER_PARAMS, AlgorithmSpace, ParamSpec, StepsSpec
from lume_ray.errors import ConfigError
from lume_ray.evaluate.protocol import Floor

__all__ = [
    "DISTRIBUTIONS", "MAX_RUNGS", "TRAINER_PARAMS", "AlgorithmSpace", "BuildConfig", "ConfigError", "DataConfig",
    "EarlyStopConfig", "EvalConfig", "Experiment", "Floor", "LoraConfig", "MlflowConfig", "ParamSpec", "ParamValue",
    "Section", "StepsSpec", "StrictLoader", "SweepConfig", "SynthConfig", "TargetConfig", "TrackingConfig",
    "TrainConfig", "UnlearnJob", "apply_overrides", "experiment_from_dict", "load_experiment", "located", "one_line",
    "parse_yaml", "read_yaml", "validate",
]
