"""Local mode: every port Ray's processes listen on is on the loopback, and no dashboard / job server runs."""

from __future__ import annotations

import os
from typing import Any

import psutil
import pytest

from lume_ray.local_ray import SINGLE_MACHINE_ENV


def _ray_processes(session_dir: str) -> list[psutil.Process]:
    """This test process, its descendants (GCS, raylet, workers) and any daemon naming the session dir."""
    me = psutil.Process()
    procs = {p.pid: p for p in [me, *me.children(recursive=True)]}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if session_dir in " ".join(p.info["cmdline"] or []):
                procs[p.pid] = p
                procs.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.Error:
            continue
    return list(procs.values())


@pytest.mark.ray
def test_local_ray_listens_on_loopback_only(ray_local: Any) -> None:
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

    probe = Probe.remote()  # type: ignore[attr-defined]
    worker_pid = ray.get(probe.pid.remote())
    try:
        node = ray._private.worker.global_worker.node
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        assert node.address_info["webui_url"] in ("", None)  # no dashboard, hence no job server
        procs = _ray_processes(node.address_info["session_dir"])
        names = {p.name() for p in procs}
        assert {"gcs_server", "raylet"} <= names and worker_pid in {p.pid for p in procs}
        listening = []
        for p in procs:
            try:
                conns = p.net_connections(kind="inet")
            except psutil.Error:
                continue
            listening += [(p.name(), c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
        owners = {name for name, _, _ in listening}
        assert {"gcs_server", "raylet"} <= owners, listening
        exposed = [x for x in listening if x[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert not exposed, f"listening beyond the loopback: {exposed}"
    finally:
        ray.kill(probe)
    # The single-machine switch is not left behind for later `ray start --address` calls from this process.
    from ray._private import ray_constants

    assert SINGLE_MACHINE_ENV not in os.environ and ray_constants.ENABLE_RAY_CLUSTER
