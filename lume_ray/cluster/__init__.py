"""Cluster: Ray Jobs submission, status and logs (:mod:`.jobs`); Ray token auth (:mod:`.auth`); the ZeRO memory
planner (:mod:`.plan`).

A local cluster for tests and benchmarks is not part of the package: see ``tests/local_cluster.py``.
"""

from __future__ import annotations


class ClusterError(ValueError):
    """A user-facing cluster problem (bad address, unreachable cluster, auth, unknown job, bad plan input)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


__all__ = ["ClusterError", "first_line"]
