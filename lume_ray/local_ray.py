"""Local Ray: the one place that starts Ray on this machine when no cluster is connected.

Input:  nothing connected (``ray.is_initialized()`` false) and how many CPUs / how much object store to offer.
Output: a single-machine Ray whose every process (GCS, raylet, workers) listens on 127.0.0.1 only, with no
        dashboard and so no job server; :func:`ray_session` stops it again when the work that needed it
        ends. A connected Ray is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# Ray on Linux rewrites a loopback node address to the host's routable IP and then listens on all
# interfaces (RAY_NOTES 5). Its single-machine mode, the default on Windows and macOS, keeps every
# process on 127.0.0.1; this variable turns that mode on (measured with `ss -ltnp`: tests/test_local_ray.py).
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_local(*, num_cpus: int | None = None, object_store_mb: int | None = None, log_to_driver: bool = False,
                configure_logging: bool = True) -> None:
    """Start a local Ray on 127.0.0.1 only, no dashboard or job server, ``num_cpus`` logical CPUs (default:
    what Ray detects, container limits included)."""
    import ray
    from ray._private import ray_constants  # private: the flag is read once, when Ray is imported

    # Ray's processes read the flag from the environment they inherit; this process already imported it.
    # Both are restored once Ray is up, so that a later `ray start --address` (a multi-node cluster
    # started from this process) is not refused as "multi-node on a single-machine platform".
    saved_env, saved_flag = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=log_to_driver, configure_logging=configure_logging,
                 object_store_memory=None if object_store_mb is None else object_store_mb * 2**20)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


@contextmanager
def ray_session(*, address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None,
                log_to_driver: bool = False, configure_logging: bool = True) -> Iterator[bool]:
    """Use the connected Ray; else connect to ``address`` (or ``RAY_ADDRESS``, set inside a Ray job); else start
    a local one for the ``with`` block. Yields True if it started or connected one (and so stops it after)."""
    import ray

    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=configure_logging)
    else:
        start_local(num_cpus=num_cpus, object_store_mb=object_store_mb, log_to_driver=log_to_driver,
                    configure_logging=configure_logging)
    try:
        yield True
    finally:
        ray.shutdown()
