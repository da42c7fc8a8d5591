"""[4] Floors: a results frame + floors + the base model's metrics -> which points are feasible.

Input:  the floors (study.json's ``utility_floor``, ``--floor`` pairs, or a mapping), results rows and
        base/metrics.json.
Output: :class:`Floors`, their description for the report, and a boolean per row.

A point is *feasible* when its status is "ok" and it passes every floor. The utility floor is
:class:`lume_ray.config.Floor` (relative to the base model's utility and/or absolute), decided by
``Floor.met``: the same call that wrote ``utility_floor_met`` into metrics.json, so the two never disagree.
``--floor metric=f`` for any other metric is relative: ``value >= f x base`` ("max"), ``<= f x base`` ("min").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.config import Floor
from lume_ray.evaluate.metrics import direction
from lume_ray.report.columns import finite, metric_columns, num


@dataclass(frozen=True)
class Floors:
    """The floors a point must pass: ``utility`` (a :class:`Floor`, relative and/or absolute; None: no utility
    floor) and relative floors on other metrics (``metric -> fraction of the base model's value``)."""

    utility: Floor | None = None
    relative: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, floors: Floors | Mapping[str, float | Floor]) -> Floors:
        """``{"utility": 0.75}`` or ``{"utility": Floor(...), "mia_score": 0.5}`` -> Floors."""
        if isinstance(floors, Floors):
            return floors
        relative: dict[str, float] = {}
        utility = None
        for name, value in floors.items():
            direction(name)  # unknown or record-only metric -> ValueError with the valid names
            if name == "utility":
                utility = value if isinstance(value, Floor) else Floor(relative=_fraction(name, value), absolute=None)
            elif isinstance(value, Floor):
                raise ValueError(f"floor {name}: only utility takes an absolute floor; give a fraction, e.g. {name}=0.5")
            else:
                relative[name] = _fraction(name, value)
        return cls(utility, relative)

    @classmethod
    def from_study(cls, study: Mapping[str, Any]) -> Floors:
        """study.json's ``utility_floor`` (``{"relative", "absolute"}``; a bare number is relative; absent: 0.75)."""
        raw = study.get("utility_floor", {"relative": 0.75})
        if raw is None:
            return cls()
        if isinstance(raw, Mapping):
            floor = Floor(relative=raw.get("relative"), absolute=raw.get("absolute"))
        else:
            floor = Floor(relative=float(raw), absolute=None)
        return cls(None if floor.relative is None and floor.absolute is None else floor)

    def describe(self, base_metrics: Mapping[str, Any]) -> list[str]:
        out = []
        u, base_utility = self.utility, finite(base_metrics.get("utility"))
        if u is not None:
            parts = [f"utility ≥ {u.absolute:g}"] if u.absolute is not None else []
            if u.relative is not None:
                parts.append(f"utility ≥ {u.relative:g} × base"
                             + (f" = {u.relative * base_utility:.3f}" if base_utility is not None else ""))
            out.append(" and ".join(parts) or "none")
        for name, f in self.relative.items():
            sign = "≥" if direction(name) == "max" else "≤"
            base = finite(base_metrics.get(name))
            out.append(f"{name} {sign} {f:g} × base" + (f" = {f * base:.3f}" if base is not None else ""))
        return out


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"floor {name}={value!r}: the fraction must be a finite number, e.g. utility=0.75")
    return float(value)


def parse_floors(pairs: Sequence[tuple[str, str]] | None) -> Floors | None:
    """``--floor`` pairs -> Floors; None stays None (the study's own floor).

    ``utility=0.75`` / ``utility.relative=0.75``: utility >= 0.75 x base; ``utility.absolute=0.371``: utility
    >= 0.371 (both may be given); ``metric=f`` for any other registered metric: relative to the base model.
    The floors given replace the study's.
    """
    if pairs is None:
        return None
    parts: dict[str, float | None] = {}
    relative: dict[str, float] = {}
    for key, text in pairs:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--floor {key}={text}: not a number (a fraction of the base value, "
                             "e.g. utility=0.75, or utility.absolute=0.371)") from None
        name, _, part = key.partition(".")
        direction(name)  # unknown metric -> ValueError with the valid names
        if name == "utility":
            if part not in ("", "relative", "absolute"):
                raise ValueError(f"--floor {key}: unknown part {part!r} (valid: utility, utility.relative, "
                                 "utility.absolute)")
            parts[part or "relative"] = value
        elif part:
            raise ValueError(f"--floor {key}: only utility has relative/absolute parts; use {name}=FRACTION")
        else:
            relative[name] = _fraction(name, value)
    try:
        utility = Floor(relative=parts.get("relative"), absolute=parts.get("absolute")) if parts else None
        if utility is not None and utility.relative is not None and not 0 < utility.relative <= 1:
            raise ValueError(f"utility={utility.relative:g}: a fraction of the base model's utility, in (0, 1] (for a "
                             "utility value, give utility.absolute)")
    except ValueError as e:
        raise ValueError(f"--floor: {e}") from None
    return Floors(utility, relative)


def feasibility(df: pd.DataFrame, floors: Floors | Mapping[str, float | Floor],
                base_metrics: Mapping[str, Any]) -> np.ndarray:
    """Per row: status "ok" (when the column exists) and every floor met. NaN values fail a floor.
    A floor on a metric that is not a column, or a relative floor without the base model's value -> ValueError."""
    floors = Floors.of(floors)
    ok = np.ones(len(df), dtype=bool)
    if "status" in df.columns:
        ok &= (df["status"].astype(str) == "ok").to_numpy()
    checks: list[tuple[str, Callable[[float | None, float | None], bool | None]]] = []
    if floors.utility is not None:
        checks.append(("utility", floors.utility.met))
    for name, f in floors.relative.items():
        checks.append((name, _relative_check(name, f)))
    for name, met in checks:
        if name not in df.columns:
            raise ValueError(f"floor metric {name!r} is not a column of the results "
                             f"(metric columns: {', '.join(metric_columns(df)) or 'none'})")
        base = finite(base_metrics.get(name))
        needs_base = name != "utility" or (floors.utility is not None and floors.utility.relative is not None)
        if needs_base and base is None:
            raise ValueError(f"floor on {name!r} needs the base model's {name!r} in base/metrics.json "
                             f"(found {base_metrics.get(name)!r})")
        col = num(df, name)
        ok &= np.array([met(None if math.isnan(v) else float(v), base) is True for v in col], dtype=bool)
    return ok


def _relative_check(name: str, fraction: float) -> Callable[[float | None, float | None], bool | None]:
    """A relative floor on any metric: a "max" metric is exactly a relative :class:`Floor`; a "min" one the
    mirror image (a ceiling), with the same tolerance."""
    if direction(name) == "max":
        return Floor(relative=fraction, absolute=None).met

    def ceiling(value: float | None, base: float | None) -> bool | None:
        if value is None or base is None or not math.isfinite(value):
            return None
        threshold = fraction * base
        return bool(value <= threshold + 1e-9 * max(1.0, abs(threshold)))

    return ceiling


def apply_floors(df: pd.DataFrame, floors: Floors | Mapping[str, float | Floor],
                 base_metrics: Mapping[str, Any]) -> pd.Series:
    """:func:`feasibility` as a boolean Series on ``df``'s index."""
    return pd.Series(feasibility(df, floors, base_metrics), index=df.index, dtype=bool)
