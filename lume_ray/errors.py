"""The error every stage raises for bad input: one line naming the file or flag, the key, the value and the
valid choices. The command line prints it as ``lume-ray: error: ...`` and exits 2.

Input:  nothing (a leaf module: every layer may raise it).
Output: :class:`ConfigError` (``lume_ray.config`` re-exports it).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value; one line naming the file or flag, the key, the value and the valid choices."""
