"""Local Ray: the one place that starts Ray on this machine when no cluster is connected.

Input:  nothing connected (``ray.is_initialized()`` false) and how many CPUs / how much object store to offer.
Output: a Ray bound to the loopback (node address 127.0.0.1) with no dashboard and so no job server;
        :func:`ray_session` stops it again when the work that needed it ends. A connected Ray is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def start_local(*, num_cpus: int | None = None, object_store_mb: int | None = None, log_to_driver: bool = False,
                configure_logging: bool = True) -> None:
    """Start a local Ray: 127.0.0.1 only, no dashboard or job server, ``num_cpus`` logical CPUs (default:
    what Ray detects, container limits included)."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=log_to_driver,
             configure_logging=configure_logging,
             object_store_memory=None if object_store_mb is None else object_store_mb * 2**20)


@contextmanager
def ray_session(*, num_cpus: int | None = None, object_store_mb: int | None = None,
                log_to_driver: bool = False, configure_logging: bool = True) -> Iterator[bool]:
    """Use the connected Ray, or start a local one for the ``with`` block. Yields True if it started one."""
    import ray

    if ray.is_initialized():
        yield False
        return
    start_local(num_cpus=num_cpus, object_store_mb=object_store_mb, log_to_driver=log_to_driver,
                configure_logging=configure_logging)
    try:
        yield True
    finally:
        ray.shutdown()
