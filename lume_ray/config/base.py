"""Config base: what every config section shares. A key path + a message -> a located validation error;
a section -> a frozen pydantic model that refuses unknown keys.

Input:  raw values being validated (by the sections in this package).
Output: :class:`ConfigError` (the one-line error every config failure ends as), :func:`located` (an error at a
        key, which pydantic prefixes with the enclosing path), :class:`Section` (the base of every model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


def located(loc: Sequence[str | int], message: str, value: Any = None) -> ValidationError:
    """A validation error at ``loc`` (relative to the model being validated). Raised inside a validator, pydantic
    prefixes the enclosing field's path, so the one-line error names the full key (``train.offload``,
    ``algorithms.npo.beta``) rather than the section or "(top level)"."""
    return ValidationError.from_exception_data("config", [
        {"type": "value_error", "loc": tuple(loc), "input": value, "ctx": {"error": ValueError(message)}}])


class Section(BaseModel):
    """Every config section: unknown keys are errors, values are frozen once validated, and no number is infinite or
    NaN (``cpus_per_worker: .inf`` is an error, not a job that waits forever)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


ParamValue = float | int | str
