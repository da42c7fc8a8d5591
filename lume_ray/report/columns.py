"""[4] Columns and cells: a results frame -> numeric columns and column groups; a value -> a number or cell text.

Input:  a results frame (one row per trial and evaluated step: metric columns, ``hp/<name>`` columns) or one
        value of it.
Output: floats (NaN for missing / non-numeric values), the names of metric and hyperparameter columns, and the
        text of a table cell or a hyperparameter setting, as every table of the report shows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lume_ray.evaluate.metrics import METRICS


def num(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats (NaN for missing / non-numeric values)."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def has_values(df: pd.DataFrame, col: str) -> bool:
    """The column exists and holds a finite number (utility is None throughout without a utility set)."""
    return col in df.columns and bool(np.isfinite(num(df, col)).any())


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in METRICS]


def hp_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("hp/")]


def finite(value: Any) -> float | None:
    """A number as a float when it is finite; NaN, infinities, booleans and non-numbers -> None."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def is_missing(v: Any) -> bool:
    """None or NaN (e.g. a hyperparameter of another algorithm)."""
    return v is None or (np.isscalar(v) and bool(pd.isna(v)))


def hp_text(row: pd.Series | Mapping[str, Any], hp_cols: Sequence[str]) -> str:
    """"lr=0.0001, alpha=2" for the hyperparameters a row has."""
    parts = [f"{c.removeprefix('hp/')}={fmt(row.get(c), hp=True)}" for c in hp_cols if not is_missing(row.get(c))]
    return ", ".join(parts)


def fmt(v: Any, hp: bool = False) -> str:
    """A table cell: 3 decimals for scores, 3 significant digits for hyperparameters and tiny values."""
    if v is None or v is pd.NA:
        return "—"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "—"
        if hp or (f != 0 and abs(f) < 1e-3) or abs(f) >= 1e5:
            return f"{f:.3g}"
        return f"{f:.3f}"
    return str(v)


def label(metric: str) -> str:
    return metric.replace("_", " ")
