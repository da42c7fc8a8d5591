"""[3 unlearn] Algorithms: (model, forget batch, retain batch, frozen reference, params) -> (loss, logs).

An algorithm is one function in :mod:`lume_ray.algorithms.losses`, registered by name with
``@register_algorithm`` (:mod:`lume_ray.algorithms.registry`), with an optional ``check`` of its parameters
against the model; nothing else lists it.
"""

from lume_ray.algorithms import losses as losses  # noqa: F401  (registers every algorithm)
from lume_ray.algorithms.losses import mean_nll
from lume_ray.algorithms.registry import (
    ALGORITHMS,
    Algorithm,
    AlgorithmError,
    Batch,
    CheckFn,
    LossFn,
    ParamValue,
    algorithm_params,
    get_algorithm,
    register_algorithm,
    validate_params,
)

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmError", "Batch", "CheckFn", "LossFn", "ParamValue", "algorithm_params",
           "get_algorithm", "mean_nll", "register_algorithm", "validate_params"]
