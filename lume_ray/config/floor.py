"""The utility floor: (utility, the base model's utility) -> whether a point is feasible.

Input:  a point's utility and the utility of the model before unlearning (the reference).
Output: :meth:`Floor.met` (True, False, or None when it cannot be told); ``EvalConfig.utility_floor`` holds one,
        metrics.json's ``utility_floor_met`` and the report both decide by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Floor:
    """The utility floor a point must pass to be feasible (the challenge's award rule), one of or both:
    ``relative`` r: utility >= r x the utility of the model before unlearning (default 0.75);
    ``absolute`` a: utility >= a (the 7B leaderboard excluded MMLU < 0.371, 75% of the target's 0.495).
    The one definition of feasibility: metrics.json's ``utility_floor_met`` and the report both call :meth:`met`."""

    relative: float | None = 0.75
    absolute: float | None = None

    def __post_init__(self) -> None:
        for name in ("relative", "absolute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name}={value!r}: must be a number >= 0 (or null)")
        if self.relative is not None and not 0 < self.relative <= 1:
            raise ValueError(f"relative={self.relative!r}: a fraction of the base model's utility, in (0, 1] "
                             "(for a utility value, give absolute)")

    def threshold(self, reference: float | None) -> float | None:
        """The utility a point needs; None when the floor is relative and no reference is known."""
        parts = []
        if self.absolute is not None:
            parts.append(float(self.absolute))
        if self.relative is not None:
            if reference is None or not math.isfinite(reference):
                return None
            parts.append(float(self.relative) * float(reference))
        return max(parts) if parts else 0.0

    def met(self, utility: float | None, reference: float | None) -> bool | None:
        """Whether ``utility`` passes; None when it cannot be told (no utility, or no reference for a relative
        floor). Within a relative 1e-9: 0.75 * 0.4 is 0.30000000000000004, and a point exactly on the floor
        passes it."""
        threshold = self.threshold(reference)
        if utility is None or threshold is None or not math.isfinite(utility):
            return None
        return bool(utility >= threshold - 1e-9 * max(1.0, abs(threshold)))

    def describe(self) -> str:
        parts = ([f"utility >= {self.absolute:g}"] if self.absolute is not None else []) + (
            [f"utility >= {self.relative:g} x base"] if self.relative is not None else [])
        return " and ".join(parts) or "none"
